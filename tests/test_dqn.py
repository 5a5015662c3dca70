"""dqnfast.agent.dqn: targets checked by hand, loss, clipping, target sync (checkpoints: test_checkpoint.py)."""

from __future__ import annotations

import copy
import types

import pytest
import torch
from torch import nn

from dqnfast.agent.dqn import Learner, make_optimizer, td_target, update_step
from dqnfast.agent.networks import NetworkSpec, make_network
from dqnfast.config import OptimConfig
from dqnfast.config.resolve import resolve_amp, resolve_compile, uses_cudagraphs


def linear(weights) -> nn.Linear:
    w = torch.tensor(weights, dtype=torch.float32)
    m = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        m.weight.copy_(w)
    return m


# A fixed batch whose double-DQN and max targets differ (see the hand computation below).
W_ONLINE = [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]
W_TARGET = [[2.0, 0.0], [0.0, 0.5], [1.0, 1.0]]
OBS = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
ACTION = torch.tensor([2, 1])
REWARD = torch.tensor([1.0, 0.5])
NEXT_OBS = torch.tensor([[1.0, 2.0], [3.0, 1.0]])
DISCOUNT = torch.tensor([0.99, 0.0])  # 2nd transition ends in a terminal: no bootstrap
# Q_online(s')  = [[1, 2, 1.5], [3, 1, 2]]   -> argmax a* = [1, 0]
# Q_target(s')  = [[2, 1, 3],   [6, .5, 4]]  -> max = [3, 6]; at a*: [1, 6]
# double y = [1 + .99 * 1, .5 + 0] = [1.99, .5];  max y = [1 + .99 * 3, .5] = [3.97, .5]
# Q_online(s, a) = [0.5, 1.0]
Y_DOUBLE = torch.tensor([1.99, 0.5])
Y_MAX = torch.tensor([3.97, 0.5])


def test_td_target_double_and_max_by_hand():
    q_next_t = linear(W_TARGET)(NEXT_OBS)
    q_next_o = linear(W_ONLINE)(NEXT_OBS)
    torch.testing.assert_close(td_target(REWARD, DISCOUNT, q_next_t, q_next_o), Y_DOUBLE)
    torch.testing.assert_close(td_target(REWARD, DISCOUNT, q_next_t), Y_MAX)


@pytest.mark.parametrize(
    "double, loss, expected_loss, y",
    [
        # huber: |d| > 1 -> |d| - 0.5, else d^2 / 2; d = q - y
        (True, "huber", ((1.49 - 0.5) + 0.5**2 / 2) / 2, Y_DOUBLE),
        (True, "mse", (1.49**2 + 0.5**2) / 2, Y_DOUBLE),
        (False, "huber", ((3.47 - 0.5) + 0.5**2 / 2) / 2, Y_MAX),
    ],
)
def test_update_step_matches_hand_computation(double, loss, expected_loss, y):
    online, target = linear(W_ONLINE), linear(W_TARGET)
    opt = torch.optim.SGD(online.parameters(), lr=0.1)
    before = online.weight.detach().clone()
    m = update_step(online, target, opt, OBS, ACTION, REWARD, NEXT_OBS, DISCOUNT, double=double, loss=loss)
    scalars = {k: v for k, v in m.items() if k != "td_abs"}  # td_abs: one |TD error| per sample
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 and not v.requires_grad for v in scalars.values())
    assert m["td_abs"].shape == (2,) and not m["td_abs"].requires_grad
    assert m["loss"].item() == pytest.approx(expected_loss, rel=1e-5)
    assert m["target_mean"].item() == pytest.approx(y.mean().item(), rel=1e-5)
    assert m["q_mean"].item() == pytest.approx(0.75)
    # the gradient step on the taken actions only: dL/dW[a] = mean-weighted dloss * s
    d = torch.tensor([0.5, 1.0]) - y
    g = torch.clamp(d, -1, 1) if loss == "huber" else d
    grad = torch.zeros(3, 2)
    grad[2] += g[0] / 2 * OBS[0] * (2 if loss == "mse" else 1)
    grad[1] += g[1] / 2 * OBS[1] * (2 if loss == "mse" else 1)
    torch.testing.assert_close(online.weight.detach(), before - 0.1 * grad)
    torch.testing.assert_close(target.weight.detach(), torch.tensor(W_TARGET))  # target untouched


def test_gradient_norm_clipping():
    online, target = linear(W_ONLINE), linear(W_TARGET)
    opt = torch.optim.SGD(online.parameters(), lr=1.0)
    before = online.weight.detach().clone()
    m = update_step(online, target, opt, OBS, ACTION, REWARD, NEXT_OBS, DISCOUNT, max_grad_norm=1e-3)
    assert m["grad_norm"].item() > 1e-3  # reported before clipping
    assert (online.weight.detach() - before).norm().item() == pytest.approx(1e-3, rel=1e-3)


def make_learner(period: int, tau: float) -> Learner:
    torch.manual_seed(0)
    online, target = nn.Linear(2, 3), nn.Linear(2, 3)
    target.load_state_dict(online.state_dict())
    opt = torch.optim.Adam(online.parameters(), lr=0.1)
    return Learner(online, target, opt, target_update_period=period, tau=tau, max_grad_norm=None)


BATCH = types.SimpleNamespace(obs=OBS, action=ACTION, reward=REWARD, next_obs=NEXT_OBS, discount=DISCOUNT)


def params(m: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in m.parameters()]


def test_target_network_changes_only_at_sync():
    lr = make_learner(period=3, tau=1.0)
    t0 = params(lr.target)
    for i in (1, 2):
        lr.update(BATCH)
        assert lr.num_updates == i
        for a, b in zip(params(lr.target), t0):
            torch.testing.assert_close(a, b)
        assert any(not torch.equal(a, b) for a, b in zip(params(lr.online), t0))
    lr.update(BATCH)  # 3rd update: hard copy
    assert lr.num_syncs == 1
    for a, b in zip(params(lr.target), params(lr.online)):
        torch.testing.assert_close(a, b)
    t1 = params(lr.target)
    lr.update(BATCH)
    for a, b in zip(params(lr.target), t1):
        torch.testing.assert_close(a, b)


def test_soft_target_update_with_tau():
    lr = make_learner(period=1, tau=0.25)
    t0 = params(lr.target)
    lr.update(BATCH)
    for t, old, new in zip(params(lr.target), t0, params(lr.online)):
        torch.testing.assert_close(t, 0.75 * old + 0.25 * new)


def test_make_optimizer_nature_rmsprop_and_adam():
    p = [nn.Parameter(torch.zeros(2))]
    rms = make_optimizer(p, OptimConfig(name="rmsprop", lr=2.5e-4, eps=0.01, alpha=0.95, centered=True))
    g = rms.param_groups[0]
    assert isinstance(rms, torch.optim.RMSprop)
    assert (g["lr"], g["alpha"], g["eps"], g["centered"]) == (2.5e-4, 0.95, 0.01, True)
    adam = make_optimizer(p, OptimConfig())
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["eps"] == 1e-8
    with pytest.raises(ValueError):
        make_optimizer(p, OptimConfig(name="sgd"))


def test_resolve_compile():
    assert resolve_compile("auto", "cpu") is None  # eager on the CPU
    assert resolve_compile("auto", "cuda") == "reduce-overhead"  # compiled + CUDA graphs on the GPU
    assert resolve_compile("true", "cpu") == "default" and resolve_compile(True, "cpu") == "default"
    assert resolve_compile("false", "cuda") is None and resolve_compile(False, "cuda") is None
    assert resolve_compile("max-autotune", "cuda") == "max-autotune"
    assert uses_cudagraphs("reduce-overhead") and not uses_cudagraphs("default") and not uses_cudagraphs(None)
    assert resolve_amp("none") is None and resolve_amp("bf16") is torch.bfloat16
    with pytest.raises(ValueError):
        resolve_amp("fp8")


def _cnn_and_batch(b: int = 8):
    torch.manual_seed(0)
    spec = NetworkSpec("nature", [4, 84, 84], "uint8", 4, hidden=[64])
    online, target = make_network(spec), make_network(spec)
    target.load_state_dict(online.state_dict())
    g = torch.Generator().manual_seed(1)
    batch = types.SimpleNamespace(
        obs=torch.randint(0, 256, (b, 4, 84, 84), dtype=torch.uint8, generator=g),
        next_obs=torch.randint(0, 256, (b, 4, 84, 84), dtype=torch.uint8, generator=g),
        action=torch.randint(0, 4, (b,), generator=g),
        reward=torch.rand(b, generator=g),
        discount=torch.full((b,), 0.99),
    )
    return online, target, batch


def test_bf16_autocast_update_tracks_fp32():
    """algo.amp=bf16: forward passes in bfloat16, loss and weights in float32, close to the fp32 update."""
    runs = {}
    for amp in (None, torch.bfloat16):
        online, target, batch = _cnn_and_batch()
        opt = torch.optim.Adam(online.parameters(), lr=1e-3)
        lr = Learner(online, target, opt, amp_dtype=amp, max_grad_norm=None)
        losses = [lr.update(batch)["loss"] for _ in range(3)]
        assert all(v.dtype == torch.float32 for v in losses)
        assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in online.parameters())
        runs[amp] = [v.item() for v in losses]
    assert runs[torch.bfloat16] == pytest.approx(runs[None], rel=0.05)
    assert runs[torch.bfloat16] != runs[None]  # bf16 really ran (its rounding shows in the loss)
    assert runs[None][2] < runs[None][0] and runs[torch.bfloat16][2] < runs[torch.bfloat16][0]


def test_compile_failure_falls_back_to_eager(caplog):
    """A compiler error in the first updates (CUDA graphs record on the second call): one warning,
    that update's half-done step rolled back, eager updates from then on."""
    online, target, batch = _cnn_and_batch()
    ref_online, ref_target, _ = _cnn_and_batch()
    ref = Learner(ref_online, ref_target, torch.optim.Adam(ref_online.parameters(), lr=1e-3), max_grad_norm=None)
    lr = Learner(online, target, torch.optim.Adam(online.parameters(), lr=1e-3), max_grad_norm=None)
    calls = []

    def flaky(*args):
        calls.append(1)
        if len(calls) == 2:
            args[2].step()  # a half-done step, rolled back
            raise RuntimeError("BackendCompilerFailed: no compiler\nsecond line")
        return lr._eager(*args)

    lr._step, lr._guarded_calls, lr.compile_mode = flaky, 3, "default"
    with caplog.at_level("WARNING", logger="dqnfast.agent.dqn"):
        got = [lr.update(batch)["loss"].item() for _ in range(4)]
    want = [ref.update(batch)["loss"].item() for _ in range(4)]
    assert calls == [1, 1] and lr.compile_mode is None and not lr.compiled
    assert got == pytest.approx(want, rel=1e-6)
    msgs = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(msgs) == 1 and "\n" not in msgs[0] and "algo.compile=false" in msgs[0]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_update_matches_eager(mode):
    """torch.compile (inductor on CPU: needs a C++ compiler; ~1 min) gives the same update.

    On the CPU reduce-overhead compiles the same code (CUDA graphs apply to CUDA tensors
    only), so this checks the graphed path's plumbing (mark_step_begin, output copies).
    """
    results = []
    for compile in (None, mode):
        online, target, batch = _cnn_and_batch()
        lr = Learner(online, target, torch.optim.Adam(online.parameters(), lr=1e-3), compile=compile)
        results.append([lr.update(batch)["loss"].item() for _ in range(3)])
        assert lr.compile_mode == compile  # no silent fallback to eager
    assert results[0] == pytest.approx(results[1], rel=1e-4)


def test_make_optimizer_runs_the_fused_adam_and_foreach_rmsprop_when_eager_on_the_cpu():
    """torch's CPU default loops over the tensors; eager CPU updates get the fused kernel, compiled ones
    leave the step to torch.compile."""
    p = [nn.Parameter(torch.zeros(2))]
    assert make_optimizer(p, OptimConfig(), device="cpu").param_groups[0]["fused"] is True
    assert make_optimizer(p, OptimConfig(name="rmsprop"), device="cpu").param_groups[0]["foreach"] is True
    assert not make_optimizer(p, OptimConfig(), device="cpu", compile_mode="default").param_groups[0]["fused"]


def test_fused_adam_resumes_bit_identically():
    """A learner restored from another's state_dict (fused Adam on the CPU) continues exactly as the
    uninterrupted one: same losses, same weights, to the bit."""
    cfg = OptimConfig(lr=1e-3)

    def learner():
        online, target, batch = _cnn_and_batch()
        return Learner(online, target, make_optimizer(online.parameters(), cfg), max_grad_norm=10.0), batch

    ref, batch = learner()
    for _ in range(2):
        ref.update(batch)
    resumed, _ = learner()
    resumed.load_state_dict(copy.deepcopy(ref.state_dict()))  # as from a file: no tensor shared
    assert resumed.optimizer.param_groups[0]["fused"] is True
    want = [ref.update(batch)["loss"].item() for _ in range(2)]
    got = [resumed.update(batch)["loss"].item() for _ in range(2)]
    assert got == want
    assert all(torch.equal(a, b) for a, b in zip(params(ref.online), params(resumed.online)))


class _Recorder(nn.Module):
    """Wraps a network; records, per forward, (grad enabled, autocast enabled, input in NHWC)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        nhwc = obs.dim() == 4 and obs.is_contiguous(memory_format=torch.channels_last) and not obs.is_contiguous()
        self.calls.append((torch.is_grad_enabled(), torch.is_autocast_enabled("cpu"), nhwc))
        return self.net(obs)


def test_bf16_nograd_autocasts_only_the_forwards_without_gradient_and_channels_last_only_the_gradient_one():
    online, target, batch = _cnn_and_batch()
    on, tg = _Recorder(online), _Recorder(target)
    opt = torch.optim.Adam(online.parameters(), lr=1e-3)
    args = (batch.obs, batch.action, batch.reward, batch.next_obs, batch.discount)
    update_step(on, tg, opt, *args, nograd_amp_dtype=torch.bfloat16, channels_last=True)
    # the double-DQN argmax (no grad, bf16, NCHW), then the gradient forward (fp32, NHWC); the target: no grad, bf16
    assert on.calls == [(False, True, False), (True, False, True)]
    assert tg.calls == [(False, True, False)]


def test_channels_last_and_bf16_nograd_keep_the_update_close_to_the_plain_one():
    """Same maths: NHWC changes the rounding only; bf16 in the target's forward a little more."""
    losses = {}
    for opts in ({}, {"channels_last": True}, {"nograd_amp_dtype": torch.bfloat16}):
        online, target, batch = _cnn_and_batch()
        lr = Learner(online, target, torch.optim.Adam(online.parameters(), lr=1e-3), max_grad_norm=None, **opts)
        losses[tuple(opts)] = [lr.update(batch)["loss"].item() for _ in range(3)]
    assert losses[("channels_last",)] == pytest.approx(losses[()], rel=1e-4)
    assert losses[("nograd_amp_dtype",)] == pytest.approx(losses[()], rel=0.05)
    assert losses[("nograd_amp_dtype",)] != losses[()]  # bf16 really ran
