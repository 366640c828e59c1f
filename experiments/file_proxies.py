#!/usr/bin/env python
"""Compute zero-cost proxies (e.g. MeCo) for every architecture of a NASLib-style JSON file
(NB101 ``matrix``/``ops`` records, DARTS ``genotype`` records, NB201 ``arch_str`` records) and
write a copy of the file with the new columns, so ``fgp run --data COPY --aux-target meco`` can use
them.

Usage: python experiments/file_proxies.py DATA.json --out DATA_meco.json [--only meco] [--threads 1]
       [--seed 0] [--resolution 32] [--limit N]

Networks are this package's builders (``fgp_ext.networks.build_network``) at their default sizes;
one 32x32 input. Prints the rank correlation (Kendall tau-b, Spearman) of each new column, and of
the file's own proxy columns, with ``val_accuracy``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from fgp_ext import _io


def space_of(record: dict) -> str:
    """The search space a NASLib-style record describes, from its fields."""
    if "matrix" in record and "ops" in record:
        return "nb101"
    if "genotype" in record:
        return "nb301"
    if "arch_str" in record:
        return "nb201"
    raise ValueError(f"cannot tell the search space of a record with fields {sorted(record)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="NASLib-style JSON list of records")
    ap.add_argument("--out", required=True, help="where to write the copy with the new columns")
    ap.add_argument("--only", default="meco", help="comma-separated proxies (fgp_ext.proxies.PROXIES)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resolution", type=int, default=32, help="input height and width (default 32)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N records (trial)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from tqdm import tqdm

    from fgp_ext.metrics import kendall_tau, spearman
    from fgp_ext.networks import build_network
    from fgp_ext.proxies import compute_proxies

    records = json.loads(Path(args.data).read_text())
    if not isinstance(records, list) or not records:
        raise SystemExit(f"{args.data}: expected a non-empty JSON list of records")
    records = records[: args.limit] if args.limit else records
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    space = space_of(records[0])
    shape = (3, args.resolution, args.resolution)
    t0 = time.perf_counter()
    for rec in tqdm(records, desc=f"{space} proxies", unit="net"):
        net = build_network(space, rec)
        rec.update(compute_proxies(net, names, input_shape=shape, seed=args.seed))
    wall = time.perf_counter() - t0
    _io.write_text(args.out, json.dumps(records))
    print(f"{len(records)} {space} networks, {', '.join(names)}: {wall:.0f} s ({wall / len(records):.2f} s each); "
          f"wrote {args.out}")
    acc = np.array([r.get("val_accuracy", np.nan) for r in records], dtype=np.float64)
    numeric = [k for k, v in records[0].items() if isinstance(v, (int, float)) and k != "val_accuracy"]
    print(f"{'column':<12}{'Kendall':>9}{'Spearman':>10}   (with val_accuracy, {int(np.isfinite(acc).sum())} records)")
    for k in sorted(numeric, key=lambda c: (c not in names, c)):
        col = np.array([r.get(k, np.nan) for r in records], dtype=np.float64)
        ok = np.isfinite(col) & np.isfinite(acc)
        if ok.sum() > 2:
            print(f"{k:<12}{kendall_tau(col[ok], acc[ok]):>9.3f}{spearman(col[ok], acc[ok]):>10.3f}"
                  + ("   (new)" if k in names else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
