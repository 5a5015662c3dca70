"""A Gymnasium env defined only here, registered on import: ``envs.import=gym_custom_env`` (tests/ on sys.path).

``Counter-v0``: obs float32[2] = (episode index, t), reward = t after the step, action 1 ends the
episode early after step 3 (``terminated``), else the episode is truncated at ``length`` steps.
The episode index counts the env's resets, so every observation names its episode and step.
``Chain-v0``: a 4-state chain a DQN learns fast (action 1 moves right; the end pays 1).
``Broken-v0``: raises in ``step`` after ``fail_at`` steps. Spaces for the refusals:
``Continuous-v0`` (Box actions), ``DictObs-v0`` (Dict observations).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class Counter(gym.Env):
    def __init__(self, length: int = 7) -> None:
        self.length = int(length)
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.episode, self.t = -1, 0
        self.actions: list[int] = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        return np.array([self.episode, 0], np.float32), {}

    def step(self, action):
        self.actions.append(int(action))
        self.t += 1
        terminated = int(action) == 1 and self.t >= 3
        truncated = self.t >= self.length and not terminated
        return np.array([self.episode, self.t], np.float32), float(self.t), terminated, truncated, {}


class Chain(gym.Env):
    def __init__(self, n: int = 4) -> None:
        self.n = n
        self.observation_space = spaces.Box(0, 1, (n,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.s = 0

    def _obs(self):
        x = np.zeros(self.n, np.float32)
        x[self.s] = 1
        return x

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = 0
        return self._obs(), {}

    def step(self, action):
        self.s = max(0, min(self.n - 1, self.s + (1 if int(action) == 1 else -1)))
        done = self.s == self.n - 1
        return self._obs(), float(done), done, False, {}


class Broken(Counter):
    def __init__(self, fail_at: int = 5) -> None:
        super().__init__(length=100)
        self.fail_at, self.steps = fail_at, 0

    def step(self, action):
        self.steps += 1
        if self.steps >= self.fail_at:
            raise ValueError("the physics blew up")
        return super().step(action)


class Continuous(Counter):
    def __init__(self) -> None:
        super().__init__()
        self.action_space = spaces.Box(-1, 1, (1,), np.float32)


class DictObs(Counter):
    def __init__(self) -> None:
        super().__init__()
        self.observation_space = spaces.Dict({"x": spaces.Box(0, 1, (2,), np.float32)})


for _name, _cls, _steps in [
    ("Counter-v0", Counter, None),
    ("Chain-v0", Chain, 50),
    ("Broken-v0", Broken, None),
    ("Continuous-v0", Continuous, None),
    ("DictObs-v0", DictObs, None),
]:
    if f"{_name}" not in gym.registry:
        gym.register(f"{_name}", entry_point=_cls, max_episode_steps=_steps, disable_env_checker=True)
