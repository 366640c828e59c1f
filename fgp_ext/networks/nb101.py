"""NAS-Bench-101 networks (PyTorch port of the original TensorFlow model builder).

Skeleton: stem Conv3x3(3 -> 128)-BN-ReLU; 3 stacks of 3 cells; before stacks 2 and 3 a 2x2 max-pool
(stride 2) and the cells' output channels double (128 -> 256 -> 512); global average pool;
Linear(512 -> 10). Ops: ``conv3x3-bn-relu``, ``conv1x1-bn-relu`` (conv without bias, BN, ReLU) and
``maxpool3x3`` (stride 1, same padding). BN has affine parameters (the original's trainable
gamma/beta), so parameter counts equal NAS-Bench-101's ``trainable_parameters``.

Channel handling of the original (``compute_vertex_channels``): the output node concatenates the
vertices that feed it; the cell's output channels are split evenly among them (the first
``remainder`` vertices get one more); other vertices take the max of their successors' channels.
An interior vertex's input is the sum of its interior predecessors, truncated (sliced) to its
channel count, plus a 1x1 conv-BN-ReLU projection of the cell input if the input feeds it. An
input->output edge adds a projection of the cell input to the concatenation.

Cells are pruned first (vertices not on an input->output path removed, the NAS-Bench-101 rule;
:func:`fgp_ext.data.spaces.nb101_from_matrix`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fgp_ext.data.spaces import NB101_VOCAB, nb101_from_matrix

__all__ = ["NB101Network", "NB101Cell", "prune_nb101", "vertex_channels"]


def prune_nb101(matrix, ops) -> tuple[np.ndarray, list[str]]:
    """Validate and prune a NAS-Bench-101 cell: ``(pruned int matrix, pruned ops)``.

    ``ValueError`` for malformed cells (see :func:`fgp_ext.data.spaces.nb101_from_matrix`).
    """
    g = nb101_from_matrix(matrix, ops, prune=True)
    n = len(g.ops)
    m = np.zeros((n, n), dtype=np.int64)
    m[np.asarray(g.edges[0]), np.asarray(g.edges[1])] = 1
    return m, [NB101_VOCAB[int(i)] for i in g.ops]


def vertex_channels(in_channels: int, out_channels: int, matrix: np.ndarray) -> list[int]:
    """Channels of every vertex of a (pruned) cell, as in the original NAS-Bench-101 code."""
    n = matrix.shape[0]
    ch = [0] * n
    ch[0], ch[n - 1] = in_channels, out_channels
    if n == 2:
        return ch
    in_deg = matrix[1:].sum(axis=0)
    interior, correction = divmod(out_channels, int(in_deg[n - 1]))
    for v in range(1, n - 1):
        if matrix[v, n - 1]:
            ch[v] = interior + (1 if correction else 0)
            correction -= 1 if correction else 0
    for v in range(n - 3, 0, -1):
        if not matrix[v, n - 1]:
            for dst in range(v + 1, n - 1):
                if matrix[v, dst]:
                    ch[v] = max(ch[v], ch[dst])
        if ch[v] <= 0:  # pragma: no cover - impossible for pruned cells
            raise ValueError("NB101 cell: a vertex got no channels")
    return ch


class ConvBNReLU(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__(nn.Conv2d(c_in, c_out, kernel, 1, kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=False))


class NB101Cell(nn.Module):
    """One NAS-Bench-101 module for a pruned ``matrix`` / ``ops``."""

    def __init__(self, matrix: np.ndarray, ops: list[str], c_in: int, c_out: int):
        super().__init__()
        self.matrix = matrix
        n = matrix.shape[0]
        self.ch = vertex_channels(c_in, c_out, matrix)
        self.proj = nn.ModuleDict()
        self.vertex_ops = nn.ModuleDict()
        for t in range(1, n - 1):
            if matrix[0, t]:
                self.proj[str(t)] = ConvBNReLU(c_in, self.ch[t], 1)
            op = ops[t]
            if op == "conv3x3-bn-relu":
                self.vertex_ops[str(t)] = ConvBNReLU(self.ch[t], self.ch[t], 3)
            elif op == "conv1x1-bn-relu":
                self.vertex_ops[str(t)] = ConvBNReLU(self.ch[t], self.ch[t], 1)
            elif op == "maxpool3x3":
                self.vertex_ops[str(t)] = nn.MaxPool2d(3, 1, 1)
            else:  # pragma: no cover - validated by prune_nb101
                raise ValueError(f"unknown NB101 op {op!r}")
        if matrix[0, n - 1]:
            self.proj[str(n - 1)] = ConvBNReLU(c_in, c_out, 1)

    def forward(self, x):
        m, n, ch = self.matrix, self.matrix.shape[0], self.ch
        tensors = [x]
        out_in = []
        for t in range(1, n - 1):
            add = [tensors[s][:, :ch[t]] for s in range(1, t) if m[s, t]]
            if m[0, t]:
                add.append(self.proj[str(t)](x))
            v = add[0]
            for a in add[1:]:
                v = v + a
            v = self.vertex_ops[str(t)](v)
            tensors.append(v)
            if m[t, n - 1]:
                out_in.append(v)
        if not out_in:
            return self.proj[str(n - 1)](x)
        out = out_in[0] if len(out_in) == 1 else torch.cat(out_in, 1)
        if m[0, n - 1]:
            out = out + self.proj[str(n - 1)](x)
        return out


class NB101Network(nn.Module):
    """A NAS-Bench-101 network for one cell (``matrix`` 7x7 or smaller, ``ops``); pruned first."""

    def __init__(self, matrix, ops, stem_channels: int = 128, num_stacks: int = 3,
                 cells_per_stack: int = 3, num_classes: int = 10):
        super().__init__()
        for what, v in (("stem_channels", stem_channels), ("num_stacks", num_stacks),
                        ("cells_per_stack", cells_per_stack), ("num_classes", num_classes)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"NB101Network: {what} must be a positive integer, got {v!r}")
        self.matrix, self.ops = prune_nb101(matrix, ops)
        self.stem = ConvBNReLU(3, stem_channels, 3)
        layers: list[nn.Module] = []
        c = stem_channels
        for s in range(num_stacks):
            c_out = c
            if s > 0:
                layers.append(nn.MaxPool2d(2, 2))
                c_out = 2 * c
            for _ in range(cells_per_stack):
                layers.append(NB101Cell(self.matrix, self.ops, c, c_out))
                c = c_out
        self.cells = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.cells(self.stem(x))
        return self.classifier(x.mean(dim=(2, 3)))
