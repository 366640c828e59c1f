"""DARTS / NAS-Bench-301 networks (the DARTS ``NetworkCIFAR`` evaluation network).

Skeleton: stem Conv3x3(3 -> 3C, bias=False) + BN; ``layers`` cells, reduction cells (stride 2,
channels doubled) at positions ``layers//3`` and ``2*layers//3``; global average pool;
Linear(4 * C_last -> classes). NAS-Bench-301 used ``C=32``, ``layers=8`` (the default here).
Cell: ``s0 = preprocess0(c_{k-2})`` (FactorizedReduce if the previous cell reduced, else
ReLU-Conv1x1-BN), ``s1 = preprocess1(c_{k-1})``; intermediate node i = op(a) + op(b) of its two
``[op, input]`` pairs; output = concatenation of the 4 intermediates. In a reduction cell, ops
reading a cell input have stride 2. Ops as in DARTS: ``sep_conv_kxk`` (two stacked ReLU-dw-pw-BN),
``dil_conv_kxk`` (ReLU-dilated dw-pw-BN), ``max/avg_pool_3x3`` (``count_include_pad=False`` for
avg), ``skip_connect`` (identity or FactorizedReduce at stride 2), ``none`` (zero).
NAS-Bench-301's published parameter counts are reproduced exactly with ``op_affine=False`` (BNs
inside the candidate ops without affine parameters); with affine op BNs every sep_conv adds 2 BNs
and every dil_conv / strided skip 1 BN of affine parameters. Its published FLOPs are reproduced
exactly when the pooling ops are followed by a non-affine BN (``pool_bn=True``, the DARTS
search-space form of the pooling ops, which adds one FLOP per pooled element and no parameters). An optional auxiliary head (``auxiliary=True``, after cell ``2*layers//3``) is excluded from
:func:`count_params` by name, as DARTS does.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from fgp_ext.data.spaces import _darts_cell, _genotype_cells

__all__ = ["DartsNetwork", "DartsCell", "parse_genotype"]


def parse_genotype(genotype) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Validate a genotype (mapping/namedtuple with ``normal``/``reduce``, or a record with a
    ``"genotype"`` key); return ``(normal, reduce)`` as lists of 8 ``(op, input)`` pairs."""
    if isinstance(genotype, Mapping) and "genotype" in genotype:
        genotype = genotype["genotype"]
    normal, reduce = _genotype_cells(genotype)
    out = []
    for cell, pairs in (("normal", normal), ("reduce", reduce)):
        _darts_cell(pairs, cell)  # validation (ValueError with a clear message)
        out.append([(str(op), int(i)) for op, i in pairs])
    return out[0], out[1]


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in, c_out, k, stride, pad):
        super().__init__(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, k, stride, pad, bias=False),
                         nn.BatchNorm2d(c_out))


class DilConv(nn.Sequential):
    def __init__(self, c_in, c_out, k, stride, pad, dil, affine=True):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_in, k, stride, pad, dilation=dil, groups=c_in,
                                   bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False),
                         nn.BatchNorm2d(c_out, affine=affine))


class SepConv(nn.Sequential):
    def __init__(self, c_in, c_out, k, stride, pad, affine=True):
        super().__init__(DilConv(c_in, c_in, k, stride, pad, 1, affine),
                         DilConv(c_in, c_out, k, 1, pad, 1, affine))


class Zero(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x.mul(0.0) if self.stride == 1 else x[:, :, ::self.stride, ::self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    def __init__(self, c_in, c_out, affine=True):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def _make_op(name: str, c: int, stride: int, affine: bool, pool_bn: bool = False) -> nn.Module:
    if name == "none":
        return Zero(stride)
    if name in ("avg_pool_3x3", "max_pool_3x3"):
        pool = (nn.AvgPool2d(3, stride, 1, count_include_pad=False) if name == "avg_pool_3x3"
                else nn.MaxPool2d(3, stride, 1))
        return nn.Sequential(pool, nn.BatchNorm2d(c, affine=False)) if pool_bn else pool
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    if name == "sep_conv_3x3":
        return SepConv(c, c, 3, stride, 1, affine)
    if name == "sep_conv_5x5":
        return SepConv(c, c, 5, stride, 2, affine)
    if name == "dil_conv_3x3":
        return DilConv(c, c, 3, stride, 2, 2, affine)
    if name == "dil_conv_5x5":
        return DilConv(c, c, 5, stride, 4, 2, affine)
    raise ValueError(f"unknown DARTS op {name!r}")  # pragma: no cover - validated before


class DartsCell(nn.Module):
    def __init__(self, pairs, c_pp, c_p, c, reduction, reduction_prev, op_affine=True,
                 pool_bn=False):
        super().__init__()
        self.pre0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0)
        self.reduction = reduction
        self.inputs = [i for _, i in pairs]
        self.ops = nn.ModuleList(_make_op(op, c, 2 if reduction and i < 2 else 1, op_affine, pool_bn)
                                 for op, i in pairs)
        self.multiplier = 4

    def forward(self, s0, s1):
        states = [self.pre0(s0), self.pre1(s1)]
        for k in range(4):
            a, b = 2 * k, 2 * k + 1
            states.append(self.ops[a](states[self.inputs[a]]) + self.ops[b](states[self.inputs[b]]))
        return torch.cat(states[2:], dim=1)


class AuxiliaryHead(nn.Module):
    def __init__(self, c, num_classes):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True), nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(c, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class DartsNetwork(nn.Module):
    """DARTS evaluation network for a genotype. Defaults are NAS-Bench-301's (C=32, 8 layers,
    ``op_affine=False``: the BatchNorms inside the cells' candidate ops have no affine parameters;
    the stem, preprocessing and reduction-cell inputs keep theirs; ``pool_bn=True``: pooling ops
    are followed by a non-affine BN). ``op_affine=True, pool_bn=False`` gives the original DARTS
    ``NetworkCIFAR`` (e.g. ``C=36, layers=20, auxiliary=True``: 3.3M parameters for DARTS-V2).

    ``forward`` returns the logits (and, in training mode with ``auxiliary=True``, also the
    auxiliary logits as a tuple).
    """

    def __init__(self, genotype, C: int = 32, layers: int = 8, num_classes: int = 10,
                 auxiliary: bool = False, stem_multiplier: int = 3, op_affine: bool = False,
                 pool_bn: bool = True):
        super().__init__()
        for what, v in (("C", C), ("layers", layers), ("num_classes", num_classes),
                        ("stem_multiplier", stem_multiplier)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"DartsNetwork: {what} must be a positive integer, got {v!r}")
        self.normal, self.reduce = parse_genotype(genotype)
        c_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        self._aux_pos = 2 * layers // 3
        c_aux = None
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            cell = DartsCell(self.reduce if reduction else self.normal, c_pp, c_p, c_curr,
                             reduction, reduction_prev, op_affine, pool_bn)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if i == self._aux_pos:
                c_aux = c_p
        self.auxiliary_head = AuxiliaryHead(c_aux, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x):
        s0 = s1 = self.stem(x)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i == self._aux_pos and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        logits = self.classifier(torch.flatten(self.global_pooling(s1), 1))
        return logits if aux is None else (logits, aux)
