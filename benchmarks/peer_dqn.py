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
    network  dqnfast's Nature CNN (``dqnfast.networks.NatureCNN``: uint8 in, /255 inside),
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
        raise SystemExit(f"error: the peer needs {' and '.join(PEER_PACKAGES)} ({e}); "
                         f"pip install {' '.join(PEER_PACKAGES)}") from None
    if resize == "numpy":
        install_cv2_standin()
    else:
        try:
            import cv2  # noqa: F401
        except ImportError:
            if resize == "cv2":
                raise SystemExit("error: --resize cv2: pip install opencv-python-headless") from None
            print("note: OpenCV is not installed: AtariPreprocessing resizes with a NumPy stand-in for "
                  "cv2.resize", flush=True)
            install_cv2_standin()
    gym.register_envs(ale_py)
    env = gym.make(ale_id(game), frameskip=1, repeat_action_probability=0.0, full_action_space=False)
    env = AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, terminal_on_life_loss=False,
                             grayscale_obs=True, scale_obs=False)
    env = FrameStackObservation(env, 4)
    env.action_space.seed(seed)
    return env


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--resize", choices=("auto", "cv2", "numpy"), default="auto",
                   help="cv2.resize for AtariPreprocessing: OpenCV, or the NumPy stand-in (auto: OpenCV if installed)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", default="", help="write the figures to this JSON file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    import torch.nn.functional as F

    from dqnfast.networks import NatureCNN

    # setup
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    env = make_peer_env(args.game, args.seed, args.resize)
    n_actions = int(env.action_space.n)
    q_net = NatureCNN(4, n_actions).to(device)
    target_net = NatureCNN(4, n_actions).to(device)
    target_net.load_state_dict(q_net.state_dict())
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
    print(f"peer.sps = {sps:.1f} steps/s  ({steps - s0} agent steps, {updates - u0} updates of batch "
          f"{args.batch_size} in {dt:.1f} s on {device})")
    print(f"peer.fill_sps = {result['fill_sps']:.1f} steps/s  (random play + replay append, no learning)")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, path)
    return 0


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
