"""NAS-Bench-201 networks (the published CIFAR macro skeleton, "TinyNetwork" / ``InferCell``).

Skeleton (C=16, N=5, 10 classes, 32x32 inputs)::

    stem      Conv3x3(3 -> C, bias=False) + BN(C)
    stage 1   N cells, C channels
    reduce    ResNet basic block C -> 2C, stride 2
    stage 2   N cells, 2C channels
    reduce    ResNet basic block 2C -> 4C, stride 2
    stage 3   N cells, 4C channels
    head      BN + ReLU, global average pool, Linear(4C -> classes)

Cell: nodes 0..3; node j = sum over i < j of ``op_{i->j}(node i)``; output = node 3. Ops:
``none`` (zero), ``skip_connect`` (identity), ``nor_conv_1x1`` / ``nor_conv_3x3`` (ReLU-Conv-BN,
conv without bias, BN affine), ``avg_pool_3x3`` (3x3 average pool, stride 1, padding 1,
``count_include_pad=False``). Residual block: ``a = ReLUConvBN(3x3, stride 2)``,
``b = ReLUConvBN(3x3)``, shortcut ``AvgPool2d(2, 2) -> Conv1x1 (no bias)``; out = b(a(x)) + shortcut(x).

``none`` edges are not materialised: a node sums only its non-``none`` inputs (a node without any is
an all-zero tensor, and the ops leaving it still run on zeros, exactly as with the benchmark's
``Zero`` op, which has no parameters). Parameter counts equal NAS-Bench-201's published ones.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fgp_ext.data.spaces import NB201_CELL_EDGES, NB201_OPS, _nb201_parse

__all__ = ["NB201Network", "NB201Cell", "ResNetBasicBlock", "ReLUConvBN", "parse_nb201",
           "build_nb201"]


def parse_nb201(arch) -> list[str]:
    """The six edge ops (in string order) of an NB201 cell given as a string or a list of 6 op names.

    ``ValueError`` for a malformed string, a wrong number of ops or an unknown op.
    """
    if isinstance(arch, str):
        return [NB201_OPS[i - 2] for i in _nb201_parse(arch)]
    if isinstance(arch, (bytes, dict)) or not isinstance(arch, Sequence):
        raise ValueError(f"NB201 architecture must be a cell string or a list of 6 op names, "
                         f"got {type(arch).__name__}")
    ops = list(arch)
    if len(ops) != 6:
        raise ValueError(f"NB201 cell needs 6 edge ops, got {len(ops)}")
    for i, o in enumerate(ops):
        if o not in NB201_OPS:
            raise ValueError(f"unknown NB201 op {o!r} at edge {i}; known ops: {NB201_OPS}")
    return ops


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
                         nn.BatchNorm2d(c_out))


class ResNetBasicBlock(nn.Module):
    """NB201's reduction block between stages (stride 2, channel change)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        if stride == 2:
            self.downsample = nn.Sequential(nn.AvgPool2d(2, 2, 0),
                                            nn.Conv2d(c_in, c_out, 1, 1, 0, bias=False))
        elif c_in != c_out:
            self.downsample = ReLUConvBN(c_in, c_out, 1, 1, 0)
        else:
            self.downsample = None

    def forward(self, x):
        res = x if self.downsample is None else self.downsample(x)
        return res + self.conv_b(self.conv_a(x))


def _make_op(name: str, c: int) -> nn.Module:
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1, 1, 0)
    if name == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3, 1, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    raise ValueError(f"unknown NB201 op {name!r}")  # pragma: no cover - validated before


def _default_factory(slot: str, build):
    return build()


class NB201Cell(nn.Module):
    """One NB201 cell with fixed ops (``ops``: the six edge ops in string order).

    ``factory(slot, build)`` returns the module of ``slot`` (e.g. ``"cell3/2<-1/nor_conv_3x3"``);
    default: ``build()``. :class:`NB201Network` passes it through (a weight bank can then share
    modules between networks).
    """

    def __init__(self, ops: Sequence[str], c: int, factory=None, prefix: str = "cell"):
        super().__init__()
        factory = factory or _default_factory
        self.ops_names = list(ops)
        self.edges = nn.ModuleDict()
        self._plan: list[list[tuple[int, str]]] = [[], [], [], []]
        for e, ((a, b), name) in enumerate(zip(NB201_CELL_EDGES, self.ops_names)):
            if name == "none":
                continue
            key = f"{b}<-{a}"
            self.edges[key] = factory(f"{prefix}/{key}/{name}",
                                      lambda name=name: _make_op(name, c))
            self._plan[b].append((a, key))

    def forward(self, x):
        nodes = [x]
        for j in (1, 2, 3):
            acc = None
            for a, key in self._plan[j]:
                y = self.edges[key](nodes[a])
                acc = y if acc is None else acc + y
            nodes.append(torch.zeros_like(x) if acc is None else acc)
        return nodes[3]


class NB201Network(nn.Module):
    """A NAS-Bench-201 network for one cell (see the module docstring).

    ``arch``: cell string or list of six op names; ``C`` stem channels (16), ``N`` cells per stage
    (5), ``num_classes`` (10; 100 for CIFAR-100, 120 for ImageNet16-120).
    """

    def __init__(self, arch, C: int = 16, N: int = 5, num_classes: int = 10, factory=None):
        super().__init__()
        f = factory or _default_factory
        for what, v in (("C", C), ("N", N), ("num_classes", num_classes)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"NB201Network: {what} must be a positive integer, got {v!r}")
        self.ops = parse_nb201(arch)
        self.arch_str = "+".join(
            "|" + "|".join(f"{self.ops[k]}~{a}" for k, (a, b) in enumerate(NB201_CELL_EDGES)
                           if b == node) + "|" for node in (1, 2, 3))
        self.stem = f("stem", lambda: nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False),
                                                    nn.BatchNorm2d(C)))
        layers: list[nn.Module] = []
        c_prev = C
        for stage, c_curr in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                layers.append(f(f"reduce{stage}", lambda a=c_prev, b=c_curr: ResNetBasicBlock(a, b, 2)))
            for _ in range(N):
                layers.append(NB201Cell(self.ops, c_curr, f, f"cell{len(layers)}"))
            c_prev = c_curr
        self.cells = nn.Sequential(*layers)
        self.lastact = f("lastact", lambda: nn.Sequential(nn.BatchNorm2d(c_prev),
                                                          nn.ReLU(inplace=False)))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = f("classifier", lambda: nn.Linear(c_prev, num_classes))

    def forward(self, x):
        x = self.lastact(self.cells(self.stem(x)))
        return self.classifier(torch.flatten(self.global_pooling(x), 1))


def build_nb201(arch, **kwargs) -> NB201Network:
    """Shorthand for :class:`NB201Network`."""
    return NB201Network(arch, **kwargs)
