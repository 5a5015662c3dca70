"""The training loop: recv -> store -> act -> send -> learn -> log, on one screen.

Per iteration (envpool sync or async, every per-env stream keyed by ``info["env_id"]``):

    recv  -> ring.add(newest frames, actions sent, rewards, flags, first)
          -> epsilon-greedy over all received envs (one forward pass)
    send  -> envpool steps in its threads while we
    learn -> replay_ratio * K / batch_size updates (fractional accumulator)

Units: ``env_steps`` are agent steps summed over envs; frames = env_steps * frame_skip.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from dqnfast.envs import frames_of, observation_of, raw_reward_of
from dqnfast.training.components import Run
from dqnfast.training.state import LoopState, next_mark, payload

__all__ = ["run_loop", "start_envs", "write_checkpoint"]

log = logging.getLogger("dqnfast.train")


def start_envs(run: Run, stop: Any) -> None:
    """Resets the envs; on an exact resume, fast-forwards them by replaying every recorded action."""
    run.env.async_reset()
    ck, plan = run.plan.ck, run.plan
    if plan.replay_envs:
        t0 = time.perf_counter()
        rows = ck["envs"]["actions"].numpy()
        run.actions_log.replay(run.env, rows, stop)
        log.info(
            "envs: restored by replaying %d recorded steps of %d envs from seed %d in %.1f s",
            len(rows),
            run.spec.num_envs,
            plan.env_seed,
            time.perf_counter() - t0,
        )
    elif ck:
        log.info(
            "envs: re-created with seed %d (envs.resume=%s%s); games in progress at the checkpoint are dropped",
            plan.env_seed,
            plan.env_mode,
            "" if plan.env_mode == "reseed" else ", but the checkpoint has no usable action log",
        )


def write_checkpoint(run: Run, st: LoopState) -> Path:
    """Saves the ring (replay.save), then the checkpoint (numbered + checkpoint.pt), keeps the newest K.

    Only the ring file that checkpoint.pt refers to is kept.
    """
    from dqnfast.checkpoint import save_run_checkpoint

    ring_file = run.ring.save(run.run_dir / f"replay_{st.env_steps:012d}.npz") if run.cfg.replay.save else None
    path = save_run_checkpoint(
        run.run_dir,
        payload(run, st, replay_file=ring_file.name if ring_file else None),
        env_steps=st.env_steps,
        keep=run.cfg.logger.keep_checkpoints,
    )
    for old in run.run_dir.glob("replay_*.npz"):
        if ring_file is None or old.name != ring_file.name:
            old.unlink(missing_ok=True)
    run.replay_file = ring_file
    st.saved_at = st.env_steps
    return path


def log_row(run: Run, st: LoopState, loggers: Any) -> None:
    loggers.log_metrics(st.row(frame_skip=run.spec.frame_skip, updates=run.learner.num_updates))


def run_loop(run: Run, st: LoopState, loggers: Any, stop: Any) -> None:
    """Trains until ``algo.total_steps`` agent steps or a signal; leaves the last checkpoint written."""
    env, ring, spec, a, lg = run.env, run.ring, run.spec, run.cfg.algo, run.cfg.logger
    start_envs(run, stop)
    while st.env_steps < a.total_steps and not stop.signum:
        obs, reward, terminated, truncated, info = env.recv()
        env_id, elapsed = info["env_id"], info["elapsed_step"]
        k = len(env_id)
        refilling = st.refill_left > 0

        # store: the newest frame of each result, with the action that produced it
        ring.add(
            env_id,
            frames_of(obs, info, spec.obs_kind),
            st.last_action[env_id],
            reward,
            terminated,
            truncated,
            elapsed == 0,
        )
        for _, score, length in st.tracker.update(env_id, raw_reward_of(reward, info), elapsed):
            if not refilling:  # games of the random refill after a resume are not the agent's
                st.game_ended(score, length)

        # act: a refill plays the agent's own epsilon-greedy policy at the resumed epsilon (env_steps
        # stands still during it), so the ring holds the data learning would have seen, not random play
        st.epsilon = run.schedule(st.env_steps)
        actions = run.actor.act(observation_of(obs, info, spec.obs_kind), st.epsilon)
        env.send(actions, env_id)  # envpool steps in its threads while we learn
        st.last_action[env_id] = actions
        if run.actions_log is not None:
            run.actions_log.append(st.last_action)
        if refilling:  # refill the ring after a resume without a saved ring: no counters, no updates
            st.refill_left -= k
            st.refill_steps += k
            loggers.console.refill(a.learning_starts - max(st.refill_left, 0), a.learning_starts)
            if st.refill_left <= 0:
                log.info(
                    "replay: refilled with %d agent steps at eps %.4g; learning resumes", a.learning_starts, st.epsilon
                )
            continue
        st.env_steps += k
        loggers.progress(k)

        # learn
        if st.env_steps >= a.learning_starts and (st.can_sample or ring.num_valid() > 0):
            st.can_sample = True
            st.update_budget += k * a.replay_ratio / a.batch_size
            while st.update_budget >= 1.0:
                st.update_budget -= 1.0
                batch = run.batches.sample(run.learner.num_updates % 2)
                st.add_metrics(run.learner.update(batch))

        # log
        if st.env_steps >= st.next_log:
            log_row(run, st, loggers)
            st.next_log = next_mark(st.env_steps, st.next_log, lg.log_every)
        if st.env_steps >= st.next_ckpt:
            write_checkpoint(run, st)
            st.next_ckpt = next_mark(st.env_steps, st.next_ckpt, lg.checkpoint_every)

    if stop.signum:
        # no metrics row here: the partial averages go into the checkpoint, so a resumed
        # run writes exactly the rows an uninterrupted one would
        path = write_checkpoint(run, st)
        log.warning(
            "%s at %d agent steps: checkpoint written to %s; continue with: python -m dqnfast.train resume=%s",
            stop.name,
            st.env_steps,
            path,
            run.run_dir,
        )
        return
    if st.n_metrics or st.last_steps != st.env_steps:
        log_row(run, st, loggers)
    elif st.saved_at == st.env_steps:
        return  # the periodic checkpoint of this last step holds the same state: it is the final one
    write_checkpoint(run, st)  # the final one, still under the signal handler: a Ctrl-C cannot cut it in half
