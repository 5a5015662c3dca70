"""Each agent's network in each emulator pipeline: does a gap in learning follow the learner or the emulator?

dqnfast trains on envpool's Atari env; the peer (``peer_dqn.py --learn``, CleanRL's recipe) on
CleanRL's wrapper chain over ale-py. Their training scores are each measured in their own
pipeline, so a gap between them mixes what the two networks learned with how the two pipelines
play. This script takes a dqnfast checkpoint and the peer's ``q_net.pt`` (the same Nature CNN on
the same uint8[4, 84, 84] frames; a C51 ``q_net.pt`` plays the mean of its distribution) and plays
each network for ``--games`` whole games at each ``--epsilons`` in both pipelines, on the same env
seeds: evaluation envs (no episodic life, unclipped scores, 30 no-op starts).

    python benchmarks/cross_eval.py --dqnfast outputs/learning/cpu/SpaceInvaders/dqnfast_seed1 \\
        --peer outputs/learning/cpu/SpaceInvaders/peer_seed1/q_net.pt --json /tmp/cross.json

Prints one line per network, pipeline and epsilon; ``--json`` writes the scores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
if str(_HERE.parent) not in sys.path:  # run as a script from anywhere: find dqnfast
    sys.path.insert(0, str(_HERE.parent))

import peer_dqn  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dqnfast", required=True, help="a dqnfast run dir or checkpoint file (an Atari game)")
    p.add_argument("--peer", required=True, help="the peer's q_net.pt (peer_dqn.py --learn writes it)")
    p.add_argument("--games", type=int, default=30, help="whole games per network, pipeline and epsilon")
    p.add_argument("--epsilons", type=float, nargs="+", default=[0.05, 0.0], help="epsilon-greedy of the play")
    p.add_argument("--seed", type=int, default=11_000, help="env seed of both pipelines (far from training's)")
    p.add_argument("--max-episode-steps", type=int, default=27_000, help="agent steps per game (27000 = 108k frames)")
    p.add_argument("--v-min", type=float, default=-10.0, help="a C51 peer network's support (peer_dqn.py's)")
    p.add_argument("--v-max", type=float, default=10.0)
    p.add_argument("--json", default="", help="write the scores here")
    args = p.parse_args(argv)
    if args.games < 1:
        p.error(f"--games must be >= 1, got {args.games}")
    if not all(0.0 <= e <= 1.0 for e in args.epsilons):
        p.error(f"--epsilons must be in [0, 1], got {args.epsilons}")
    if not Path(args.peer).is_file():
        p.error(f"--peer: no file {args.peer} (peer_dqn.py --learn --out DIR writes DIR/q_net.pt)")
    return args


def peer_network(path: str, num_actions: int, v_min: float, v_max: float):
    """The peer's ``q_net.pt`` as obs -> one value per action: a DQN's Q, or a C51 net's expected return."""
    import torch

    from dqnfast.agent.networks import NatureCNN

    state = torch.load(path, map_location="cpu")
    outputs = int(next(v for k, v in reversed(state.items()) if k.endswith("weight")).shape[0])
    if outputs == num_actions:
        net = NatureCNN(4, num_actions)
        net.load_state_dict(state)
        return net.eval()
    if outputs % num_actions:
        raise SystemExit(f"error: --peer: {path} has {outputs} outputs, not a network for {num_actions} actions")
    c51 = peer_dqn._CategoricalQ(num_actions, outputs // num_actions, v_min, v_max, "cpu")
    c51.net.load_state_dict(state)

    class ExpectedReturn(torch.nn.Module):  # a module, as dqnfast's evaluation plays (eval() / train())
        def __init__(self) -> None:
            super().__init__()
            self.net = c51.net

        def forward(self, x):
            return c51(x)

    return ExpectedReturn().eval()


def cleanrl_scores(net, game: str, epsilon: float, games: int, seed: int, max_steps: int) -> list[float]:
    """``games`` whole games of ``net`` in CleanRL's evaluation env (peer_dqn's), one env."""
    env = peer_dqn.make_cleanrl_env(game, seed, train=False, max_episode_steps=max_steps)
    return peer_dqn.play_games(net, env, epsilon, games, seed)


def main(argv=None) -> int:
    args = parse_args(argv)
    import dataclasses

    import torch

    from dqnfast.checkpoint import CheckpointError, find_checkpoint, load_checkpoint
    from dqnfast.evaluation.agents import load_agent
    from dqnfast.evaluation.app import EvalConfig, _settings
    from dqnfast.evaluation.protocol import play

    torch.set_num_threads(1)
    try:
        path = find_checkpoint(args.dqnfast)
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        raise SystemExit(f"error: --dqnfast: {e}") from None
    cfg = EvalConfig(run=str(path), episodes=args.games, num_envs=min(10, args.games))
    envs, protocol = _settings(cfg, ckpt.get("config") or {})
    protocol = dataclasses.replace(protocol, max_episode_steps=args.max_episode_steps)
    agent = load_agent(ckpt, game=None, envs=envs, protocol=protocol)
    if agent.family != "atari":
        raise SystemExit(f"error: --dqnfast: {agent.task_id} is not an Atari game; the peer plays Atari only")
    nets = {
        "dqnfast": agent.network.eval(),
        "peer": peer_network(args.peer, agent.spec.num_actions, args.v_min, args.v_max),
    }
    game = agent.task_id.removesuffix("-v5")
    results: dict[str, dict] = {}
    for who, net in nets.items():
        for eps in args.epsilons:
            played = play(
                agent.task_id, agent.spec.obs_kind, envs, protocol, net, epsilon=eps, seed=args.seed,
                task=(agent.task_id, agent.family),
            )  # fmt: skip
            cleanrl = cleanrl_scores(net, game, eps, args.games, args.seed, args.max_episode_steps)
            for pipeline, scores in (("envpool", played.scores), ("cleanrl", cleanrl)):
                mean, std = statistics.fmean(scores), statistics.pstdev(scores)
                results[f"{who} {pipeline} eps{eps:g}"] = {
                    "network": who, "pipeline": pipeline, "epsilon": eps, "mean": mean, "std": std, "scores": scores,
                }  # fmt: skip
                print(f"cross_eval.{who}.{pipeline}.eps{eps:g} = {mean:.1f} ± {std:.1f} over {len(scores)} games")
    if args.json:
        doc = {"game": game, "dqnfast": str(path), "peer": str(args.peer), "seed": args.seed, "results": results}
        from dqnfast.atomic import atomic_open

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(args.json, "w") as f:
            f.write(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
