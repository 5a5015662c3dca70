"""Is dqnfast's C51 update the peer's? Two checks of the maths, apart from everything else a run differs in.

1. ``--steps K`` (default 3): dqnfast's ``c51_update_step`` (the target network's greedy next action, as
   ``preset=c51``) and the peer's C51 update (``peer_dqn.py --algo c51``: CleanRL's ``c51_atari.py`` maths,
   Adam with the same settings) start from the same weights and take K steps on the same random batches.
   Printed: each step's two losses and the largest difference between the two networks' parameters.
2. ``--checkpoint PATH`` (a dqnfast C51 run's ``checkpoint.pt``, Breakout or another Atari game): the one
   place the two losses differ is CleanRL's clamp of the probabilities to [1e-5, 1 - 1e-5] before the log,
   which zeroes the gradient through an atom whose probability is below 1e-5. The trained agent plays
   ``--play`` agent steps (ε 0.05, envpool, the run's game) and, on those transitions, the script measures
   the share of atoms under the clamp, the target's mass on them, and how far the clamped gradient of the
   loss with respect to the logits is from the exact one (relative norm per sample).

    python benchmarks/c51_maths.py --checkpoint outputs/.../checkpoint.pt --play 1500
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent) not in sys.path:  # run as a script from anywhere: find dqnfast
    sys.path.insert(0, str(_HERE.parent))
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import peer_dqn  # noqa: E402

CLAMP = 1e-5  # c51_atari.py's probs.clamp(1e-5, 1 - 1e-5) before the log


def same_update(steps: int = 3, batch: int = 32, actions: int = 4, seed: int = 0) -> list[dict]:
    """Both C51 updates from the same weights on the same random uint8 batches; one row per step."""
    import torch

    from dqnfast.agent import networks
    from dqnfast.agent.distributional import c51_update_step

    torch.manual_seed(seed)
    spec = networks.NetworkSpec("nature", [4, 84, 84], "uint8", actions, hidden=[512], atoms=51)
    mine, mine_target = networks.make_network(spec), networks.make_network(spec)
    theirs, theirs_target = (peer_dqn._CategoricalQ(actions, 51, -10.0, 10.0, "cpu") for _ in "01")
    for src, dst in ((mine, theirs), (mine_target, theirs_target)):
        dst.net.load_state_dict({k: v for k, v in src.state_dict().items() if k != "support"})
    opt_mine = torch.optim.Adam(mine.parameters(), lr=2.5e-4, eps=3.125e-4)
    opt_theirs = torch.optim.Adam(theirs.net.parameters(), lr=2.5e-4, eps=3.125e-4)
    rows = []
    for step in range(steps):
        obs = torch.randint(0, 256, (batch, 4, 84, 84), dtype=torch.uint8)
        next_obs = torch.randint(0, 256, (batch, 4, 84, 84), dtype=torch.uint8)
        action = torch.randint(0, actions, (batch,))
        reward = torch.randint(-1, 2, (batch,)).float()
        done = (torch.rand(batch) < 0.2).float()
        m = c51_update_step(
            mine, mine_target, opt_mine, obs, action, reward, next_obs, 0.99 * (1.0 - done), double=False
        )
        data = SimpleNamespace(
            observations=obs,
            next_observations=next_obs,
            actions=action.unsqueeze(1),
            rewards=reward.unsqueeze(1),
            dones=done.unsqueeze(1),
        )
        loss, _ = peer_dqn._c51_loss(theirs, theirs_target, data, 0.99)
        opt_theirs.zero_grad()
        loss.backward()
        opt_theirs.step()
        gap = max((a - b).abs().max().item() for a, b in zip(mine.parameters(), theirs.net.parameters()))
        rows.append(
            {"step": step + 1, "loss_dqnfast": m["loss"].item(), "loss_peer": loss.item(), "max_param_gap": gap}
        )
    return rows


def clamp_effect(checkpoint: Path, play: int = 1500, seed: int = 3) -> dict:
    """On ``play`` transitions of the checkpoint's agent (ε 0.05): what CleanRL's clamp changes in the gradient."""
    import envpool
    import numpy as np
    import torch

    from dqnfast.agent import networks
    from dqnfast.agent.distributional import project_distribution

    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if not ck["network"].get("atoms"):
        raise SystemExit(f"error: --checkpoint: {checkpoint} is not a C51 run's (its network has no atoms)")
    online, target = networks.make_network(ck["network"]), networks.make_network(ck["network"])
    online.load_state_dict(ck["online"])
    target.load_state_dict(ck["target"])
    env = envpool.make(ck["game"], env_type="gymnasium", num_envs=1, episodic_life=True, reward_clip=True, seed=seed)
    rng = np.random.default_rng(seed)
    z = online.support
    obs, _ = env.reset()
    buf: dict[str, list] = {"o": [], "a": [], "r": [], "n": [], "d": []}
    with torch.no_grad():
        for _ in range(play):
            q = (torch.softmax(online.logits(torch.as_tensor(obs)), -1) * z).sum(-1)
            a = int(q.argmax()) if rng.random() > 0.05 else int(rng.integers(q.shape[1]))
            next_obs, r, term, _, _ = env.step(np.array([a]))
            for k, v in zip("oarnd", (obs[0], a, float(r[0]), next_obs[0], float(term[0]))):
                buf[k].append(v)
            obs = next_obs
        o, n = torch.as_tensor(np.stack(buf["o"])), torch.as_tensor(np.stack(buf["n"]))
        a, r, d = torch.tensor(buf["a"]), torch.tensor(buf["r"]), torch.tensor(buf["d"])
        rows = torch.arange(len(a))
        next_probs = torch.softmax(target.logits(n), -1)
        m = project_distribution(next_probs[rows, (next_probs * z).sum(-1).argmax(1)], r, 0.99 * (1 - d), z)
        p = torch.softmax(online.logits(o), -1)[rows, a]
    under = p < CLAMP
    # d loss / d logits: exact p - m; clamped: the atoms under the clamp give no gradient through their log
    exact = p - m
    clamped = torch.where(under, torch.zeros_like(m), -m) + p * (m * ~under).sum(-1, keepdim=True)
    rel = (exact - clamped).norm(dim=-1) / exact.norm(dim=-1)
    return {
        "checkpoint": str(checkpoint),
        "agent_steps": int(ck["counters"]["env_steps"]),
        "transitions": len(a),
        "share_of_atoms_under_clamp": under.float().mean().item(),
        "target_mass_under_clamp_mean": (m * under).sum(-1).mean().item(),
        "target_mass_under_clamp_max": (m * under).sum(-1).max().item(),
        "gradient_gap_median": rel.median().item(),
        "gradient_gap_p99": rel.quantile(0.99).item(),
        "gradient_gap_max": rel.max().item(),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__)
    p.add_argument("--steps", type=int, default=3, help="update steps of the side-by-side check")
    p.add_argument("--checkpoint", type=Path, help="a dqnfast C51 run's checkpoint: measure the clamp's effect")
    p.add_argument("--play", type=int, default=1500, help="agent steps the checkpoint's agent plays")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    for row in same_update(args.steps):
        print(
            f"c51_maths.step{row['step']}: loss dqnfast {row['loss_dqnfast']:.6f}, peer {row['loss_peer']:.6f}; "
            f"largest parameter gap {row['max_param_gap']:.1e}"
        )
    if args.checkpoint:
        if not args.checkpoint.is_file():
            p.error(f"--checkpoint: no file {args.checkpoint}")
        c = clamp_effect(args.checkpoint, args.play)
        print(
            f"c51_maths.clamp: {c['transitions']} transitions of the agent at {c['agent_steps']} agent steps: "
            f"{c['share_of_atoms_under_clamp']:.1%} of the taken action's atoms under 1e-5 holding "
            f"{c['target_mass_under_clamp_mean']:.1e} of the target's mass (max {c['target_mass_under_clamp_max']:.1e}); "
            f"clamped vs exact logit gradient: median {c['gradient_gap_median']:.1e}, "
            f"99th percentile {c['gradient_gap_p99']:.1e}, max {c['gradient_gap_max']:.1e} of its norm"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
