"""Each example run without the examples' extra stops at once with the command that installs it."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ["quickstart", "cone", "discrete", "vae", "gaussian_mean", "density2d", "ebm_digits",
            "rejuvenation"]

# In a fresh interpreter: the extras cannot be imported (None in sys.modules makes `import`
# fail), and pv.fit fails loudly, so an example that checks its extras only after it has started
# training fails here instead of passing slowly.
SCRIPT = r"""
import importlib.util, json, sys
for name in ("matplotlib", "sklearn", "blackjax", "tensorflow_probability"):
    sys.modules[name] = None
import progvi
def fit(*args, **kwargs):
    raise RuntimeError("pv.fit ran before the example checked its extras")
progvi.fit = progvi.train.fit = fit
messages = {}
for example in sys.argv[2:]:
    spec = importlib.util.spec_from_file_location(example, f"examples/{example}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        argv = {"quickstart": ["--out", sys.argv[1]], "rejuvenation": ["--smoke"]}.get(
            example, ["--smoke", "--no-progress", "--out", sys.argv[1]])
        module.main(argv)
        messages[example] = "ran to the end"
    except (SystemExit, ImportError, RuntimeError) as error:
        messages[example] = f"{type(error).__name__}: {error}"
print(json.dumps(messages))
"""


def test_examples_name_their_extra(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), *EXAMPLES], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    messages = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(messages) == set(EXAMPLES)
    wrong = {name: message for name, message in messages.items()
             if 'pip install "progvi[examples]"' not in message}
    assert not wrong, wrong
