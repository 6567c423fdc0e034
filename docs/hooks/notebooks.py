"""mkdocs hook: the Jupyter settings under which mkdocs-jupyter executes the tutorials.

mkdocs-jupyter runs docs/tutorials/*.py through nbconvert, which reads Jupyter's configuration
files. This hook puts docs/hooks/jupyter/ first on Jupyter's configuration path; its
``jupyter_nbconvert_config.json`` asks the kernel manager for CurveZMQ transport encryption
(ipykernel's kernelspec declares support for it). Without it, every kernel start prints
ipykernel's warning that it runs over TCP in plain text into the build's log, which must show
no warning.
"""

from __future__ import annotations

import os
import pathlib

CONFIG = pathlib.Path(__file__).resolve().parent / "jupyter"


def on_config(config, **kwargs):
    given = os.environ.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep)
    paths = [str(CONFIG), *filter(None, given)]
    os.environ["JUPYTER_CONFIG_PATH"] = os.pathsep.join(dict.fromkeys(paths))
    return config
