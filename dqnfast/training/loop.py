"""DQN's loop body: recv -> store -> act -> send -> learn, one ``step`` at a time.

Per step (envpool sync or async, every per-env stream keyed by ``info["env_id"]``):

    recv  -> ring.add(newest frames, actions sent, rewards, flags, first)
          -> epsilon-greedy over all received envs (one forward pass)
    send  -> envpool steps in its threads while we
    learn -> replay_ratio * K / batch_size updates (fractional accumulator)

The run lifecycle (``dqnfast.training.run``) drives it: the metric rows and checkpoints due
after each step, the end of the training. Two things only a resumed DQN run does have a name
here: ``refill`` (a ring not saved with the checkpoint is refilled first, by the agent's own
policy, without counting steps) and ``finish_interrupted_burst`` (an update burst a signal
stopped is finished before the first ``recv``).

Units: ``env_steps`` are agent steps summed over envs; frames = env_steps * frame_skip.

Guards, none of which adds a host sync per update: the update burst checks the stop flag
between updates (a SIGTERM during ``replay_ratio=1e9`` stops within one update; the resumed
run finishes that burst first, so it continues exactly); ``dqnfast.training.divergence``'s
guard stops a run whose metric row, Q-values or weights diverged (``TrainingDiverged``)
and never writes a checkpoint over the last one with a blown-up network; so does a
prioritized run whose reported |TD errors| are not finite (read from the host copy the
priority update makes anyway); a full disk stops the run in one line (``DiskFullError``),
the previous checkpoint still the newest.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dqnfast.atomic import DiskFullError
from dqnfast.envs import frames_of, observation_of, raw_reward_of
from dqnfast.replay import NonFinitePriority
from dqnfast.training.components import Run
from dqnfast.training.divergence import Q_LIMIT, TrainingDiverged, check_network, diverged, newest_checkpoint
from dqnfast.training.run import envs_restored, marks
from dqnfast.training.state import LoopState, payload

__all__ = ["Q_LIMIT", "TrainingDiverged", "finish_interrupted_burst", "start_envs", "step", "write_checkpoint"]

log = logging.getLogger("dqnfast.train")


def start_envs(run: Run, stop: Any) -> None:
    """Resets the envs; on an exact resume, fast-forwards them by replaying every recorded action."""
    run.env.async_reset()

    def replay() -> str:
        rows = run.plan.ck["envs"]["actions"].numpy()
        run.actions_log.replay(run.env, rows, stop)
        return f"{len(rows)} recorded steps of {run.spec.num_envs} envs"

    envs_restored(
        run.plan, replay, missing="usable action log", dropped="games in progress at the checkpoint are dropped"
    )


def _nbytes(obj: Any) -> int:
    """Bytes of the tensors and arrays in a checkpoint payload (what its file will need, give or take)."""
    if hasattr(obj, "element_size") and hasattr(obj, "nelement"):
        return obj.element_size() * obj.nelement()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj) + 8 * len(obj)
    return 16


def write_checkpoint(run: Run, st: LoopState) -> Path:
    """Saves the ring, then the checkpoint (numbered + checkpoint.pt), keeps the newest K.

    The ring is saved with ``replay.save``, and without it while it is filling (the warm-up or
    a resume's refill: ``LoopState.filling``), when it is all of the progress since the run
    started or resumed and costs only the steps it holds (at most ``algo.learning_starts``).
    Only the ring file that checkpoint.pt refers to is kept. Raises TrainingDiverged
    (nothing written) for a diverged network, DiskFullError (one line; what was half
    written is removed, the previous checkpoint stays the newest) for a full disk.
    """
    from dqnfast.checkpoint import save_run_checkpoint  # looked up at each call: tests replace it on its module

    check_network(run, st.env_steps, run.last_batch.obs if run.last_batch is not None else None)
    filling = not run.cfg.replay.save and st.filling(run.cfg.algo.learning_starts)
    ring_file, body = None, None
    try:
        if run.cfg.replay.save or filling:
            ring_file = run.ring.save(run.run_dir / f"replay_{st.env_steps:012d}.npz")
        body = payload(run, st, replay_file=ring_file.name if ring_file else None, filling=filling)
        path = save_run_checkpoint(run.run_dir, body, env_steps=st.env_steps, keep=run.cfg.logger.keep_checkpoints)
    except DiskFullError as e:
        if ring_file is not None and ring_file != run.replay_file:
            ring_file.unlink(missing_ok=True)  # the previous checkpoint refers to the previous ring file
        need = (_nbytes(body) if body is not None else 0) + (run.ring.nbytes if run.cfg.replay.save or filling else 0)
        raise DiskFullError(
            e.errno,
            f"disk full: writing {e.filename} failed with {e.free / 1e6:.1f} MB free on its disk; this "
            f"checkpoint needs about {need / 1e6:.1f} MB; {newest_checkpoint(run.run_dir)}; free some space, then "
            f"continue with: python -m dqnfast.train resume={run.run_dir}",
            e.filename,
            e.free,
        ) from None
    for old in run.run_dir.glob("replay_*.npz"):
        if ring_file is None or old.name != ring_file.name:
            old.unlink(missing_ok=True)
    run.replay_file = ring_file
    return path


def learn(run: Run, st: LoopState, stop: Any) -> bool:
    """The updates owed (``update_budget``); False when a signal stopped the burst, the rest still owed.

    The stop flag is read between updates (a Python attribute: no sync), so a SIGTERM during
    a burst of ``replay_ratio=1e9`` is acted on after the current update.
    """
    while st.update_budget >= 1.0:
        if stop.signum:
            return False
        st.update_budget -= 1.0
        batch = run.batches.next(st.env_steps)
        metrics = run.learner.update(batch)
        try:
            run.batches.report(metrics["td_abs"])  # prioritized replay: the new priorities, one update late
        except NonFinitePriority as e:  # the host copy of an earlier update's |TD errors|: no extra sync
            raise diverged(
                run, st.env_steps, f"an update's |TD errors| (its new priorities) are not finite ({e})"
            ) from None
        st.add_metrics(metrics)
        run.last_batch = batch
    return True


def finish_interrupted_burst(learning: Any, run: Run, st: LoopState, loggers: Any, stop: Any) -> None:
    """Pays what a checkpoint written inside an update burst owes, before the first ``recv``.

    A finished burst leaves less than one update owed, so ``update_budget >= 1`` means a
    signal stopped the burst: the rest of it, then the metric row and checkpoint due at that
    step (``run.marks``, with ``learning``: the DQN's), come first, and the run goes on
    exactly as if it had not been stopped. (Not after a refill: the ring is empty, and the
    next burst pays the debt.)
    """
    ck = run.plan.ck
    if not ck or st.update_budget < 1.0 or st.refill_left > 0:
        return
    loop = ck.get("loop") or {}
    due = loop.get("next_log")
    if due is not None and int(due) <= st.env_steps:  # the row the stopped iteration did not write
        st.next_log = int(due)
    due = loop.get("next_ckpt")
    every = run.cfg.logger.checkpoint_every
    if due is not None and int(due) <= st.env_steps and every and every == int(loop.get("checkpoint_every", 0)):
        st.next_ckpt = int(due)  # the periodic checkpoint due at this step: written again, after the burst
    log.info("resume: finishing the update burst the stop interrupted (%d updates)", int(st.update_budget))
    if learn(run, st, stop):
        marks(learning, run, st, loggers)


def refill(run: Run, st: LoopState, loggers: Any, k: int) -> None:
    """Counts ``k`` agent steps of a resume's refill (the ring was not saved with the checkpoint):
    they fill the ring, and count in no counter, score or update."""
    st.refill_left -= k
    st.refill_steps += k
    loggers.console.refill(st.refill_total - max(st.refill_left, 0), st.refill_total)
    if st.refill_left <= 0:
        log.info(
            "replay: refilled with %d agent steps at eps %.4g; %s",
            st.refill_total,
            st.epsilon,
            "learning resumes" if st.env_steps >= run.cfg.algo.learning_starts else "the warm-up goes on",
        )


def step(run: Run, st: LoopState, loggers: Any, stop: Any) -> bool:
    """One recv -> store -> act -> send -> learn; False when a signal stopped the update burst (the rest
    of it, this step's row and checkpoint are owed to the resume: ``finish_interrupted_burst``)."""
    env, ring, spec, a = run.env, run.ring, run.spec, run.cfg.algo
    obs, reward, terminated, truncated, info = env.recv()
    env_id, elapsed = info["env_id"], info["elapsed_step"]
    k = len(env_id)
    refilling = st.refill_left > 0

    # store: the newest frame of each result, with the action that produced it
    ring.add(
        env_id, frames_of(obs, info, spec.obs_kind), st.last_action[env_id], reward, terminated, truncated, elapsed == 0
    )
    for _, score, length in st.tracker.update(env_id, raw_reward_of(reward, info), elapsed):
        if not refilling:  # games of the refill after a resume are not the agent's
            st.game_ended(score, length)

    # act: a refill plays the agent's own epsilon-greedy policy at the resumed epsilon (env_steps
    # stands still during it), so the ring holds the data learning would have seen, not random play
    st.epsilon = run.schedule(st.env_steps)
    actions = run.actor.act(observation_of(obs, info, spec.obs_kind), st.epsilon)
    env.send(actions, env_id)  # envpool steps in its threads while we learn
    st.last_action[env_id] = actions
    if run.actions_log is not None:
        run.actions_log.append(st.last_action)
    if refilling:
        refill(run, st, loggers, k)
        return True
    st.env_steps += k
    loggers.progress(k)

    # learn
    if st.env_steps >= a.learning_starts and (st.can_sample or ring.num_valid() > 0):
        st.can_sample = True
        st.update_budget += k * a.replay_ratio / a.batch_size
    return learn(run, st, stop)
