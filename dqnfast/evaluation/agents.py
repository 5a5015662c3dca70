"""The evaluated agent, rebuilt from a checkpoint: a DQN Q-network or a REINFORCE policy.

Both are played the same way (``dqnfast.evaluation.protocol.play``): the argmax of the
network's output, ε-greedy. A DQN checkpoint carries its network spec
(``dqnfast.agent.networks.make_network``); a REINFORCE checkpoint (``learner: reinforce``)
carries the policy's weights and the run's config: the policy's widths are read off its
weights (``policy.0.weight`` float32[h1, d], ...; a value head when ``value_head.*`` is
there), so the rebuilt network is the trained one whatever the config says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dqnfast.agent.networks import make_network
from dqnfast.agent.reinforce import PolicyNetwork
from dqnfast.checkpoint import CheckpointError, check_compatible
from dqnfast.config import ConfigError, EnvsConfig, EvalProtocolConfig
from dqnfast.config.schema import LearnerName, NetworkName, ObsKind

__all__ = ["Agent", "learner_of", "load_agent", "policy_network"]


@dataclass
class Agent:
    """A checkpoint's network, ready to play ``task_id``.

    learner: ``dqn`` | ``reinforce``. family: ``atari`` | ``classic``. spec: the EnvSpec of
    the evaluation envs (obs kind and shape, actions, frame skip).
    """

    network: Any
    learner: LearnerName
    task_id: str
    family: str
    spec: Any


def learner_of(ckpt: dict) -> LearnerName:
    """``reinforce`` for a REINFORCE checkpoint, else ``dqn`` (a checkpoint holds the plain value)."""
    return LearnerName.reinforce if ckpt.get("learner") == LearnerName.reinforce else LearnerName.dqn


def _obs_kind(ckpt: dict) -> str:
    """The observations a DQN checkpoint's network takes: ``pixels`` | ``ram`` | ``vector``."""
    if isinstance(ckpt.get("obs"), dict) and ckpt["obs"].get("kind"):
        return str(ckpt["obs"]["kind"])
    cfg_obs = (ckpt.get("config") or {}).get("obs", ObsKind.pixels)
    net = ckpt.get("network") or {}
    if net.get("kind") == NetworkName.nature:
        return ObsKind.pixels.value
    return ObsKind.ram.value if cfg_obs == ObsKind.ram and list(net.get("obs_shape", [])) == [128] else "vector"


def _resolve(game: Any, key: str, envs: EnvsConfig | None = None) -> tuple[str, str]:
    from dqnfast.envs import resolve_game  # looked up at each call: tests replace it on its module

    try:
        return resolve_game(game, envs)
    except ConfigError:  # envs.import / envs.make_kwargs of a Gymnasium game
        raise
    except ValueError as e:
        raise ConfigError(key, str(e)) from None


def policy_network(state: dict, obs_dim: int, num_actions: int, *, task_id: str) -> Any:
    """A ``PolicyNetwork`` with REINFORCE weights ``state`` loaded, its widths read off the weights.

    Raises ConfigError (key ``run``) when the policy does not fit ``obs_dim`` / ``num_actions``.
    """
    layers = sorted(
        (int(k.split(".")[1]), v) for k, v in state.items() if k.startswith("policy.") and k.endswith(".weight")
    )
    if not layers:
        raise ConfigError("run", "the REINFORCE checkpoint holds no policy weights (online.policy.*)")
    d, a = int(layers[0][1].shape[1]), int(layers[-1][1].shape[0])
    if (d, a) != (obs_dim, num_actions):
        raise ConfigError(
            "run",
            f"checkpoint policy takes float32[{d}] and has {a} actions, "
            f"this evaluation's {task_id} gives float32[{obs_dim}] and has {num_actions}",
        )
    hidden = [int(w.shape[0]) for _, w in layers[:-1]]
    net = PolicyNetwork(d, a, hidden, value=any(k.startswith("value_head.") for k in state))
    net.load_state_dict(state)
    return net


def _dqn_network(ckpt: dict, spec: Any) -> Any:
    check_compatible(
        ckpt,
        game=spec.task_id,
        obs_kind=spec.obs_kind,
        num_actions=spec.num_actions,
        network={**ckpt["network"], "obs_shape": list(spec.obs_shape), "num_actions": spec.num_actions},
        what="this evaluation",
    )
    net = make_network(ckpt["network"])
    net.load_state_dict(ckpt["online"])
    return net


def load_agent(
    ckpt: dict,
    *,
    game: str | None,
    envs: EnvsConfig,
    protocol: EvalProtocolConfig,
    task: tuple[str, str] | None = None,
) -> Agent:
    """Rebuilds ``ckpt``'s network for ``game`` (None: the checkpoint's; given: a check that it is the same).

    task: ``game`` already resolved, ``(task_id, family)`` (``dqnfast.config.resolve.Resolved.game``).

    Probes one env of the evaluation's settings for the observation and action spaces.
    Raises ConfigError: ``game`` for an unknown game, ``run`` for a checkpoint that does not
    fit (another game, observation type, action count or network) or cannot be rebuilt.
    """
    from dqnfast.envs import make_env  # looked up at each call: tests replace it on its module

    learner = learner_of(ckpt)
    ck_game = ckpt.get("game") or (ckpt.get("config") or {}).get("game")
    task_id, family = task or _resolve(game or ck_game, "game", envs)
    obs = _obs_kind(ckpt) if learner == LearnerName.dqn else "vector"
    probe, spec = make_env(
        task_id, ObsKind.pixels if obs == "vector" else obs, envs, protocol, seed=0, num_envs=1, task=(task_id, family)
    )
    probe.close()
    try:
        if learner == LearnerName.dqn:
            net = _dqn_network(ckpt, spec)
        else:
            ck_task = _resolve(ck_game, "run", envs)[0] if ck_game else None
            if ck_task != task_id:
                raise CheckpointError(f"checkpoint is for {ck_task}, this evaluation is {task_id}")
            if spec.obs_kind != "vector":
                raise CheckpointError(f"REINFORCE policies play classic control; {task_id} is an Atari game")
            net = policy_network(ckpt["online"], int(spec.obs_shape[0]), spec.num_actions, task_id=task_id)
    except ConfigError:
        raise
    except (CheckpointError, RuntimeError, KeyError, TypeError, ValueError) as e:
        raise ConfigError("run", " ".join(str(e).split()) or type(e).__name__) from None
    return Agent(net, learner, task_id, family, spec)
