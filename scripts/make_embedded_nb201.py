#!/usr/bin/env python
"""Build the embedded NAS-Bench-201 table ``fgp_ext/data/nb201.npz`` from ``nb201.csv``.

Usage: python scripts/make_embedded_nb201.py [path/to/nb201.csv] [output.npz]
(defaults: ../shared/data/nb201.csv relative to the repository, fgp_ext/data/nb201.npz).

Layout (numpy ``.npz``, no pickles):
  format_version  int32 scalar (1)
  op_names        str [5]        the NB201 edge operations, code c -> op_names[c]
  ops             uint8 [N, 6]   edge-op codes of every cell, in arch_str order
  index           int32 [N]      official NAS-Bench-201 index
  columns         str [C]        target names (every CSV column except index and arch_str)
  mantissa        int64 [C, N]   value = mantissa / 10**exponent, exactly the CSV decimal
  exponent        uint8 [C, N]
Storing decimals as (mantissa, exponent) integers keeps the file small (it compresses much better
than float64) and is exact: the division is correctly rounded, like parsing the decimal string.
The script verifies the round trip before writing.

A data-build tool, not an experiment: it writes the embedded table ``fgp_ext.load("nb201")``
reads, so it stays in ``scripts/``.
"""
from __future__ import annotations

import csv
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OP_NAMES = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]


def parse_cell(arch_str: str) -> list[int]:
    groups = arch_str.strip().split("+")
    codes = []
    assert len(groups) == 3, arch_str
    for node, g in enumerate(groups, start=1):
        toks = g.strip("|").split("|")
        assert len(toks) == node, arch_str
        for src, t in enumerate(toks):
            op, frm = t.split("~")
            assert int(frm) == src, arch_str
            codes.append(OP_NAMES.index(op))
    return codes


def decimal_parts(s: str) -> tuple[int, int]:
    d = Decimal(s.strip())
    if not d.is_finite():
        raise ValueError(f"non-finite value {s!r}")
    exp = max(0, -d.as_tuple().exponent)
    mant = int(d.scaleb(exp))
    if d.scaleb(exp) != mant:  # pragma: no cover
        raise ValueError(f"cannot represent {s!r} exactly")
    return mant, exp


def main(argv: list[str]) -> int:
    src = Path(argv[1]) if len(argv) > 1 else REPO.parent / "shared" / "data" / "nb201.csv"
    out = Path(argv[2]) if len(argv) > 2 else REPO / "fgp_ext" / "data" / "nb201.npz"
    with open(src, newline="") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    i_idx, i_arch = header.index("index"), header.index("arch_str")
    cols = [j for j in range(len(header)) if j not in (i_idx, i_arch)]
    ops = np.array([parse_cell(r[i_arch]) for r in rows], dtype=np.uint8)
    index = np.array([int(r[i_idx]) for r in rows], dtype=np.int32)
    mant = np.zeros((len(cols), len(rows)), dtype=np.int64)
    expo = np.zeros((len(cols), len(rows)), dtype=np.uint8)
    for c, j in enumerate(cols):
        for i, r in enumerate(rows):
            mant[c, i], expo[c, i] = decimal_parts(r[j])
    if np.abs(mant).max() >= 2**53 or expo.max() > 22:
        raise ValueError("values too long for an exact float64 round trip")
    # verify: bit-exact against Python's float() of the CSV text
    values = mant.astype(np.float64) / np.power(10.0, expo.astype(np.float64))
    expect = np.array([[float(r[j]) for r in rows] for j in cols])
    assert np.array_equal(values, expect), "round trip mismatch"
    # narrowest integer type that holds the mantissas (int32 compresses better)
    if np.abs(mant).max() < 2**31:
        mant = mant.astype(np.int32)
    from fgp_ext import _io

    _io.np_savez(
        out,
        format_version=np.int32(1),
        op_names=np.array(OP_NAMES),
        ops=ops,
        index=index,
        columns=np.array([header[j] for j in cols]),
        mantissa=mant,
        exponent=expo,
    )
    print(f"wrote {out} ({out.stat().st_size} bytes, {len(rows)} cells, columns "
          f"{[header[j] for j in cols]})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
