"""dqnfast.config: every choice stored as its Enum member, and a run's settings resolved once.

``validate`` parses each choice once; ``resolve`` (through ``training.check_config``) makes the
game, observations, network, device, threads, precision and compile mode concrete, and the
parts of a run take them from its ``Resolved`` instead of resolving them again.
"""

from __future__ import annotations

import dataclasses
import sys
from collections import Counter

import pytest
import torch

import dqnfast.config.resolve as resolve_module
import dqnfast.envs as envs_module
from dqnfast import hardware
from dqnfast.agent.networks import NetworkSpec, check_fits, make_network, network_kind, parameter_count
from dqnfast.config import Config, ConfigError, validate
from dqnfast.config.schema import (
    Amp,
    AutoBool,
    Baseline,
    ChannelsLast,
    CompileMode,
    EnvResume,
    LearnerName,
    Loss,
    NetworkName,
    ObsKind,
    OptimName,
    PolicyKind,
    Schedule,
    Storage,
    WandbMode,
)
from dqnfast.hardware import CpuFeatures
from dqnfast.training import check_config, train

CHOICES = {
    "obs": ObsKind,
    "learner": LearnerName,
    "envs.resume": EnvResume,
    "algo.loss": Loss,
    "algo.compile": CompileMode,
    "algo.amp": Amp,
    "network.name": NetworkName,
    "replay.pin_memory": AutoBool,
    "replay.storage": Storage,
    "optim.name": OptimName,
    "explore.schedule": Schedule,
    "reinforce.policy": PolicyKind,
    "reinforce.baseline": Baseline,
    "logger.wandb_mode": WandbMode,
}


def _get(cfg: Config, key: str):
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _set(cfg: Config, key: str, value) -> None:
    *path, last = key.split(".")
    obj = cfg
    for part in path:
        obj = getattr(obj, part)
    setattr(obj, last, value)


def test_validate_stores_every_choice_as_its_enum_member():
    cfg = Config(game="CartPole")
    given = {key: str(_get(cfg, key)).upper() for key in CHOICES}  # any case, as the command line takes it
    given["algo.compile"] = False  # YAML and Hydra read false as a boolean
    for key, value in given.items():
        _set(cfg, key, value)
    validate(cfg)
    for key, kind in CHOICES.items():
        assert type(_get(cfg, key)) is kind, key
    assert cfg.algo.compile is CompileMode.false and cfg.replay.pin_memory is AutoBool.auto


@pytest.mark.parametrize(
    "game, obs, task_id, family, obs_kind, network",
    [
        ("CartPole", "pixels", "CartPole-v1", "classic", "vector", NetworkName.mlp),
        ("pong", "pixels", "Pong-v5", "atari", "pixels", NetworkName.nature),
        ("Pong-v5", "ram", "Pong-v5", "atari", "ram", NetworkName.mlp),
        ("StarpilotEasy-v0", "pixels", "StarpilotEasy-v0", "envpool_image", "image", NetworkName.nature),
    ],
)
def test_check_config_resolves_the_game_observations_and_network(game, obs, task_id, family, obs_kind, network):
    r = check_config(Config(game=game, obs=obs, device="cpu"))
    assert (r.task_id, r.family, r.obs_kind, r.network) == (task_id, family, obs_kind, network)
    assert r.game == (task_id, family) and r.device == torch.device("cpu") and r.compile_mode is None
    assert r.amp_dtype is None and not r.pin_memory and not r.frames_on_device


def test_a_network_that_cannot_take_the_observations_is_refused_by_the_resolution():
    with pytest.raises(ConfigError) as e:
        check_config(Config(game="CartPole", network=dataclasses.replace(Config().network, name="nature")))
    assert e.value.key == "network.name" and "Nature CNN needs stacked pixel observations" in str(e.value)


def test_the_auto_rule_and_the_parameter_count_come_from_the_networks_themselves():
    assert network_kind("auto", "pixels") is NetworkName.nature
    assert network_kind(NetworkName.auto, "ram") is network_kind("auto", "vector") is NetworkName.mlp
    assert network_kind("nature", "vector") is NetworkName.nature  # the fit is check_fits' to refuse
    # images: the Nature CNN from 36x36 (Procgen's 64x64), small ones (MinAtar's 10x10) flattened into the MLP
    assert (
        network_kind("auto", "image", (3, 64, 64)) is network_kind("auto", "image", (1, 36, 40)) is NetworkName.nature
    )
    assert network_kind("auto", "image", (4, 10, 10)) is network_kind("auto", "image", (3, 35, 64)) is NetworkName.mlp
    assert network_kind("auto", "image") is NetworkName.mlp  # size not known
    check_fits(NetworkName.nature, "image", (3, 64, 64))
    with pytest.raises(ValueError, match="Nature CNN needs images of at least 36x36, got image of shape"):
        check_fits(NetworkName.nature, "image", (4, 10, 10))
    for spec in (
        NetworkSpec("nature", [4, 84, 84], "uint8", 18, dueling=True, hidden=[512]),
        NetworkSpec("nature", [16, 84, 84], "uint8", 6, hidden=[64]),
        NetworkSpec("mlp", [128], "uint8", 18, dueling=True, hidden=[256, 256]),
    ):
        assert parameter_count(spec) == sum(p.numel() for p in make_network(spec).parameters())


def _counting(calls: Counter, name: str, fn):
    """``fn``, counting its calls by the function of dqnfast outside ``dqnfast.config`` that made them."""

    def counted(*args, **kwargs):
        frame = sys._getframe(1)
        while frame is not None and "/dqnfast/config/" in frame.f_code.co_filename.replace("\\", "/"):
            frame = frame.f_back
        calls[(name, frame.f_code.co_name if frame is not None else "?")] += 1
        return fn(*args, **kwargs)

    return counted


def test_a_run_resolves_its_game_and_device_once_per_resolution(tmp_path, monkeypatch):
    """A tiny training run through the Python API, with the two resolutions counted where they are looked up."""
    from test_training import cartpole

    calls: Counter = Counter()
    monkeypatch.setattr(envs_module, "resolve_game", _counting(calls, "resolve_game", envs_module.resolve_game))
    monkeypatch.setattr(
        resolve_module, "resolve_device", _counting(calls, "resolve_device", resolve_module.resolve_device)
    )
    cfg = cartpole(400)
    cfg = dataclasses.replace(
        cfg,
        algo=dataclasses.replace(cfg.algo, learning_starts=200),
        envs=dataclasses.replace(cfg.envs, eval=dataclasses.replace(cfg.envs.eval, episodes=2, num_envs=2)),
    )
    summary = train(cfg, tmp_path / "run")
    assert summary["env_steps"] >= 400 and summary["eval"]["episodes"] == 2
    # check_config resolves the config once, and everything after it -- the memory budget, the envs,
    # the networks, the final evaluation of both its agents -- takes the game and the device from what
    # it resolved
    assert calls == Counter({("resolve_game", "check_config"): 1, ("resolve_device", "check_config"): 1})


# ------------------------------------------------------------ what the CPU offers
AVX512_BF16 = CpuFeatures(
    model="AMD EPYC",
    flags=frozenset({"avx2", "avx512f", "avx512bw", "avx512_bf16"}),
    torch_capability="AVX512",
    onednn_bf16=True,
)
AVX2 = CpuFeatures(model="AMD EPYC 7B13", flags=frozenset({"avx2"}), torch_capability="AVX2", onednn_bf16=False)
SSE = CpuFeatures(model="old", flags=frozenset({"sse4_2"}), torch_capability="DEFAULT", onednn_bf16=False)


def _cpu_run(monkeypatch, cpu: CpuFeatures, cores: int = 2, **algo):
    """check_config of a CPU Pong run on a CPU faked as ``cpu`` with ``cores`` cores."""
    monkeypatch.setattr(hardware, "probe", lambda: cpu)
    monkeypatch.setattr(resolve_module, "available_cores", lambda: cores)
    return check_config(Config(game="Pong", device="cpu", algo=dataclasses.replace(Config().algo, **algo)))


def test_channels_last_auto_follows_the_cpu_the_network_and_the_precision(monkeypatch):
    rcl = resolve_module.resolve_channels_last
    assert rcl("auto", "cpu", "nature", "none", AVX512_BF16) == ChannelsLast.train
    assert rcl("auto", "cpu", "nature", "bf16_nograd", AVX512_BF16) == ChannelsLast.train  # fp32 gradient forward
    assert rcl("auto", "cpu", "nature", "bf16", AVX512_BF16) == ChannelsLast.false
    assert rcl("auto", "cpu", "nature", "none", AVX2) == ChannelsLast.train
    assert rcl("auto", "cpu", "nature", "none", SSE) == ChannelsLast.false  # not measured faster there
    assert rcl("auto", "cuda", "nature", "none", AVX512_BF16) == ChannelsLast.false
    assert rcl("auto", "cpu", "mlp", "none", AVX512_BF16) == ChannelsLast.false
    assert rcl("true", "cpu", "mlp", "none", AVX512_BF16) == ChannelsLast.false  # no convolutions
    assert rcl(True, "cuda", "nature", "bf16", AVX2) == ChannelsLast.true  # a library caller's bool
    assert _cpu_run(monkeypatch, AVX512_BF16, total_steps=300_000).channels_last == ChannelsLast.train


@pytest.mark.parametrize("amp", ["bf16", "bf16_nograd"])
def test_bf16_on_a_cpu_without_native_bf16_is_refused_in_one_line(monkeypatch, amp):
    with pytest.raises(ConfigError) as e:
        _cpu_run(monkeypatch, AVX2, amp=amp)
    msg = str(e.value)
    assert e.value.key == "algo.amp" and "\n" not in msg
    assert "AMD EPYC 7B13" in msg and "algo.amp=none" in msg and "slower" in msg
    r = _cpu_run(monkeypatch, AVX512_BF16, amp=amp)  # native: accepted
    assert r.nograd_amp_dtype is torch.bfloat16 and r.amp_dtype is (torch.bfloat16 if amp == "bf16" else None)


def test_the_cpu_start_up_line_names_the_cpu_and_each_choice_with_its_reason(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("GOMP_SPINCOUNT", "1000")  # what the command lines set before torch loads
    r = _cpu_run(monkeypatch, AVX512_BF16, total_steps=300_000)
    assert r.torch_threads == 2
    assert r.cpu_line == (
        "cpu: AMD EPYC, AVX-512, native bf16; torch 2 threads (every core: OpenMP's spin-wait is short "
        "(GOMP_SPINCOUNT=1000), so a core another process takes costs little), fp32 (bf16 is "
        "opt-in: algo.amp=bf16_nograd), eager (compiling was measured no faster than the fused eager update on a "
        "CPU), "
        "channels_last for the gradient forward (faster with AVX-512)"
    )
    r = _cpu_run(monkeypatch, AVX2, cores=16, compile="true")
    assert r.cpu_line == (
        "cpu: AMD EPYC 7B13, AVX2, no native bf16; torch 8 threads (half of the 16 cores: envpool steps on the "
        "rest), fp32, compiled, mode default (algo.compile=true), channels_last for the gradient forward "
        "(faster with AVX2)"
    )
    monkeypatch.setattr(resolve_module, "available_cores", lambda: 2)
    cartpole = check_config(Config(game="CartPole", device="cpu"))  # an MLP: half the cores, spin or not
    assert cartpole.torch_threads == 1
    assert "torch 1 thread (half of the 2 cores: envpool steps on the rest; a mlp network's update is too small" in (
        cartpole.cpu_line
    )
    monkeypatch.delenv("GOMP_SPINCOUNT")  # torch loaded with libgomp's long spin (a library caller's process)
    r = _cpu_run(monkeypatch, AVX2)
    assert r.torch_threads == 1
    assert "torch 1 thread (half of the 2 cores: OpenMP's spin-wait is long (libgomp's default)" in r.cpu_line
    assert "set GOMP_SPINCOUNT=1000 before starting Python to use them all" in r.cpu_line
    monkeypatch.setattr(hardware, "probe", lambda: AVX2)
    mlp = check_config(Config(game="CartPole", device="cpu", torch_threads=1))
    assert mlp.cpu_line.endswith(
        "torch 1 thread (torch_threads), fp32, eager (compiling was measured no faster than the fused eager update "
        "on a CPU)"
    )  # an MLP: no layout
