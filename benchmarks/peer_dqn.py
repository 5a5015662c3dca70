"""The peer baseline: a plain single-env Python DQN loop, as most tutorials write it.

This is the loop that the PyTorch DQN tutorial, CleanRL-style scripts and the seed notebooks
use, and the one ``benchmarks/fps.py`` (stage ``peer``) compares dqnfast's end-to-end speed
with. Everything is the obvious Python:

    env      one ale-py env behind gymnasium's wrappers: ``gym.make("ALE/Pong-v5",
             frameskip=1, repeat_action_probability=0)`` -> ``AtariPreprocessing`` (30 no-op
             starts, frame skip 4 with max-pooling, grayscale 84x84 via OpenCV) ->
             ``FrameStackObservation(4)``: obs uint8[4, 84, 84], as envpool gives
    replay   ``collections.deque(maxlen=capacity)`` of (obs, action, reward, next_obs, done)
             tuples (``next_obs`` is the next step's ``obs`` object, so a stack is held once
             per step); ``random.sample`` + ``np.stack`` per batch, copied to the device
    network  dqnfast's Nature CNN (``dqnfast.agent.networks.NatureCNN``: uint8 in, /255 inside),
             eager torch, Adam(1e-4), Huber loss, max target (Nature; one forward fewer per
             update than dqnfast's double-DQN target, so the peer's figure is, if anything,
             flattering to it), target copy every 1000 updates
    act      epsilon-greedy on one observation: a batch-1 forward pass on the device

Phases (agent steps; 1 agent step = 4 frames):

    fill     --learning-starts uniform-random steps into the replay (no network)
    warm-up  --warmup-steps steps with learning (cuDNN autotuning, allocator growth, caches)
    timed    steps with learning until --seconds have passed (or --steps are done)

Learning runs at the Nature replay ratio: one batch-32 update every 4 agent steps
(--train-every, --batch-size). Acting uses a fixed --epsilon (0.05 by default) in the
warm-up and timed phases, so that nearly every step pays the forward pass, as dqnfast's
batched actor does; CleanRL skips the forward on random steps.

    python benchmarks/peer_dqn.py                       # Pong, device auto, 30 s timed
    python benchmarks/peer_dqn.py --seconds 5 --json /tmp/peer.json

Learning run (``--learn``): CleanRL's ``dqn_atari.py`` recipe and loop on one env, from the
first step to a final evaluation, for learning curves beside dqnfast's
(``benchmarks/learning.py --peer``):

    env      CleanRL's wrapper chain over ale-py: RecordEpisodeStatistics (whole-game scores,
             unclipped) -> NoopReset(30) -> MaxAndSkip(4) -> EpisodicLife -> FireReset (games
             with FIRE) -> ClipReward -> resize 84x84 -> grayscale -> FrameStack(4), the SB3
             Atari wrappers CleanRL imports
    replay   SB3 ``ReplayBuffer(optimize_memory_usage=True)``, as CleanRL
    learn    Adam(lr, eps 1e-8), MSE loss on the max target (CleanRL's defaults; --loss huber
             and --double switch them), an update every --train-every agent steps after
             --learning-starts, the target copied every --target-every-steps agent steps
    explore  epsilon 1 -> --end-e linearly over the first --exploration-steps agent steps (from
             step 0, as CleanRL); a random action skips the forward pass, as CleanRL
    log      <out>/metrics.csv every --log-every agent steps (the columns of dqnfast's
             metrics.csv that apply: env_steps, episodes, score_mean over the last 100 games,
             loss, q_mean, epsilon, sps, time); <out>/eval.json: --eval-episodes whole games
             (no episodic life, unclipped, 27k-step cap) at --eval-epsilon

    emulator (--emulator envpool) the same loop, replay and learner on envpool's Atari env
             (one env, ``<game>-v5``, episodic life and clipped rewards in training, none in the
             evaluation) instead of the wrapper chain over ale-py: what dqnfast plays, so a gap
             between the two recipes that stays with this run is the learner's, one that closes
             is the emulator pipeline's (``EnvpoolAsGym``)

    c51      (--algo c51) CleanRL's c51_atari.py instead: the same loop, env and replay; the
             network's last layer gives 51 logits per action on the support [-10, 10], the
             target is the target network's distribution of its own greedy next action
             (no double-DQN selection), shifted by r + gamma z and projected onto the support,
             the loss the cross-entropy against the predicted distribution of the action taken
             (log-probabilities clipped to [1e-5, 1 - 1e-5] as CleanRL), Adam(lr, eps) with
             CleanRL's c51 values passed as --lr 2.5e-4 --adam-eps 3.125e-4; acting and the
             evaluation take the greedy action of the distribution's mean

    python benchmarks/peer_dqn.py --learn --game Breakout --total-steps 300000 \
        --learning-starts 20000 --exploration-steps 75000 --capacity 100000 --out outputs/peer

Needs ``ale-py`` (the emulator and ROMs) and ``opencv-python-headless`` (gymnasium's
AtariPreprocessing resizes with cv2): ``pip install ale-py opencv-python-headless``. Where
OpenCV cannot be installed (the GPU machine's 64 MiB carry cannot hold its 61 MB wheel), a
stand-in ``cv2`` module with an area-average ``resize`` in NumPy is used instead (on Pong frames
it gives OpenCV's INTER_AREA pixels exactly, about 20 us a step slower: under 1% of a peer step on
a GPU); the JSON says which one ran ("resize").
Prints ``peer.sps = ... steps/s`` (timed phase) and saves JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent) not in sys.path:  # run as a script from anywhere: find dqnfast
    sys.path.insert(0, str(_HERE.parent))

PEER_PACKAGES = ("ale-py", "opencv-python-headless")


def ale_id(game: str) -> str:
    """``Pong`` / ``Pong-v5`` / ``ALE/Pong-v5`` -> ``ALE/Pong-v5``."""
    name = game.split("/")[-1].removesuffix("-v5")
    return f"ALE/{name}-v5"


def _area_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """(index int64[n_out, K], weight float32[n_out, K]): each output pixel is the coverage-weighted
    mean of the K input pixels its box [i*s, (i+1)*s) overlaps (s = n_in / n_out), as INTER_AREA."""
    s = n_in / n_out
    k = int(np.ceil(s)) + 1
    idx = np.zeros((n_out, k), np.int64)
    w = np.zeros((n_out, k), np.float32)
    for i in range(n_out):
        lo, hi = i * s, (i + 1) * s
        for t, j in enumerate(range(int(np.floor(lo)), min(int(np.ceil(hi)), n_in))):
            idx[i, t], w[i, t] = j, (min(hi, j + 1) - max(lo, j)) / s
    return idx, w


def install_cv2_standin() -> None:
    """A minimal ``cv2`` (``resize`` with INTER_AREA, downscaling 2-D uint8) for AtariPreprocessing.

    Separable gathers and multiply-adds, no BLAS call (a BLAS thread pool would fight the
    emulator for the cores).
    """
    import types

    cache: dict = {}

    def resize(img, dsize, interpolation=None):
        (w_out, h_out), (h_in, w_in) = dsize, img.shape[:2]
        key = (h_in, w_in, h_out, w_out)
        if key not in cache:
            cache[key] = (_area_taps(h_in, h_out), _area_taps(w_in, w_out))
        (ri, rw), (ci, cw) = cache[key]
        x = img.astype(np.float32)
        rows = sum(rw[:, t, None] * x[ri[:, t]] for t in range(ri.shape[1]))  # [h_out, w_in]
        out = sum(cw[:, t] * rows[:, ci[:, t]] for t in range(ci.shape[1]))  # [h_out, w_out]
        return np.rint(out, out=out).clip(0, 255).astype(np.uint8)

    mod = types.ModuleType("cv2")
    mod.INTER_AREA = 3
    mod.resize = resize
    mod.__dqnfast_standin__ = True
    sys.modules["cv2"] = mod


def make_peer_env(game: str, seed: int, resize: str = "auto"):
    """ale-py env + gymnasium's AtariPreprocessing + FrameStackObservation(4): obs uint8[4, 84, 84].

    resize: ``auto`` (OpenCV if installed, else the NumPy stand-in), ``cv2`` or ``numpy``.
    """
    try:
        import ale_py
        import gymnasium as gym
        from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation
    except ImportError as e:
        raise SystemExit(
            f"error: the peer needs {' and '.join(PEER_PACKAGES)} ({e}); pip install {' '.join(PEER_PACKAGES)}"
        ) from None
    if resize == "numpy":
        install_cv2_standin()
    else:
        try:
            import cv2  # noqa: F401
        except ImportError:
            if resize == "cv2":
                raise SystemExit("error: --resize cv2: pip install opencv-python-headless") from None
            print(
                "note: OpenCV is not installed: AtariPreprocessing resizes with a NumPy stand-in for cv2.resize",
                flush=True,
            )
            install_cv2_standin()
    gym.register_envs(ale_py)
    env = gym.make(ale_id(game), frameskip=1, repeat_action_probability=0.0, full_action_space=False)
    env = AtariPreprocessing(
        env, noop_max=30, frame_skip=4, screen_size=84, terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False
    )
    env = FrameStackObservation(env, 4)
    env.action_space.seed(seed)
    return env


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--game", default="Pong", help="Atari game (ale-py id ALE/<game>-v5)")
    p.add_argument("--device", default="auto", help="auto (cuda if available) | cpu | cuda | cuda:N")
    p.add_argument("--learning-starts", type=int, default=2000, help="random agent steps before learning")
    p.add_argument("--warmup-steps", type=int, default=400, help="agent steps with learning, not timed")
    p.add_argument("--seconds", type=float, default=30.0, help="length of the timed phase")
    p.add_argument("--steps", type=int, default=0, help="stop the timed phase after this many steps (0: no limit)")
    p.add_argument("--capacity", type=int, default=100_000, help="replay deque length (transitions)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--train-every", type=int, default=4, help="agent steps per update (Nature: 4)")
    p.add_argument("--target-every", type=int, default=1000, help="updates between target copies")
    p.add_argument("--epsilon", type=float, default=0.05, help="exploration in the warm-up and timed phases")
    p.add_argument("--torch-threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument(
        "--resize",
        choices=("auto", "cv2", "numpy"),
        default="auto",
        help="cv2.resize for AtariPreprocessing: OpenCV, or the NumPy stand-in (auto: OpenCV if installed)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", default="", help="write the figures to this JSON file")
    g = p.add_argument_group("learning run (--learn): CleanRL's dqn_atari.py recipe")
    g.add_argument("--learn", action="store_true", help="a whole learning run instead of the timed throughput run")
    g.add_argument("--total-steps", type=int, default=300_000, help="agent steps to train for")
    g.add_argument(
        "--exploration-steps",
        type=int,
        default=75_000,
        help="agent steps over which epsilon falls from 1 to --end-e (from step 0)",
    )
    g.add_argument("--end-e", type=float, default=0.01, help="final training epsilon")
    g.add_argument("--target-every-steps", type=int, default=1000, help="agent steps between target copies")
    g.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    g.add_argument("--adam-eps", type=float, default=1e-8, help="Adam epsilon (torch's and CleanRL's default)")
    g.add_argument("--loss", choices=("mse", "huber"), default="mse", help="TD loss (CleanRL: mse)")
    g.add_argument("--double", action="store_true", help="double-DQN target instead of CleanRL's max target")
    g.add_argument(
        "--algo",
        choices=("dqn", "c51"),
        default="dqn",
        help="dqn: dqn_atari.py; c51: c51_atari.py (a categorical head)",
    )
    g.add_argument(
        "--emulator",
        choices=("ale", "envpool"),
        default="ale",
        help="ale: CleanRL's wrapper chain over ale-py; envpool: envpool's Atari env, as dqnfast plays",
    )
    g.add_argument("--atoms", type=int, default=51, help="--algo c51: atoms of the support")
    g.add_argument("--v-min", type=float, default=-10.0, help="--algo c51: the support's lowest return")
    g.add_argument("--v-max", type=float, default=10.0, help="--algo c51: the support's highest return")
    g.add_argument("--log-every", type=int, default=10_000, help="agent steps between metrics.csv rows")
    g.add_argument("--eval-episodes", type=int, default=30, help="whole games in the final evaluation")
    g.add_argument("--eval-epsilon", type=float, default=0.05, help="epsilon of the final evaluation")
    g.add_argument("--out", default="", help="--learn: folder for metrics.csv, eval.json, q_net.pt")
    return p.parse_args(argv)


def _seed_and_device(args: argparse.Namespace):
    """Seeds python, numpy and torch, sets torch's threads; returns the torch device of --device."""
    import torch

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(args.device)


def _networks(n_actions: int, device):
    """dqnfast's Nature CNN (uint8 in, /255 inside) as the online network and its target copy."""
    from dqnfast.agent.networks import NatureCNN

    q_net = NatureCNN(4, n_actions).to(device)
    target_net = NatureCNN(4, n_actions).to(device)
    target_net.load_state_dict(q_net.state_dict())
    return q_net, target_net


class _CategoricalQ:
    """CleanRL's c51 network: the Nature CNN whose last layer gives ``atoms`` logits per action.

    Called, it returns the expected return per action (what acting and evaluation take the argmax
    of); ``probs`` gives the distributions float[B, A, N].
    """

    def __init__(self, n_actions: int, atoms: int, v_min: float, v_max: float, device) -> None:
        import torch

        from dqnfast.agent.networks import NatureCNN

        self.net = NatureCNN(4, n_actions * atoms).to(device)
        self.n_actions, self.atoms = n_actions, atoms
        self.support = torch.linspace(v_min, v_max, atoms, device=device)

    def probs(self, x):
        return self.net(x).view(-1, self.n_actions, self.atoms).softmax(dim=-1)

    def __call__(self, x):
        return (self.probs(x) * self.support).sum(dim=-1)


def _dqn_loss(q_net, target_net, data, args: argparse.Namespace, td_loss):
    """dqn_atari.py's TD loss on the max target (or the double-DQN target with --double)."""
    import torch

    with torch.no_grad():
        if args.double:
            a_star = q_net(data.next_observations).argmax(dim=1, keepdim=True)
            target_q = target_net(data.next_observations).gather(1, a_star).squeeze(1)
        else:
            target_q = target_net(data.next_observations).max(dim=1).values
        td_target = data.rewards.flatten() + 0.99 * target_q * (1.0 - data.dones.flatten())
    q = q_net(data.observations).gather(1, data.actions).squeeze(1)
    return td_loss(q, td_target), q


def _c51_loss(q_net: _CategoricalQ, target_net: _CategoricalQ, data, gamma: float):
    """The projected distributional target and the cross-entropy loss, as c51_atari.py computes them."""
    import torch

    z, n = q_net.support, q_net.atoms
    v_min, v_max = float(z[0]), float(z[-1])
    delta = (v_max - v_min) / (n - 1)
    with torch.no_grad():
        next_probs = target_net.probs(data.next_observations)
        next_action = (next_probs * z).sum(-1).argmax(dim=1)
        next_p = next_probs[torch.arange(len(next_action)), next_action]
        tz = (data.rewards + gamma * z * (1.0 - data.dones)).clamp(v_min, v_max)
        b = (tz - v_min) / delta
        lo, hi = b.floor().clamp(0, n - 1), b.ceil().clamp(0, n - 1)
        target = torch.zeros_like(next_p)
        target.scatter_add_(1, lo.long(), (hi + (lo == hi).float() - b) * next_p)
        target.scatter_add_(1, hi.long(), (b - lo) * next_p)
    probs = q_net.probs(data.observations)[torch.arange(len(data.actions)), data.actions.flatten()]
    loss = -(target * probs.clamp(1e-5, 1 - 1e-5).log()).sum(-1).mean()
    return loss, (probs.detach() * z).sum(-1)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.learn:
        return learn_main(args)
    import torch
    import torch.nn.functional as F

    # setup
    device = _seed_and_device(args)
    env = make_peer_env(args.game, args.seed, args.resize)
    q_net, target_net = _networks(int(env.action_space.n), device)
    optimizer = torch.optim.Adam(q_net.parameters(), lr=1e-4)
    memory: deque = deque(maxlen=args.capacity)

    def learn() -> None:
        batch = random.sample(memory, args.batch_size)
        obs, actions, rewards, next_obs, dones = zip(*batch)
        obs = torch.from_numpy(np.stack(obs)).to(device)
        next_obs = torch.from_numpy(np.stack(next_obs)).to(device)
        actions = torch.tensor(actions, dtype=torch.int64, device=device)
        rewards = torch.tensor(rewards, dtype=torch.float32, device=device)
        dones = torch.tensor(dones, dtype=torch.float32, device=device)
        with torch.no_grad():
            target = rewards + 0.99 * target_net(next_obs).max(dim=1).values * (1.0 - dones)
        q = q_net(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
        loss = F.smooth_l1_loss(q, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    obs, _ = env.reset(seed=args.seed)
    steps = updates = episodes = 0

    def env_step(action: int) -> None:
        nonlocal obs, steps, episodes
        next_obs, reward, terminated, truncated, _ = env.step(action)
        memory.append((obs, action, float(np.sign(reward)), next_obs, terminated))
        obs = next_obs
        steps += 1
        if terminated or truncated:
            obs, _ = env.reset()
            episodes += 1

    def act(epsilon: float) -> int:
        if random.random() < epsilon:
            return int(env.action_space.sample())
        with torch.no_grad():
            q = q_net(torch.from_numpy(np.asarray(obs)).unsqueeze(0).to(device))
        return int(q.argmax(dim=1).item())

    def agent_step() -> None:
        nonlocal updates
        env_step(act(args.epsilon))
        if steps % args.train_every == 0:
            learn()
            updates += 1
            if updates % args.target_every == 0:
                target_net.load_state_dict(q_net.state_dict())

    # fill: uniform-random play into the replay
    t0 = time.perf_counter()
    while steps < max(args.learning_starts, args.batch_size):
        env_step(int(env.action_space.sample()))
    fill_s = time.perf_counter() - t0
    fill_steps = steps

    # warm-up: learning, not timed
    for _ in range(args.warmup_steps):
        agent_step()
    if device.type == "cuda":
        torch.cuda.synchronize()

    # timed: learning at the Nature replay ratio
    s0, u0 = steps, updates
    t0 = time.perf_counter()
    while True:
        for _ in range(args.train_every):  # whole update periods: every window has the same mix
            agent_step()
        dt = time.perf_counter() - t0
        if dt >= args.seconds or (args.steps and steps - s0 >= args.steps):
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    sps = (steps - s0) / dt
    env.close()

    result = {
        "sps": sps,
        "timed_steps": steps - s0,
        "timed_updates": updates - u0,
        "timed_seconds": dt,
        "fill_sps": fill_steps / fill_s,
        "fill_steps": fill_steps,
        "warmup_steps": args.warmup_steps,
        "episodes": episodes,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "config": vars(args),
        "env": f"{ale_id(args.game)} + AtariPreprocessing(noop_max=30, frame_skip=4, 84x84 gray) "
        f"+ FrameStackObservation(4)",
        "versions": _versions(),
        "resize": "numpy stand-in" if getattr(sys.modules.get("cv2"), "__dqnfast_standin__", False) else "cv2",
        "python": platform.python_version(),
    }
    print(
        f"peer.sps = {sps:.1f} steps/s  ({steps - s0} agent steps, {updates - u0} updates of batch "
        f"{args.batch_size} in {dt:.1f} s on {device})"
    )
    print(f"peer.fill_sps = {result['fill_sps']:.1f} steps/s  (random play + replay append, no learning)")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, path)
    return 0


def make_cleanrl_env(game: str, seed: int, train: bool = True, resize: str = "auto", max_episode_steps: int = 27_000):
    """CleanRL's Atari env: the SB3 wrappers over ale-py, then resize, grayscale and a 4-frame stack.

    train=False drops EpisodicLife and ClipReward (whole games, real scores) for evaluation.
    max_episode_steps: agent steps per game (ale-py's cap counts frames: 4 a step).
    RecordEpisodeStatistics is innermost, so ``info["episode"]["r"]`` is a whole game's score.
    """
    try:
        import ale_py
        import gymnasium as gym
        from stable_baselines3.common.atari_wrappers import (
            ClipRewardEnv,
            EpisodicLifeEnv,
            FireResetEnv,
            MaxAndSkipEnv,
            NoopResetEnv,
        )
    except ImportError as e:
        raise SystemExit(
            f"error: the peer's learning run needs {' and '.join(PEER_PACKAGES)} and "
            f"stable-baselines3 ({e}); pip install -e '.[bench]'"
        ) from None
    if resize == "numpy":
        install_cv2_standin()
    gym.register_envs(ale_py)
    env = gym.make(
        ale_id(game),
        frameskip=1,
        repeat_action_probability=0.0,
        full_action_space=False,
        max_episode_steps=max_episode_steps * 4,
    )
    env = gym.wrappers.RecordEpisodeStatistics(env)
    env = NoopResetEnv(env, noop_max=30)
    env = MaxAndSkipEnv(env, skip=4)
    if train:
        env = EpisodicLifeEnv(env)
    if "FIRE" in env.unwrapped.get_action_meanings():
        env = FireResetEnv(env)
    if train:
        env = ClipRewardEnv(env)
    env = gym.wrappers.ResizeObservation(env, (84, 84))
    env = gym.wrappers.GrayscaleObservation(env)
    env = gym.wrappers.FrameStackObservation(env, 4)
    env.action_space.seed(seed)
    return env


class EnvpoolAsGym:
    """One envpool Atari env with the Gymnasium env interface CleanRL's loop uses (``reset``, ``step``).

    envpool resets next-step: after a step that ends an episode (a game over, the 27k-step cap,
    or a life loss under episodic life) the env's next step ignores its action and returns the
    first observation of what follows (after a life loss the same game, after envpool's no-ops
    and FIRE). ``reset`` after such a step is that next step, as CleanRL's wrappers' ``reset``
    plays their no-op and FIRE steps. A finished game (or the cap) adds
    ``info["episode"]["r"]``, its unclipped score, as gymnasium's RecordEpisodeStatistics does.
    """

    def __init__(self, game: str, seed: int, train: bool) -> None:
        import envpool

        name = game.split("/")[-1].removesuffix("-v5")
        self.env = envpool.make(
            f"{name}-v5",
            env_type="gymnasium",
            num_envs=1,
            batch_size=1,
            num_threads=1,
            seed=seed,
            episodic_life=train,
            reward_clip=train,
            noop_max=30,
            repeat_action_probability=0.0,
            max_episode_steps=27_000,
        )
        self.action_space = self.env.action_space
        self.observation_space = self.env.observation_space
        self._started = False
        self._score = 0.0

    def reset(self, seed: int | None = None):
        if not self._started:  # the first reset; the env's seed was given to envpool.make
            self._started = True
            obs, info = self.env.reset()
        else:  # the step after an episode's end: envpool plays the reset, the action is ignored
            obs, _, _, _, info = self.env.step(np.zeros(1, np.int32))
        return obs[0], {}

    def step(self, action: int):
        obs, reward, terminated, truncated, info = self.env.step(np.array([action], np.int32))
        self._score += float(info["reward"][0])
        out: dict = {}
        if bool(info["terminated"][0]) or bool(truncated[0]):  # a whole game ended (not only a life)
            out["episode"] = {"r": self._score}
            self._score = 0.0
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), out

    def close(self) -> None:
        self.env.close()


def make_learning_env(args: argparse.Namespace, seed: int, train: bool):
    """The --learn env of --emulator: CleanRL's wrapper chain over ale-py, or envpool's Atari env."""
    if args.emulator == "envpool":
        return EnvpoolAsGym(args.game, seed, train)
    return make_cleanrl_env(args.game, seed, train=train, resize=args.resize)


def learn_main(args: argparse.Namespace) -> int:
    """CleanRL's dqn_atari.py loop on one env: train, log metrics.csv, evaluate, write eval.json."""
    import csv

    import torch
    import torch.nn.functional as F

    if not args.out:
        raise SystemExit("error: --learn needs --out FOLDER (metrics.csv, eval.json and q_net.pt go there)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = _seed_and_device(args)
    env = make_learning_env(args, args.seed, train=True)
    from stable_baselines3.common.buffers import ReplayBuffer

    n_actions = int(env.action_space.n)
    if args.algo == "c51":
        q_net, target_net = (_CategoricalQ(n_actions, args.atoms, args.v_min, args.v_max, device) for _ in "01")
        target_net.net.load_state_dict(q_net.net.state_dict())
        params = q_net.net.parameters()
    else:
        q_net, target_net = _networks(n_actions, device)
        params = q_net.parameters()
    optimizer = torch.optim.Adam(params, lr=args.lr, eps=args.adam_eps)
    rb = ReplayBuffer(
        args.capacity,
        env.observation_space,
        env.action_space,
        device,
        optimize_memory_usage=True,
        handle_timeout_termination=False,
    )
    td_loss = F.mse_loss if args.loss == "mse" else F.smooth_l1_loss

    columns = ["env_steps", "frames", "episodes", "score_mean", "loss", "q_mean", "epsilon", "sps", "time"]
    f = open(out / "metrics.csv", "w", newline="")
    writer = csv.writer(f)
    writer.writerow(columns)
    scores: deque = deque(maxlen=100)
    episodes = 0
    loss_sum = q_sum = 0.0
    n_loss = 0
    t_start = time.perf_counter()
    t_row, s_row = t_start, 0

    obs, _ = env.reset(seed=args.seed)
    obs = np.asarray(obs)
    for step in range(1, args.total_steps + 1):
        frac = min(1.0, (step - 1) / max(1, args.exploration_steps))
        epsilon = 1.0 + frac * (args.end_e - 1.0)
        if random.random() < epsilon:
            action = int(env.action_space.sample())
        else:
            with torch.no_grad():
                action = int(q_net(torch.from_numpy(obs).unsqueeze(0).to(device)).argmax(dim=1).item())
        next_obs, reward, terminated, truncated, info = env.step(action)
        next_obs = np.asarray(next_obs)
        rb.add(
            obs[None],
            next_obs[None],
            np.array([[action]]),
            np.array([reward], np.float32),
            np.array([terminated], np.float32),
            [info],
        )
        if "episode" in info:  # a whole game ended (RecordEpisodeStatistics is innermost)
            scores.append(float(info["episode"]["r"]))
            episodes += 1
        if terminated or truncated:
            next_obs, _ = env.reset()
            next_obs = np.asarray(next_obs)
        obs = next_obs

        if step > args.learning_starts and step % args.train_every == 0:
            data = rb.sample(args.batch_size)
            if args.algo == "c51":
                loss, q = _c51_loss(q_net, target_net, data, 0.99)
            else:
                loss, q = _dqn_loss(q_net, target_net, data, args, td_loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach())
            q_sum += float(q.detach().mean())
            n_loss += 1
        if step > args.learning_starts and step % args.target_every_steps == 0:
            if args.algo == "c51":
                target_net.net.load_state_dict(q_net.net.state_dict())
            else:
                target_net.load_state_dict(q_net.state_dict())
        if step % args.log_every == 0 or step == args.total_steps:
            now = time.perf_counter()
            row = [
                step,
                4 * step,
                episodes,
                f"{np.mean(scores):.4f}" if scores else "",
                f"{loss_sum / n_loss:.6f}" if n_loss else "",
                f"{q_sum / n_loss:.6f}" if n_loss else "",
                f"{epsilon:.4f}",
                f"{(step - s_row) / (now - t_row):.2f}",
                f"{now - t_start:.1f}",
            ]
            writer.writerow(row)
            f.flush()
            print(" ".join(f"{k}={v}" for k, v in zip(columns, row)), flush=True)
            t_row, s_row = now, step
            loss_sum = q_sum = 0.0
            n_loss = 0
    train_seconds = time.perf_counter() - t_start
    f.close()
    env.close()
    torch.save((q_net.net if args.algo == "c51" else q_net).state_dict(), out / "q_net.pt")

    eval_scores = evaluate_peer(q_net, args, device)
    doc = {
        "game": args.game,
        "agent": f"peer (CleanRL {args.algo}_atari.py recipe)",
        "episodes": len(eval_scores),
        "epsilon": args.eval_epsilon,
        "protocol": "whole games, no episodic life, unclipped rewards, 30 no-op starts, 27k agent-step cap",
        "scores": eval_scores,
        "mean": float(np.mean(eval_scores)),
        "std": float(np.std(eval_scores)),
        "median": float(np.median(eval_scores)),
        "min": float(np.min(eval_scores)),
        "max": float(np.max(eval_scores)),
        "train_steps": args.total_steps,
        "train_seconds": train_seconds,
        "train_sps": args.total_steps / train_seconds,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "config": vars(args),
        "versions": _versions(),
    }
    tmp = out / f".eval.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, out / "eval.json")
    print(
        f"peer.eval mean = {doc['mean']:.2f} over {len(eval_scores)} games "
        f"(epsilon {args.eval_epsilon}); trained {args.total_steps} steps at {doc['train_sps']:.1f} steps/s"
    )
    return 0


def evaluate_peer(q_net, args: argparse.Namespace, device) -> list[float]:
    """--eval-episodes whole games at --eval-epsilon, one env, scores unclipped."""
    env = make_learning_env(args, args.seed + 10_000, train=False)
    return play_games(q_net, env, args.eval_epsilon, args.eval_episodes, args.seed + 10_000, device)


def play_games(q_net, env, epsilon: float, games: int, seed: int, device="cpu") -> list[float]:
    """``games`` whole games of ``q_net`` (argmax, a random action with probability ``epsilon``) on
    an evaluation ``env`` of this module's; their unclipped scores. Closes the env."""
    import torch

    rng = random.Random(seed)
    scores: list[float] = []
    obs, _ = env.reset(seed=seed)
    while len(scores) < games:
        if rng.random() < epsilon:
            action = int(env.action_space.sample())
        else:
            with torch.no_grad():
                x = torch.from_numpy(np.asarray(obs)).unsqueeze(0).to(device)
                action = int(q_net(x).argmax(dim=1).item())
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            scores.append(float(info["episode"]["r"]))
            obs, _ = env.reset()
    env.close()
    return scores


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in ("ale-py", "gymnasium", "opencv-python-headless", "opencv-python", "torch", "numpy"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            pass
    return out


if __name__ == "__main__":
    sys.exit(main())
