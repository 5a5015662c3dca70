"""Q-networks: the Nature CNN (Mnih et al. 2015), MinAtar's small CNN (Young & Tian 2019), an MLP,
and the dueling head.

Every network maps observations to Q-values ``float32[B, num_actions]``. Inputs stay
in their stored dtype until the network scales them: uint8 inputs (Atari pixels
``uint8[B, 4, 84, 84]``, Atari RAM ``uint8[B, 128]``) are divided by 255 inside
``forward``; float inputs (classic-control vectors ``float32[B, d]``) are used as is.
So the replay ring and the actor hand over raw uint8 tensors (4x less to copy to the
GPU than float32).

A network is described by a ``NetworkSpec`` (plain data, saved in checkpoints) and
built by ``make_network(spec)``; ``spec_for`` picks the architecture from the config
(``network_kind``: the ``auto`` rule).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from dqnfast.agent.common import fp32_output
from dqnfast.agent.distributional import DistributionalHead, make_support, q_values
from dqnfast.agent.noisy import NoisyLinear
from dqnfast.config.schema import NetworkName, ObsKind

__all__ = [
    "HeadOptions",
    "MLP",
    "MinAtarCNN",
    "NatureCNN",
    "NetworkSpec",
    "QHead",
    "DEAD_UNIT_LAYERS",
    "check_fits",
    "dead_units",
    "dueling_aggregate",
    "make_network",
    "network_kind",
    "parameter_count",
    "spec_for",
]


def dueling_aggregate(value: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
    """Q = V + A - mean_a A (Wang et al. 2016, eq. 9).

    value: float[B, 1]; advantage: float[B, A] -> float[B, A].
    """
    return value + advantage - advantage.mean(dim=1, keepdim=True)


def _scale(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1]; float inputs pass through (as float32)."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


class QHead(nn.Module):
    """features float[B, F] -> Q float[B, A] through one hidden layer of width ``hidden``.

    Plain: Linear(F, hidden) ReLU Linear(hidden, A). Dueling: a value stream and an
    advantage stream of that shape (output 1 and A), combined by ``dueling_aggregate``.

    The output layers always run in float32, also under bf16 autocast: bf16 keeps 8
    significant bits, so early in training, when the actions' values differ by less than
    one bf16 step (about 0.001 at Q = 0.2), the greedy argmax sees ties and takes the
    first action. Those layers are 512 x A multiply-adds, nothing next to the torso.
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        num_actions: int,
        dueling: bool = False,
        *,
        noisy: bool = False,
        sigma0: float = 0.5,
    ) -> None:
        super().__init__()
        self.dueling = dueling

        def linear(i: int, o: int) -> nn.Module:
            return NoisyLinear(i, o, sigma0) if noisy else nn.Linear(i, o)

        self.advantage = nn.Sequential(linear(in_features, hidden), nn.ReLU(), linear(hidden, num_actions))
        self.value = nn.Sequential(linear(in_features, hidden), nn.ReLU(), linear(hidden, 1)) if dueling else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        adv = fp32_output(self.advantage, features)
        if self.value is None:
            return adv
        return dueling_aggregate(fp32_output(self.value, features), adv)


# The layers whose dead ReLU units a metric row reports (``dead_units``): the Nature CNN's three
# convolutions and the head's hidden layer (an MLP's last hidden layer; its conv entries are nan).
DEAD_UNIT_LAYERS = ("conv1", "conv2", "conv3", "hidden")


@torch.no_grad()
def dead_units(net: nn.Module, obs: torch.Tensor) -> dict[str, float]:
    """The fraction of each layer's ReLU units that output 0 for every sample of ``obs`` (a batch), by
    ``DEAD_UNIT_LAYERS`` name; nan for a layer the network does not have.

    A convolution's unit is a channel (0 at every position of every sample); the hidden layer's units are
    its neurons (a dueling head's value and advantage streams together). A unit that is 0 on a whole batch
    gets no gradient from it: a layer at 1.0 passes nothing on, and the network's output no longer depends
    on its input. One forward of the batch through the layers in turn (no hooks, so a compiled update is
    left as it was); the output layers are not run. obs: as the network takes it (uint8[B, 4, 84, 84], ...).
    """
    dead: dict[str, list[float]] = {}
    x = _scale(obs)
    convs = 0
    last = None
    for layer in net.torso:
        x = layer(x)
        if isinstance(layer, nn.Conv2d):
            convs += 1
            last = f"conv{convs}"
        elif isinstance(layer, nn.ReLU) and last is not None and last.startswith("conv"):
            alive = x.amax(dim=(0, 2, 3)) > 0
            dead[last] = [float((~alive).sum()), float(alive.numel())]
    streams = [s for s in (net.head.advantage, getattr(net.head, "value", None)) if s is not None]
    counts = [0.0, 0.0]
    for stream in streams:
        h = x
        for layer in stream:
            h = layer(h)
            if isinstance(layer, nn.ReLU):
                alive = h.amax(dim=0) > 0
                counts[0] += float((~alive).sum())
                counts[1] += float(alive.numel())
                break
    if counts[1]:
        dead["hidden"] = counts
    return {k: (dead[k][0] / dead[k][1] if k in dead else float("nan")) for k in DEAD_UNIT_LAYERS}


def _flat_size(torso: nn.Sequential, image_size: tuple[int, int]) -> int:
    """Features the convolutions of ``torso`` give for one ``image_size`` image, from their kernels and
    strides (no padding): 3136 for the Nature CNN at 84x84. No forward pass, so a network builds on
    the meta device too (``parameter_count``)."""
    h, w = image_size
    channels = 0
    for layer in torso:
        if isinstance(layer, nn.Conv2d):
            (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
            h, w, channels = (h - kh) // sh + 1, (w - kw) // sw + 1, layer.out_channels
    return channels * h * w


@dataclass(frozen=True)
class HeadOptions:
    """What sits on a torso: a plain or dueling Q head, or C51's distributional head (``atoms`` > 0,
    the support [v_min, v_max]); ``noisy``: the head's linear layers are noisy (sigma0)."""

    dueling: bool = False
    atoms: int = 0
    v_min: float = -10.0
    v_max: float = 10.0
    noisy: bool = False
    sigma0: float = 0.5


class _QNetwork(nn.Module):
    """A torso and a head: ``forward(obs)`` gives Q float32[B, A] for every head (a distributional head's
    Q is its distribution's mean), ``logits(obs)`` a distributional head's float32[B, A, N]."""

    torso: nn.Module
    atoms: int = 0

    def _set_head(self, width: int, hidden: int, num_actions: int, opts: HeadOptions) -> None:
        self.atoms = int(opts.atoms)
        if self.atoms:
            self.head = DistributionalHead(
                width, hidden, num_actions, self.atoms, dueling=opts.dueling, noisy=opts.noisy, sigma0=opts.sigma0
            )
            self.register_buffer("support", make_support(opts.v_min, opts.v_max, self.atoms))
        else:
            self.head = QHead(width, hidden, num_actions, opts.dueling, noisy=opts.noisy, sigma0=opts.sigma0)

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(_scale(obs)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.head(self.torso(_scale(obs)))
        return q_values(torch.softmax(out, dim=-1), self.support) if self.atoms else out


class NatureCNN(_QNetwork):
    """The Nature DQN network (Mnih et al. 2015).

    obs uint8[B, C, 84, 84] (C = stack, 4) -> Q float32[B, num_actions]:
    conv 32 8x8/4, conv 64 4x4/2, conv 64 3x3/1 (ReLU), flatten (3136 for 84x84),
    fully connected ``hidden`` (512), linear to the actions (or the dueling head).
    """

    def __init__(
        self,
        in_channels: int,
        num_actions: int,
        hidden: int = 512,
        dueling: bool = False,
        image_size: tuple[int, int] = (84, 84),
        head: HeadOptions | None = None,
    ) -> None:
        super().__init__()
        self.torso = nn.Sequential(
            nn.Conv2d(in_channels, 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        opts = head or HeadOptions(dueling=dueling)
        self._set_head(_flat_size(self.torso, image_size), hidden, num_actions, opts)


class MinAtarCNN(_QNetwork):
    """The MinAtar DQN network (Young & Tian 2019, section 4: one convolution and one hidden layer).

    obs uint8[B, C, H, W] (MinAtar: C channels of 10x10, 0/255 for the game's 0/1 cells) ->
    Q float32[B, num_actions]: conv 16 3x3/1 (ReLU), flatten (16 * 8 * 8 = 1024 at 10x10),
    fully connected ``hidden`` (128), linear to the actions (or the dueling head).
    """

    def __init__(
        self,
        in_channels: int,
        num_actions: int,
        hidden: int = 128,
        image_size: tuple[int, int] = (10, 10),
        head: HeadOptions | None = None,
    ) -> None:
        super().__init__()
        self.torso = nn.Sequential(nn.Conv2d(in_channels, 16, 3, stride=1), nn.ReLU(), nn.Flatten())
        self._set_head(_flat_size(self.torso, image_size), hidden, num_actions, head or HeadOptions())


class MLP(_QNetwork):
    """Fully connected Q-network for vector observations.

    obs float32[B, d] (classic control) or uint8[B, 128] (Atari RAM, scaled by 1/255)
    -> Q float32[B, num_actions]. hidden: widths; the last one is the head's hidden
    layer (so ``dueling`` splits after ``hidden[:-1]``).
    """

    def __init__(
        self,
        in_features: int,
        num_actions: int,
        hidden: tuple[int, ...] = (256, 256),
        dueling: bool = False,
        head: HeadOptions | None = None,
    ) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden[:-1]:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.torso = nn.Sequential(*layers)
        self._set_head(width, hidden[-1], num_actions, head or HeadOptions(dueling=dueling))


@dataclass
class NetworkSpec:
    """Plain description of a Q-network; ``asdict(spec)`` goes into checkpoints.

    kind: ``nature`` | ``minatar`` | ``mlp``. obs_shape: one observation (``(4, 84, 84)``,
    ``(128,)``, ``(4,)``). obs_dtype: ``uint8`` | ``float32``. hidden: the CNN's
    (or MinAtar CNN's) fully connected width as a one-element list, or the MLP's widths. atoms: 0 (one
    Q-value per action) or C51's support size, with its ends v_min, v_max. noisy: noisy
    head layers of scale noisy_sigma0. (Checkpoints from before the distributional head
    lack the last five keys: their defaults describe the plain head they hold.)
    """

    kind: str
    obs_shape: list[int]
    obs_dtype: str
    num_actions: int
    dueling: bool = False
    hidden: list[int] = field(default_factory=lambda: [512])
    atoms: int = 0
    v_min: float = -10.0
    v_max: float = 10.0
    noisy: bool = False
    noisy_sigma0: float = 0.5

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def head(self) -> HeadOptions:
        return HeadOptions(self.dueling, self.atoms, self.v_min, self.v_max, self.noisy, self.noisy_sigma0)

    def describe_head(self) -> str:
        """e.g. ``C51 (51 atoms on [-10, 10]), dueling, noisy``: what a mismatch message names."""
        parts = [f"C51 ({self.atoms} atoms on [{self.v_min:g}, {self.v_max:g}])" if self.atoms else "Q-values"]
        return ", ".join(parts + ["dueling"] * self.dueling + ["noisy"] * self.noisy)


# The head's keys of a NetworkSpec, which checkpoints written before the distributional head lack.
HEAD_KEYS = ("atoms", "v_min", "v_max", "noisy", "noisy_sigma0")


def head_defaults() -> dict:
    """NetworkSpec's defaults for ``HEAD_KEYS``: the plain Q head an older checkpoint holds."""
    return {f.name: f.default for f in fields(NetworkSpec) if f.name in HEAD_KEYS}


# The smallest image side the Nature CNN takes: 8x8/4, 4x4/2 and 3x3/1 convolutions without padding
# leave one position of a 36x36 image ((36 - 8) / 4 + 1 = 8, (8 - 4) / 2 + 1 = 3, 3 - 3 + 1 = 1).
NATURE_MIN_SIDE = 36


def _image_fits_nature(obs_shape: tuple[int, ...] | None) -> bool:
    return obs_shape is not None and len(obs_shape) == 3 and min(obs_shape[1:]) >= NATURE_MIN_SIDE


def network_kind(name: NetworkName | str, obs_kind: str, obs_shape: tuple[int, ...] | None = None) -> NetworkName:
    """The architecture ``network.name`` gives for an observation kind, ``nature``, ``minatar`` or ``mlp``: the
    one place of the ``auto`` rule. The Nature CNN for pixels, and for images (CxHxW) whose sides are at least
    ``NATURE_MIN_SIDE`` (Procgen's 64x64); the MLP otherwise, small images flattened (MinAtar's 10x10:
    ``network.name=minatar`` picks its CNN). obs_shape: one observation, where known (an image's size)."""
    name = NetworkName.of(name)
    if name == NetworkName.auto:
        big_image = obs_kind == "image" and _image_fits_nature(obs_shape)
        return NetworkName.nature if obs_kind == ObsKind.pixels or big_image else NetworkName.mlp
    return name


def check_fits(kind: NetworkName, obs_kind: str, obs_shape: tuple[int, ...] | None = None) -> None:
    """Raises ValueError (one line) when network ``kind`` cannot take the observations: the Nature CNN
    takes stacked pixels, or images with sides of at least ``NATURE_MIN_SIDE``; MinAtar's CNN images
    (CxHxW) or pixels. obs_shape: None where the env is not made yet."""
    got = f"{obs_kind} of shape {tuple(obs_shape)}" if obs_shape is not None else f"{obs_kind} observations"
    if kind == NetworkName.minatar and (
        obs_kind not in ("image", ObsKind.pixels) or (obs_shape is not None and len(obs_shape) != 3)
    ):
        raise ValueError(f"the MinAtar CNN needs image observations (CxHxW), got {got}; use network.name=mlp (or auto)")
    if kind != NetworkName.nature:
        return
    if obs_kind == "image" and obs_shape is not None and not _image_fits_nature(obs_shape):
        raise ValueError(
            f"the Nature CNN needs images of at least {NATURE_MIN_SIDE}x{NATURE_MIN_SIDE}, got {got}; "
            "use network.name=minatar or mlp (or auto)"
        )
    if obs_kind not in (ObsKind.pixels, "image") or (obs_shape is not None and len(obs_shape) != 3):
        raise ValueError(
            f"the Nature CNN needs stacked pixel observations (or images of at least {NATURE_MIN_SIDE}x"
            f"{NATURE_MIN_SIDE}), got {got}; use network.name=mlp (or auto)"
        )


def spec_for(
    name: NetworkName | str,
    obs_kind: str,
    obs_shape: tuple[int, ...],
    obs_dtype: str,
    num_actions: int,
    *,
    dueling: bool = False,
    cnn_hidden: int = 512,
    mlp_hidden: tuple[int, ...] = (256, 256),
    head: HeadOptions | None = None,
) -> NetworkSpec:
    """The spec of the network ``name`` (``auto`` | ``nature`` | ``mlp``: ``network_kind``) for these observations.

    Raises ValueError for an unknown name or when the network cannot take the observation
    (``nature`` on RAM or vectors: ``check_fits``).
    """
    kind = network_kind(name, obs_kind, tuple(obs_shape))
    check_fits(kind, obs_kind, tuple(obs_shape))
    cnn = kind in (NetworkName.nature, NetworkName.minatar)
    hidden = [int(cnn_hidden)] if cnn else [int(h) for h in mlp_hidden]
    h = head or HeadOptions(dueling=bool(dueling))
    return NetworkSpec(
        kind.value,
        list(obs_shape),
        obs_dtype,
        int(num_actions),
        bool(h.dueling),
        hidden,
        int(h.atoms),
        float(h.v_min),
        float(h.v_max),
        bool(h.noisy),
        float(h.sigma0),
    )


def make_network(spec: NetworkSpec | dict) -> nn.Module:
    """Builds the (randomly initialised) network a spec or its dict describes, on torch's default device."""
    if isinstance(spec, dict):
        spec = NetworkSpec(**spec)
    if spec.kind == NetworkName.nature:
        c, h, w = spec.obs_shape
        return NatureCNN(c, spec.num_actions, spec.hidden[0], spec.dueling, (h, w), head=spec.head)
    if spec.kind == NetworkName.minatar:
        c, h, w = spec.obs_shape
        return MinAtarCNN(c, spec.num_actions, spec.hidden[0], (h, w), head=spec.head)
    if spec.kind == NetworkName.mlp:
        return MLP(math.prod(spec.obs_shape), spec.num_actions, tuple(spec.hidden), spec.dueling, head=spec.head)
    raise ValueError(f"unknown network kind {spec.kind!r}")


def parameter_count(spec: NetworkSpec) -> int:
    """The parameters of the network ``spec`` describes, counted on the module itself built on the meta
    device (no memory allocated, no weights initialised)."""
    with torch.device("meta"):
        return sum(p.numel() for p in make_network(spec).parameters())
