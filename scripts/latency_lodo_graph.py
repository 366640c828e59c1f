"""Leave-one-device-out evaluation of the few-shot latency predictor on a graph-space file (JSONL /
JSON with ``lat_*`` columns, e.g. the MBConv chains of scripts/make_mbconv_latency.py), beside the
file's cheap columns (params, FLOPs) alone.

For each held-out device: train on the other ``lat_*`` columns (prior scales tuned among those only,
fgp_ext.latency_model.train), then for K in --shots adapt from K shots and score every architecture
not measured: random shots (mean over --seeds draws, the same draws for every method) and the
method's own design (greedy largest predictive variance over the file's architectures,
deterministic). The baselines (FLOPs, params, any cheap column): Spearman / Kendall of the column's
own ranking; MAPE and Acc(10%) of log latency = a + b log(column) fitted on the same K shots.

    OMP_NUM_THREADS=1 python scripts/latency_lodo_graph.py --data python_tests/data/mbconv_latency.jsonl.gz \\
        --out /tmp/latgeneric/lodo_mbconv.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--shots", default="5,10,20,50")
    ap.add_argument("--seeds", type=int, default=10, help="random shot draws per device and K")
    ap.add_argument("--devices", default=None, help="comma-separated subset of the held-out devices")
    ap.add_argument("--baselines", default="flops,params", help="cheap columns scored alone")
    ap.add_argument("--no-tune", action="store_true", help="default prior scales (no inner search)")
    ap.add_argument("--out", default=None, help="write every number as JSON")
    args = ap.parse_args(argv)
    import fgp_ext
    from fgp_ext import _io
    from fgp_ext import latency_model as lm

    ds = fgp_ext.load(args.data)
    devices = [c for c in ds.target_names if c.startswith("lat_")]
    held = args.devices.split(",") if args.devices else devices
    shots = [int(k) for k in args.shots.split(",")]
    base = [b for b in args.baselines.split(",") if b]
    Y = np.column_stack([ds.targets(d) for d in devices])
    logY = np.log(Y)
    methods = ["ours_design", "ours_random", *base]
    res: dict = {"data": args.data, "devices": held, "shots": shots, "seeds": args.seeds, "per_device": {}}
    t_all = time.perf_counter()
    for d in held:
        j = devices.index(d)
        src = [c for c in devices if c != d]
        t0 = time.perf_counter()
        pred = lm.train(ds, src, tune=not args.no_tune)
        train_s = time.perf_counter() - t0
        F = pred.features(ds)
        ok = np.flatnonzero(np.isfinite(logY[:, j]))
        per: dict = {"train_s": train_s, "hyper": pred.hyper.__dict__, "position_bins": pred.schema.buckets}
        for k in shots:
            acc = {m: [] for m in methods}
            rng = np.random.default_rng(1000 + k)
            draws = [rng.choice(ok, k, replace=False) for _ in range(args.seeds)]
            design = ok[pred._choose(F[ok], k)]
            for s in draws + [design]:
                rest = np.setdiff1d(ok, s)
                y, yr = logY[s, j], Y[rest, j]
                pred._adapt_F(F[s], y)
                m = lm.latency_metrics(np.exp(pred.predict_log_F(F[rest])), yr)
                if s is design:
                    acc["ours_design"].append(m)
                    continue
                acc["ours_random"].append(m)
                for name in base:
                    x = np.log(ds.targets(name))
                    mb = lm.latency_metrics(np.exp(lm.cost_baseline(x[s], y, x[rest])), yr)
                    mb.update({key: v for key, v in lm.latency_metrics(np.exp(x[rest]), yr).items()
                               if key in ("spearman", "kendall")})
                    acc[name].append(mb)
            per[str(k)] = {m: {key: float(np.mean([r[key] for r in v])) for key in ("spearman", "kendall", "mape", "acc10")}
                           for m, v in acc.items()}
        # what the features can reach on this device at all: the robust ridge fit of a source
        # device (fgp_ext.latency_model._device_weights) on a random half, Spearman on the other half
        half = np.zeros(len(ds), dtype=bool)
        half[np.random.default_rng(0).permutation(ok)[: len(ok) // 2]] = True
        w, _ = lm._device_weights(F[half], logY[half, j])
        rest = ok[~half[ok]]
        per["ceiling_spearman"] = lm.latency_metrics(F[rest] @ w, Y[rest, j])["spearman"]
        res["per_device"][d] = per
        print(f"{d}: trained in {train_s:.1f} s; K=10 Spearman design "
              f"{per.get('10', per[str(shots[0])])['ours_design']['spearman']:.3f}, random "
              f"{per.get('10', per[str(shots[0])])['ours_random']['spearman']:.3f}"
              + "".join(f", {b} {per.get('10', per[str(shots[0])])[b]['spearman']:.3f}" for b in base),
              file=sys.stderr, flush=True)
    res["total_s"] = time.perf_counter() - t_all
    names = {"ours_design": "ours, design shots", "ours_random": "ours, random shots"}
    short = [d.replace("lat_", "") for d in held]
    for k in shots:
        print(f"\nSpearman, K = {k} ({args.seeds} random draws)\n")
        print("| method | " + " | ".join(short) + " | mean |")
        print("|---" * (len(held) + 2) + "|")
        for m in methods:
            v = [res["per_device"][d][str(k)][m]["spearman"] for d in held]
            print(f"| {names.get(m, m + ' alone')} | " + " | ".join(f"{x:.3f}" for x in v) + f" | **{np.mean(v):.3f}** |")
    v = [res["per_device"][d]["ceiling_spearman"] for d in held]
    print("\nCeiling: the features' ridge fit on half of the architectures, Spearman on the other half\n")
    print("| " + " | ".join(short) + " | mean |")
    print("|---" * (len(held) + 1) + "|")
    print("| " + " | ".join(f"{x:.3f}" for x in v) + f" | {np.mean(v):.3f} |")
    print("\nMean over the held-out devices (Spearman / Kendall / MAPE % / Acc(10%))\n")
    print("| method | " + " | ".join(f"K = {k}" for k in shots) + " |")
    print("|---" * (len(shots) + 1) + "|")
    res["mean"] = {}
    for m in methods:
        cells = []
        for k in shots:
            v = {key: float(np.mean([res["per_device"][d][str(k)][m][key] for d in held]))
                 for key in ("spearman", "kendall", "mape", "acc10")}
            res["mean"].setdefault(m, {})[str(k)] = v
            cells.append(f"{v['spearman']:.3f} / {v['kendall']:.3f} / {v['mape']:.1f} / {v['acc10']:.2f}")
        print(f"| {names.get(m, m + ' alone')} | " + " | ".join(cells) + " |")
    print(f"\ntotal {res['total_s']:.0f} s", file=sys.stderr)
    if args.out:
        _io.write_json(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
