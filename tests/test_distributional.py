"""C51's projection against hand-computed cases, its loss, the distributional head, and noisy layers' statistics."""

from __future__ import annotations

import math

import pytest
import torch

from dqnfast.agent.distributional import (
    DistributionalHead,
    c51_loss,
    c51_update_step,
    make_support,
    project_distribution,
    q_values,
)
from dqnfast.agent.noisy import NoisyLinear, resample_noise


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors: one thread is fastest, and on a busy machine spinning threads cost seconds."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# five atoms at -2, -1, 0, 1, 2 (delta 1): small enough to project by hand
Z = make_support(-2.0, 2.0, 5)


def _project(probs, reward, discount):
    return project_distribution(torch.tensor([probs]), torch.tensor([reward]), torch.tensor([discount]), Z)[0]


def test_the_support_is_evenly_spaced_and_refuses_an_empty_range():
    assert Z.tolist() == [-2.0, -1.0, 0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="v_min < v_max"):
        make_support(1.0, 1.0, 51)
    with pytest.raises(ValueError, match="v_min < v_max"):
        make_support(2.0, -2.0, 51)
    with pytest.raises(ValueError, match="at least 2 atoms"):
        make_support(-1.0, 1.0, 1)


def test_a_terminal_transition_puts_all_mass_around_its_reward():
    # discount 0: every atom lands on r = 0.25, split 3/4 to z=0 and 1/4 to z=1
    out = _project([0.1, 0.2, 0.3, 0.2, 0.2], 0.25, 0.0)
    assert torch.allclose(out, torch.tensor([0.0, 0.0, 0.75, 0.25, 0.0]))
    # a reward on a support point gives that point everything
    assert torch.allclose(_project([0.2] * 5, 1.0, 0.0), torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0]))


def test_gamma_zero_and_identity_shift():
    p = [0.1, 0.2, 0.3, 0.25, 0.15]
    # r = 0, discount 1: Tz = z, the projection is the identity
    assert torch.allclose(_project(p, 0.0, 1.0), torch.tensor(p))
    # r = 1, discount 1: shifted one atom up; the top atom's mass piles on v_max with the clipped one
    assert torch.allclose(_project(p, 1.0, 1.0), torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4]))


def test_mass_beyond_the_edges_is_clipped_onto_them():
    p = [0.2, 0.2, 0.2, 0.2, 0.2]
    assert torch.allclose(_project(p, 10.0, 0.9), torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0]))
    assert torch.allclose(_project(p, -10.0, 0.9), torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0]))


def test_an_n_step_discount_shrinks_the_distribution_by_hand():
    # discount 0.5 (gamma^n), r = 0.5: Tz = 0.5 + 0.5 z = [-0.5, 0, 0.5, 1, 1.5]
    p = [0.1, 0.2, 0.3, 0.25, 0.15]
    # -0.5: half to -1, half to 0; 0: all to 0; 0.5: half to 0, half to 1; 1: all to 1; 1.5: half to 1, half to 2
    want = [0.0, 0.05, 0.05 + 0.2 + 0.15, 0.15 + 0.25 + 0.075, 0.075]
    assert torch.allclose(_project(p, 0.5, 0.5), torch.tensor(want))


def test_the_projection_keeps_mass_and_batches_rows_independently():
    g = torch.Generator().manual_seed(0)
    support = make_support(-10.0, 10.0, 51)
    probs = torch.softmax(torch.randn(64, 51, generator=g), dim=1)
    reward = torch.randn(64, generator=g) * 3
    discount = torch.where(torch.rand(64, generator=g) < 0.2, 0.0, 0.99**3)
    out = project_distribution(probs, reward, discount, support)
    assert torch.allclose(out.sum(dim=1), torch.ones(64), atol=1e-5)
    assert (out >= 0).all()
    # the mean moves as the Bellman operator says, where nothing was clipped at the edges
    inside = (reward.abs() + discount * 10 < 10).nonzero().flatten()
    want = reward[inside] + discount[inside] * (probs[inside] * support).sum(1)
    assert torch.allclose((out[inside] * support).sum(1), want, atol=1e-4)
    one = project_distribution(probs[3:4], reward[3:4], discount[3:4], support)
    assert torch.equal(one[0], out[3])


def test_the_loss_is_the_cross_entropy_and_zero_gradient_at_the_target():
    target = torch.tensor([[0.0, 0.25, 0.75, 0.0, 0.0]])
    logits = torch.zeros(1, 5, requires_grad=True)
    loss = c51_loss(torch.log_softmax(logits, dim=1), target)
    assert math.isclose(loss.item(), math.log(5), rel_tol=1e-6)
    at_target = torch.log(target.clamp_min(1e-12)).requires_grad_(True)
    c51_loss(torch.log_softmax(at_target, dim=1), target).sum().backward()
    assert at_target.grad.abs().max() < 1e-6


@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("noisy", [False, True])
def test_the_head_gives_a_distribution_per_action(dueling, noisy):
    torch.manual_seed(0)
    head = DistributionalHead(16, 32, num_actions=3, atoms=51, dueling=dueling, noisy=noisy)
    resample_noise(head, torch.Generator().manual_seed(1))
    logits = head(torch.randn(4, 16))
    assert logits.shape == (4, 3, 51) and logits.dtype == torch.float32
    probs = torch.softmax(logits, dim=-1)
    q = q_values(probs, make_support(-10.0, 10.0, 51))
    assert q.shape == (4, 3) and (q.abs() <= 10).all()
    assert sum(isinstance(m, NoisyLinear) for m in head.modules()) == (4 if dueling else 2) * noisy


def test_noisy_layers_initialise_and_draw_factorised_noise_as_the_paper_says():
    torch.manual_seed(0)
    layer = NoisyLinear(400, 300, sigma0=0.5)
    bound = 1 / math.sqrt(400)
    assert layer.weight_mu.abs().max() <= bound
    assert torch.allclose(layer.weight_sigma, torch.full((300, 400), 0.5 * bound))
    g = torch.Generator().manual_seed(3)
    draws = []
    for _ in range(200):
        layer.resample(g)
        draws.append(layer.bias_eps.clone())
    # factorised: the weight noise is the outer product of the bias noise (the output factor) and an input factor
    e_in = layer.weight_eps[0] / layer.bias_eps[0]
    assert torch.allclose(layer.weight_eps, torch.outer(layer.bias_eps, e_in), atol=1e-6)
    e = torch.stack(draws)
    # f(x) = sign(x) sqrt(|x|) of a standard normal: mean 0, E[f(x)^2] = E|x| = sqrt(2/pi)
    assert abs(e.mean().item()) < 0.02
    assert abs((e**2).mean().item() - math.sqrt(2 / math.pi)) < 0.02


def test_noise_follows_the_generator_and_eval_mode_uses_the_mean_weights():
    torch.manual_seed(0)
    a, b = NoisyLinear(8, 4), NoisyLinear(8, 4)
    b.load_state_dict(a.state_dict())
    assert resample_noise(a, torch.Generator().manual_seed(7)) == 1
    resample_noise(b, torch.Generator().manual_seed(7))
    x = torch.randn(5, 8)
    assert torch.equal(a(x), b(x))  # the same seed, the same noise: runs repeat exactly
    resample_noise(b, torch.Generator().manual_seed(8))
    assert not torch.equal(a(x), b(x))
    a.eval()
    assert torch.equal(a(x), torch.nn.functional.linear(x, a.weight_mu, a.bias_mu))
    # the noise is part of the saved state: a restored layer continues with it
    c = NoisyLinear(8, 4)
    c.load_state_dict(b.state_dict())
    assert torch.equal(c(x), b(x))
    assert resample_noise(torch.nn.Linear(2, 2)) == 0


def _toy_net(atoms: int = 11, actions: int = 2, noisy: bool = False) -> torch.nn.Module:
    from dqnfast.agent.networks import MLP, HeadOptions

    head = HeadOptions(dueling=True, atoms=atoms, v_min=-5.0, v_max=5.0, noisy=noisy)
    return MLP(3, actions, hidden=(16,), head=head)


def test_the_c51_update_learns_a_two_state_chain_and_reports_dqn_metrics():
    """s0 --a--> terminal with reward 1 (a=0) or -1 (a=1): the distributions collapse on +1 and -1 and
    Q(s0) orders the actions; every metric the DQN update gives is there, td_abs per sample."""
    torch.manual_seed(0)
    online, target = _toy_net(), _toy_net()
    target.load_state_dict(online.state_dict())
    opt = torch.optim.Adam(online.parameters(), lr=1e-2)
    obs = torch.zeros(8, 3)
    action = torch.tensor([0, 1] * 4)
    reward = torch.where(action == 0, 1.0, -1.0)
    discount = torch.zeros(8)
    first = None
    for _ in range(300):
        m = c51_update_step(online, target, opt, obs, action, reward, obs, discount, double=True, max_grad_norm=10.0)
        first = first if first is not None else m["loss"].item()
    assert set(m) == {"loss", "q_mean", "target_mean", "grad_norm", "td_abs"}
    assert m["td_abs"].shape == (8,) and m["loss"].item() < 0.05 < first
    q = online(obs[:1])[0]
    assert abs(q[0].item() - 1.0) < 0.1 and abs(q[1].item() + 1.0) < 0.1
    assert abs(m["target_mean"].item()) < 1e-5  # +1 and -1 in equal numbers


def test_importance_weights_scale_each_samples_loss():
    torch.manual_seed(0)
    net = _toy_net()
    obs, action = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    reward, discount = torch.tensor([1.0, 0.0, -1.0, 2.0]), torch.full((4,), 0.9)
    losses = []
    for weight in (None, torch.ones(4), torch.tensor([2.0, 0.0, 0.0, 0.0])):
        n = _toy_net()
        n.load_state_dict(net.state_dict())
        opt = torch.optim.SGD(n.parameters(), lr=0.0)
        m = c51_update_step(n, n, opt, obs, action, reward, obs, discount, weight)
        losses.append((m["loss"].item(), m["td_abs"]))
    assert math.isclose(losses[0][0], losses[1][0], rel_tol=1e-6)
    assert math.isclose(losses[2][0], 2.0 * losses[0][1][0].item() / 4, rel_tol=1e-5)


@pytest.mark.parametrize(
    "override, key, message",
    [
        (dict(atoms=1), "algo.atoms", "must be an integer in [2, 1001], got 1"),
        (dict(atoms=5100), "algo.atoms", "must be an integer in [2, 1001]"),
        (dict(v_min=5.0, v_max=5.0), "algo.v_min", "the support needs finite v_min < v_max, got v_min=5.0, v_max=5.0"),
        (dict(v_min=float("nan")), "algo.v_min", "finite v_min < v_max"),
        (dict(distributional="c52"), "algo.distributional", "choose one of none, c51"),
    ],
)
def test_a_broken_distributional_config_is_one_line_naming_the_key(override, key, message):
    from dqnfast.config import AlgoConfig, Config, ConfigError, validate

    with pytest.raises(ConfigError) as e:
        validate(Config(game="CartPole", algo=AlgoConfig(**{"distributional": "c51", **override})))
    assert e.value.key == key and message in str(e.value) and "\n" not in str(e.value)


def test_noisy_sigma0_must_not_be_negative():
    from dqnfast.config import Config, ConfigError, NetworkConfig, validate

    with pytest.raises(ConfigError, match="network.noisy_sigma0.*must be >= 0"):
        validate(Config(game="CartPole", network=NetworkConfig(noisy=True, noisy_sigma0=-0.5)))


def test_a_c51_network_from_its_spec_gives_q_values_and_logits_and_evaluates_without_noise():
    from dqnfast.agent.networks import HeadOptions, make_network, spec_for

    spec = spec_for(
        "auto", "vector", (4,), "float32", 2, head=HeadOptions(dueling=True, atoms=21, v_max=50.0, noisy=True)
    )
    net = make_network(spec.to_dict())
    obs = torch.randn(3, 4)
    assert net(obs).shape == (3, 2) and net.logits(obs).shape == (3, 2, 21)
    assert net.support[-1].item() == 50.0
    resample_noise(net, torch.Generator().manual_seed(0))
    noisy_q = net(obs)
    net.eval()
    mean_q = net(obs)
    assert not torch.equal(noisy_q, mean_q)
    resample_noise(net, torch.Generator().manual_seed(1))
    assert torch.equal(net(obs), mean_q)  # eval mode: the mean weights, whatever the noise
