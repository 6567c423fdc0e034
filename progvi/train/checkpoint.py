"""Checkpoints of a `fit` run through orbax-checkpoint: the whole training state, by step.

A checkpoint holds the `TrainState` (params, optimizer state, estimator states, step), the data
order of the current epoch, the key of the run and the history so far, so that resuming from it
continues the run exactly where it stopped. The train state is stored as its list of leaves and
rebuilt on the structure of a freshly initialised state: any pytree of arrays (NamedTuples of
optax states included) round-trips.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np


def _orbax():
    try:
        import orbax.checkpoint as ocp
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "checkpoints need orbax-checkpoint: pip install \"progvi[checkpoint]\""
        ) from error
    return ocp


class Checkpoints:
    """The checkpoints of one run in `directory`, the newest few kept."""

    def __init__(self, directory, max_to_keep: int = 3):
        ocp = _orbax()
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state, order, key_data, history, metrics) -> None:
        leaves = jax.tree.leaves(state)
        payload: dict[str, Any] = {
            "leaves": {f"{i:05d}": leaf for i, leaf in enumerate(leaves)},
            "key": np.asarray(key_data),
            "step": np.asarray(step, np.int64),
        }
        if order is not None:
            payload["order"] = order
        if len(history):  # orbax stores no empty arrays
            payload["history"] = np.asarray(history)
            payload["metrics"] = {name: np.asarray(v) for name, v in metrics.items()}
        ocp = _orbax()
        self.manager.save(step, args=ocp.args.StandardSave(payload), force=True)
        self.manager.wait_until_finished()

    def close(self):
        self.manager.close()


def latest_step(directory) -> int | None:
    """The step of the newest checkpoint that `fit` saved in `directory`, or None if none.

    Resuming from a checkpoint runs `num_steps` more steps from there: to finish a run of `N`
    steps, pass ``num_steps=N - latest_step(directory)``.
    """
    ocp = _orbax()
    directory = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(directory):
        return None
    return ocp.CheckpointManager(directory).latest_step()


def restore(directory, template_state) -> dict[str, Any]:
    """The newest checkpoint in `directory`, its train state rebuilt on `template_state`."""
    ocp = _orbax()
    directory = os.path.abspath(os.fspath(directory))
    step = latest_step(directory)
    if step is None:
        raise FileNotFoundError(
            f"fit(resume={directory!r}): there is no checkpoint in that directory. Pass the "
            "checkpoint_dir of an earlier fit, or a FitResult."
        )
    payload = ocp.CheckpointManager(directory).restore(step, args=ocp.args.StandardRestore())
    leaves = [payload["leaves"][k] for k in sorted(payload["leaves"])]
    treedef = jax.tree.structure(template_state)
    if treedef.num_leaves != len(leaves):
        raise ValueError(
            f"fit(resume={directory!r}): the checkpoint holds {len(leaves)} arrays of training "
            f"state, but this fit's state has {treedef.num_leaves}: the params, optimizer or "
            "program differ from the run that wrote it."
        )
    template = jax.tree.leaves(template_state)
    for i, (saved, fresh) in enumerate(zip(leaves, template, strict=True)):
        if np.shape(saved) != np.shape(fresh):
            raise ValueError(
                f"fit(resume={directory!r}): array {i} of the training state has shape "
                f"{np.shape(saved)} in the checkpoint but {np.shape(fresh)} here: the params, "
                "optimizer or program differ from the run that wrote it."
            )
    leaves = [jax.numpy.asarray(saved, np.asarray(fresh).dtype)
              for saved, fresh in zip(leaves, template, strict=True)]
    return {
        "state": jax.tree.unflatten(treedef, leaves),
        "order": payload.get("order"),
        "key": np.asarray(payload["key"]),
        "step": int(payload["step"]),
        "history": np.asarray(payload.get("history", np.zeros((0,), np.float32))),
        "metrics": {k: np.asarray(v) for k, v in payload.get("metrics", {}).items()},
    }


__all__ = ["Checkpoints", "latest_step", "restore"]
