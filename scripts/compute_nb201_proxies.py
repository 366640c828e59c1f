#!/usr/bin/env python
"""Compute the zero-cost proxies of all 15,625 NAS-Bench-201 cells and write the package table
``fgp_ext/data/nb201_proxies.npz`` (keys: ``index`` official index, ``arch_str``, one float64
array per proxy, ``meta`` JSON with the settings and timings).

Usage: python scripts/compute_nb201_proxies.py [--out PATH] [--threads 1] [--batch-size 16]
       [--resolution 16] [--seed 0] [--report report.json] [--only meco,...]

``--only`` computes just the named proxies and merges them into the existing table at ``--out``
(the other columns and their settings are kept; the meta records the added columns' settings).

Also prints the rank correlation (Kendall tau-b, Spearman) of every proxy with CIFAR-10 test
accuracy (200 epochs) over all cells, and with the published NASLib proxies when the shared data
file is given (``--published ../shared/data/nb201_zc_725.json``).

A data-build tool, not an experiment: it writes the shipped table that
``fgp_ext.proxies.load_nb201_proxies()`` reads, so it stays in ``scripts/``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from fgp_ext import _io


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "fgp_ext" / "data"
                                         / "nb201_proxies.npz"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--resolution", type=int, default=16)
    ap.add_argument("--meco-resolution", type=int, default=32, help="MeCo's one image (default 32)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="only the first N cells (trial)")
    ap.add_argument("--published", default=None, help="NASLib nb201_zc json to compare with")
    ap.add_argument("--report", default=None, help="write correlations/timings JSON here")
    ap.add_argument("--only", default=None,
                    help="comma-separated proxies to compute and merge into the existing --out")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from fgp_ext.data.formats import load
    from fgp_ext.data.spaces import nb201_to_string
    from fgp_ext.metrics import kendall_tau, spearman
    from fgp_ext.proxies import PROXIES, nb201_all_proxies

    ds = load("nb201")
    if args.limit:
        ds = ds[: args.limit]
    strs = [nb201_to_string(g.ops) for g in ds]
    names = list(PROXIES) if args.only is None else [n.strip() for n in args.only.split(",")]
    out = Path(args.out)
    kept: dict = {}
    meta: dict = {}
    if args.only is not None:
        with np.load(out, allow_pickle=False) as z:
            kept = {k: z[k] for k in z.files}
        if not (np.array_equal(kept["index"], np.asarray(ds.index, dtype=np.int32))
                and np.array_equal(kept["arch_str"], np.asarray(strs))):
            raise SystemExit(f"{out} does not hold the same cells in the same order; "
                             "recompute the whole table")
        meta = json.loads(str(kept.pop("meta")))
    timings: dict = {}
    t0 = time.time()
    vals = nb201_all_proxies(strs, names, batch_size=args.batch_size,
                             resolution=args.resolution, meco_resolution=args.meco_resolution,
                             seed=args.seed, progress=True,
                             timings=timings)
    wall = time.time() - t0
    print(f"computed {len(strs)} cells in {wall:.1f}s; timings {timings}", flush=True)
    settings = {"batch_size": args.batch_size, "resolution": args.resolution,
                "meco_resolution": args.meco_resolution, "seed": args.seed,
                "threads": args.threads, "wall_seconds": wall, "timings": timings,
                "torch": torch.__version__, "proxies": names}
    if args.only is None:
        meta = settings
    else:
        meta.setdefault("added", []).append(settings)
        meta["proxies"] = list(dict.fromkeys(meta.get("proxies", []) + names))
    columns = {k: v for k, v in kept.items() if k not in ("index", "arch_str")}
    columns.update({k: v.astype(np.float64) for k, v in vals.items()})
    _io.np_savez(out, index=np.asarray(ds.index, dtype=np.int32),
                 arch_str=np.asarray(strs), meta=np.asarray(json.dumps(meta)),
                 **columns)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")

    report = {"meta": meta, "accuracy": {}, "published": {}}
    acc = ds.targets("cifar10_test_200ep")
    print("\nproxy      tau(acc)  rho(acc)   [CIFAR-10 test acc, all cells]")
    for k, v in vals.items():
        tau, rho = kendall_tau(v, acc), spearman(v, acc)
        report["accuracy"][k] = {"kendall": tau, "spearman": rho}
        print(f"{k:10s} {tau:8.4f} {rho:8.4f}")
    if args.published:
        pub = json.load(open(args.published))
        pos = {int(i): j for j, i in enumerate(ds.index.tolist())}
        print("\nproxy      tau(pub)  rho(pub)   n   [ours vs published NASLib values]")
        for k in vals:
            rows = [(pos[r["index"]], r[k]) for r in pub if r["index"] in pos
                    and isinstance(r.get(k), (int, float)) and np.isfinite(r[k])]
            if len(rows) < 3:
                continue
            ours = np.array([vals[k][i] for i, _ in rows])
            theirs = np.array([t for _, t in rows], dtype=np.float64)
            scale = 1e6 if k in ("params", "flops") else 1.0
            exact = bool(np.allclose(ours / scale, theirs, rtol=0, atol=1e-9)) \
                if k in ("params", "flops") else None
            tau, rho = kendall_tau(ours, theirs), spearman(ours, theirs)
            report["published"][k] = {"kendall": tau, "spearman": rho, "n": len(rows),
                                      "exact": exact}
            print(f"{k:10s} {tau:8.4f} {rho:8.4f} {len(rows):4d}"
                  + ("" if exact is None else f"  exact match: {exact}"))
    if args.report:
        _io.write_text(args.report, json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
