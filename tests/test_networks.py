"""dqnfast.agent.networks: Nature CNN, MLP, dueling head, uint8 scaling, specs."""

from __future__ import annotations

import math

import pytest
import torch

from dqnfast.agent.networks import (
    DEAD_UNIT_LAYERS,
    MLP,
    NatureCNN,
    NetworkSpec,
    dead_units,
    dueling_aggregate,
    make_network,
    spec_for,
)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_nature_cnn_shapes_and_size():
    net = NatureCNN(4, 6)
    q = net(torch.zeros(5, 4, 84, 84, dtype=torch.uint8))
    assert q.shape == (5, 6) and q.dtype == torch.float32
    conv = (4 * 32 * 64 + 32) + (32 * 64 * 16 + 64) + (64 * 64 * 9 + 64)
    assert n_params(net) == conv + (3136 * 512 + 512) + (512 * 6 + 6)  # Mnih et al. 2015


def test_uint8_inputs_are_scaled_inside_the_network_and_floats_pass_as_is():
    torch.manual_seed(0)
    net = NatureCNN(4, 3)
    x = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    torch.testing.assert_close(net(x), net(x.float() / 255.0))
    mlp = MLP(4, 2, (8, 8))
    v = torch.randn(3, 4)
    lin1, lin2, lin3 = mlp.torso[1], mlp.head.advantage[0], mlp.head.advantage[2]
    manual = lin3(torch.relu(lin2(torch.relu(lin1(v)))))
    torch.testing.assert_close(mlp(v), manual)
    ram = torch.randint(0, 256, (3, 128), dtype=torch.uint8)
    mlp_ram = MLP(128, 4, (16,))
    torch.testing.assert_close(mlp_ram(ram), mlp_ram(ram.float() / 255.0))


def test_dueling_aggregation_is_mean_subtracted():
    v = torch.tensor([[1.0], [-2.0]])
    a = torch.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
    q = dueling_aggregate(v, a)
    torch.testing.assert_close(q, torch.tensor([[-1.0, 0.0, 4.0], [-3.0, -3.0, 0.0]]))  # V + A - mean(A)
    torch.testing.assert_close(q.mean(1, keepdim=True), v)


@pytest.mark.parametrize("net", [NatureCNN(4, 5, dueling=True), MLP(6, 5, (16, 16), dueling=True)])
def test_dueling_networks_combine_value_and_centred_advantage(net):
    torch.manual_seed(1)
    shape = (3, 4, 84, 84) if isinstance(net, NatureCNN) else (3, 6)
    x = torch.randint(0, 256, shape, dtype=torch.uint8)
    feats = net.torso(x.float() / 255.0)
    v, adv = net.head.value(feats), net.head.advantage(feats)
    assert v.shape == (3, 1) and adv.shape == (3, 5)
    torch.testing.assert_close(net(x), v + adv - adv.mean(1, keepdim=True))


def test_spec_for_picks_the_architecture():
    assert spec_for("auto", "pixels", (4, 84, 84), "uint8", 6).kind == "nature"
    assert spec_for("auto", "ram", (128,), "uint8", 6).kind == "mlp"
    s = spec_for("auto", "vector", (4,), "float32", 2, mlp_hidden=(64, 32), dueling=True)
    assert (s.kind, s.hidden, s.dueling) == ("mlp", [64, 32], True)
    with pytest.raises(ValueError, match="Nature CNN needs"):
        spec_for("nature", "ram", (128,), "uint8", 6)
    with pytest.raises(ValueError, match="unknown network"):
        spec_for("resnet", "pixels", (4, 84, 84), "uint8", 6)


def test_network_rebuilds_from_its_spec_dict():
    spec = NetworkSpec("nature", [4, 84, 84], "uint8", 4, dueling=True, hidden=[256])
    a, b = make_network(spec), make_network(spec.to_dict())
    b.load_state_dict(a.state_dict())
    x = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    torch.testing.assert_close(a(x), b(x))
    mlp = make_network(NetworkSpec("mlp", [128], "uint8", 3, hidden=[32, 32]))
    assert mlp(torch.zeros(2, 128, dtype=torch.uint8)).shape == (2, 3)


@pytest.mark.parametrize("dueling", [False, True])
def test_q_values_keep_float32_resolution_under_bf16_autocast(dueling):
    """Action values closer than one bf16 step (~0.001 at 0.2) still rank as in float32."""
    from dqnfast.agent.networks import QHead

    head = QHead(8, 16, 4, dueling=dueling)
    with torch.no_grad():
        for stream in [head.advantage] + ([head.value] if dueling else []):
            stream[-1].weight.zero_()
            stream[-1].bias.zero_()
        head.advantage[-1].bias.copy_(torch.tensor([0.2, 0.2003, 0.2006, 0.2009]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = head(torch.randn(5, 8))
    assert q.dtype == torch.float32
    assert (q.argmax(1) == 3).all()


def test_dead_units_report_each_conv_layer_and_the_hidden_layer_and_show_a_collapsed_layer():

    torch.manual_seed(0)
    net = NatureCNN(4, 6)
    obs = torch.randint(0, 256, (16, 4, 84, 84), dtype=torch.uint8)
    fresh = dead_units(net, obs)
    assert list(fresh) == list(DEAD_UNIT_LAYERS)
    assert all(0.0 <= v < 0.5 for v in fresh.values())  # a fresh network's units mostly fire
    with torch.no_grad():
        net.torso[4].bias.fill_(-1e3)  # conv3 never fires: collapsed
        net.torso[4].weight.zero_()
        net.torso[2].bias[:16].fill_(-1e3)  # a quarter of conv2's 64 channels never fire
        net.torso[2].weight[:16].zero_()
    dead = dead_units(net, obs)
    assert dead["conv3"] == 1.0 and dead["conv2"] == 0.25 and dead["conv1"] == fresh["conv1"]
    # the hidden layer now sees only zeros: a unit fires on every sample or on none, as its bias says
    want = float((net.head.advantage[0].bias <= 0).float().mean())
    assert dead["hidden"] == pytest.approx(want)


def test_dead_units_of_an_mlp_and_a_dueling_head():

    net = MLP(4, 2, (8, 16), dueling=True)
    with torch.no_grad():
        net.head.value[0].bias.fill_(-1e3)
        net.head.value[0].weight.zero_()
    dead = dead_units(net, torch.randn(32, 4))
    assert all(math.isnan(dead[k]) for k in ("conv1", "conv2", "conv3"))
    assert 0.5 <= dead["hidden"] <= 1.0  # the value stream's 16 of the 32 hidden units, at least
