"""The importance weight of one particle, shared by the objectives."""

from __future__ import annotations

import jax

from ...gen import density, merge, simulate


def log_weight(model, guide, obs, model_args, guide_args):
    """``log p(obs, z) - log q(z)`` at one draw ``z ~ q``, and the guide's trace.

    The guide's density is the trace's score: exact for an ordinary family, and for a family
    built by inference (a marginal) the estimate that belongs to this very draw.
    """
    tr = simulate(guide, *guide_args)
    log_p, _ = density(model, merge(tr.choices, obs), *model_args)
    return log_p - tr.score, tr


def frozen(args):
    """The arguments with gradients stopped: the density they define is a constant of the fit."""
    return jax.lax.stop_gradient(args)
