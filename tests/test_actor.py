"""dqnfast.agent.actor: epsilon schedules, batched epsilon-greedy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from torch import nn

from dqnfast.agent.actor import Actor, EpsilonSchedule, exponential_epsilon, linear_epsilon


def test_linear_schedule():
    f = lambda s: linear_epsilon(s, 1.0, 0.1, 1000, learning_starts=500)  # noqa: E731
    assert f(0) == 1.0 and f(499) == 1.0
    assert f(500) == pytest.approx(1.0)
    assert f(1000) == pytest.approx(0.55)
    assert f(1500) == pytest.approx(0.1) and f(10**7) == pytest.approx(0.1)


def test_exponential_schedule():
    f = lambda s: exponential_epsilon(s, 1.0, 0.01, 100, learning_starts=50)  # noqa: E731
    assert f(10) == 1.0 and f(50) == pytest.approx(1.0)
    assert f(150) == pytest.approx(0.01 + 0.99 / math.e)
    vals = [f(s) for s in range(50, 2000, 50)]
    assert all(a > b for a, b in zip(vals, vals[1:])) and vals[-1] == pytest.approx(0.01, abs=1e-6)


def test_epsilon_schedule_object():
    s = EpsilonSchedule("linear", 1.0, 0.05, 100, learning_starts=10, eval_epsilon=0.001)
    assert s(0) == 1.0 and s(110) == pytest.approx(0.05) and s.eval_epsilon == 0.001
    assert EpsilonSchedule("exponential", 1.0, 0.0, 10)(10) == pytest.approx(math.exp(-1))
    with pytest.raises(ValueError):
        EpsilonSchedule("cosine")


class FixedQ(nn.Module):
    """Q-values = the observation itself (obs float32[K, A])."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x.float()


def test_greedy_actions_in_one_forward_pass():
    net = FixedQ()
    actor = Actor(net, 4)
    obs = np.array([[0, 3, 1, 2], [5, 0, 0, 0], [0, 0, 0, 9]], np.float32)
    a = actor.act(obs, 0.0)
    assert a.dtype == np.int32 and a.shape == (3,)
    np.testing.assert_array_equal(a, [1, 0, 3])
    assert net.calls == 1


def test_random_actions_skip_the_network():
    net = FixedQ()
    a = Actor(net, 5, seed=0).act(np.zeros((4000, 5), np.float32), 1.0)
    assert net.calls == 0 and set(a.tolist()) == set(range(5))
    assert np.bincount(a, minlength=5).min() > 600


def test_epsilon_mixes_greedy_and_uniform():
    obs = np.tile(np.array([[0, 0, 1, 0]], np.float32), (20000, 1))
    a = Actor(FixedQ(), 4, seed=1).act(obs, 0.2)
    # P(greedy action) = 1 - eps + eps / A = 0.85
    assert (a == 2).mean() == pytest.approx(0.85, abs=0.015)
    b = Actor(FixedQ(), 4, seed=1).act(obs, 0.2)
    np.testing.assert_array_equal(a, b)  # seeded


def test_bf16_actor_picks_the_same_clear_winners():
    import torch

    obs = np.array([[0, 3, 1, 2], [5, 0, 0, 0], [0, 0, 0, 9]], np.float32)
    a = Actor(FixedQ(), 4, amp_dtype=torch.bfloat16).act(obs, 0.0)
    np.testing.assert_array_equal(a, [1, 0, 3])


def test_actor_compile_failure_falls_back_to_eager(caplog):
    actor = Actor(FixedQ(), 4)

    def broken(x):
        raise RuntimeError("BackendCompilerFailed: no compiler")

    actor._forward, actor._guarded_calls, actor.compile_mode = broken, 3, "default"
    obs = np.array([[0, 3, 1, 2], [5, 0, 0, 0]], np.float32)
    with caplog.at_level("WARNING", logger="dqnfast.agent.actor"):
        np.testing.assert_array_equal(actor.act(obs, 0.0), [1, 0])
        np.testing.assert_array_equal(actor.act(obs, 0.0), [1, 0])
    assert actor.compile_mode is None
    assert sum("failed" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.slow
def test_compiled_actor_acts_like_the_eager_one():
    """torch.compile of the actor's forward (inductor on CPU, ~20 s): the same greedy actions."""
    import torch

    from dqnfast.agent.networks import NetworkSpec, make_network

    torch.manual_seed(0)
    net = make_network(NetworkSpec("nature", [4, 84, 84], "uint8", 6, hidden=[64]))
    obs = np.random.default_rng(0).integers(0, 256, (8, 4, 84, 84), dtype=np.uint8)
    eager = Actor(net, 6).q_values(obs)
    compiled = Actor(net, 6, compile_mode="reduce-overhead")
    for _ in range(2):
        torch.testing.assert_close(compiled.q_values(obs), eager, rtol=1e-4, atol=1e-5)
    assert compiled.compile_mode == "reduce-overhead"
