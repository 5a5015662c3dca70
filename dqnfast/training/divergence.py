"""The divergence guard every learner's loop uses (DQN's ``loop``, REINFORCE's ``reinforce``).

Two checks, neither of which adds a host sync per update: a metric row whose mean loss is
not finite, or whose mean Q-value (DQN) or value (REINFORCE with a value head) is not
finite or beyond ``Q_LIMIT``, stops the run after the row is written (``check_row``); and
before a checkpoint is written, the network's weights must be finite and its outputs on
the last batch (Q-values, or a policy's logits) within ``Q_LIMIT`` (``check_network``), so
a checkpoint is never written over the last good one with a blown-up network. Both raise
``TrainingDiverged`` with one line: where, what, which checkpoint is kept, what to change.

``run`` below is either learner's run: it has ``cfg``, ``run_dir``, ``device`` and a
``learner`` with ``online`` (the network) and ``num_updates``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from dqnfast.checkpoint import CHECKPOINT_NAME, newest_steps
from dqnfast.config.schema import LearnerName

__all__ = ["Q_LIMIT", "TrainingDiverged", "check_network", "check_row", "diverged", "newest_checkpoint"]

# |Q| beyond which a run has diverged. A Q-value is a discounted return: Atari training rewards
# are clipped to [-1, 1] (|Q| <= 1 / (1 - gamma) = 100 at gamma 0.99), classic control gives
# |r| <= 1 per step, and even unclipped Atari games score below 1e7 in a whole game. A run whose
# optimizer blew up (optim.lr=1e10) sits at |Q| ~ 1e35, finite but meaningless. A policy's
# logits are bounded the same way: a logit gap of 100 already gives an action a probability
# below e^-100, so logits near 1e10 mean the weights blew up (optim.lr=1e30 gives ~1e32).
Q_LIMIT = 1e10


class TrainingDiverged(RuntimeError):
    """The loss, the Q-values (logits) or the weights are not finite, or passed ``Q_LIMIT``; the message is one line."""


def newest_checkpoint(run_dir: Any) -> str:
    """Words for the checkpoint a resume would start from now (``checkpoint.pt``), with its step."""
    latest = run_dir / CHECKPOINT_NAME
    if not latest.is_file():
        return "no checkpoint of this run has been written yet"
    steps = newest_steps(run_dir)
    return f"{latest}{f' ({steps} agent steps)' if steps is not None else ''} is kept and stays the newest"


def diverged(run: Any, env_steps: int, what: str) -> TrainingDiverged:
    """The one-line error of a run that diverged at ``env_steps``: ``what`` went wrong, and what to change."""
    cfg = run.cfg
    fixes = f"lower optim.lr (now {cfg.optim.lr:g})"
    if cfg.learner == LearnerName.dqn:  # REINFORCE neither clips rewards (classic control) nor gradients
        fixes += ", check the rewards (envs.train.reward_clip) or keep algo.max_grad_norm on"
    return TrainingDiverged(
        f"training diverged at agent step {env_steps} ({run.learner.num_updates} updates): {what}; "
        f"{newest_checkpoint(run.run_dir)}; {fixes}"
    )


def check_row(run: Any, env_steps: int, row: dict, n: int, since: int, *, value: str | None = "Q-value") -> None:
    """Raises TrainingDiverged when a metric row of ``n`` updates (since agent step ``since``) diverged.

    value: the name of the row's ``q_mean`` (``Q-value``, ``value``), or None when the
    learner has none (the column is nan by design).
    """
    if not n:
        return
    loss, q = row["loss"], row["q_mean"]
    if math.isfinite(loss) and (value is None or abs(q) <= Q_LIMIT):
        return
    what = f"the mean loss of the {n} updates since agent step {since} is {loss:g}"
    if value is not None:
        what += f" and their mean {value} {q:g}"
    raise diverged(run, env_steps, f"{what} (diverged: not finite, or beyond {Q_LIMIT:g})")


def check_network(run: Any, env_steps: int, obs: Any, *, outputs: str = "Q-values") -> None:
    """Raises TrainingDiverged for non-finite weights, or outputs on ``obs`` (the last batch's
    observations, or None) that are not finite or beyond ``Q_LIMIT``. Host syncs: here only,
    at checkpoint time."""
    net = run.learner.online
    params = [p.detach() for p in net.parameters()]
    if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
        raise diverged(run, env_steps, "the network's weights are not finite")
    if obs is None:
        return
    with torch.no_grad():
        top = float(net(torch.as_tensor(obs).to(run.device)).float().abs().max())
    if not top <= Q_LIMIT:  # NaN too
        raise diverged(run, env_steps, f"the network's {outputs} on its last batch reach {top:g}, beyond {Q_LIMIT:g}")
