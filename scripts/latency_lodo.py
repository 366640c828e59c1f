"""Leave-one-device-out evaluation of the few-shot latency predictor (fgp_ext.latency_model) on the
nine NB201 latency columns, beside the floor of ../shared/docs/LATENCY.md (ridge on the other
devices' log latencies), FLOPs and parameter counts alone, and HELP's published numbers.

For each device: train on the other eight (prior scales tuned among those eight only), then, for
K in --shots, adapt from K shots and score the cells not measured: random shots (mean over
--seeds draws; the same draws for every method) and the method's own design (the shipped
reference architectures, deterministic). FLOPs / params: log latency = a + b log(FLOPs) fitted on
the same K shots for MAPE and Acc(10%); their Spearman and Kendall are those of FLOPs' (params') own ranking.

    OMP_NUM_THREADS=1 python scripts/latency_lodo.py --out results/latency_lodo.json

Prints markdown tables (Spearman per device and K; mean Kendall, MAPE, Acc(10%)).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

#: HELP (Lee et al., NeurIPS 2021), NB201, 10 shots, Spearman on its six unseen devices
HELP_NB201 = {"mean": 0.932}
FLOOR_NOTE = "ridge (lambda 0.1) of log latency on the other 8 devices' log latencies"


def _ridge_floor(S_shots, y, S_rest, lam=0.1):
    A = np.column_stack([np.ones(len(S_shots)), S_shots])
    reg = lam * np.eye(A.shape[1])
    reg[0, 0] = 0.0          # the intercept is not shrunk
    w = np.linalg.solve(A.T @ A + reg, A.T @ y)
    return np.column_stack([np.ones(len(S_rest)), S_rest]) @ w


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shots", default="5,10,20,50")
    ap.add_argument("--seeds", type=int, default=10, help="random shot draws per device and K")
    ap.add_argument("--devices", default=None, help="comma-separated subset of the held-out devices")
    ap.add_argument("--no-tune", action="store_true", help="default prior scales (no inner search)")
    ap.add_argument("--out", default=None, help="write every number as JSON")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    import fgp_ext
    from fgp_ext import _io
    from fgp_ext import latency_model as lm
    from fgp_ext.proxies import load_nb201_proxies

    ds = fgp_ext.load("nb201")
    devices = [c for c in ds.target_names if c.startswith("lat_")]
    held = args.devices.split(",") if args.devices else devices
    shots = [int(k) for k in args.shots.split(",")]
    codes = lm.nb201_codes(ds)
    Y = np.column_stack([ds.targets(d) for d in devices])
    logY = np.log(Y)
    prox = load_nb201_proxies(["flops", "params"], dataset=ds)
    logf, logp = np.log(prox["flops"]), np.log(prox["params"])
    methods = ["ours_random", "ours_design", "ours_arch_only", "floor", "flops", "params"]
    res: dict = {"devices": held, "shots": shots, "seeds": args.seeds, "per_device": {}, "timing": {}}
    t_all = time.perf_counter()
    for d in held:
        j = devices.index(d)
        keep = [i for i in range(len(devices)) if i != j]
        t0 = time.perf_counter()
        pred = lm.train(ds, [devices[i] for i in keep], tune=not args.no_tune, design_k=max(shots))
        train_s = time.perf_counter() - t0
        S = logY[:, keep]            # raw log latencies, as ../shared/docs/LATENCY.md's floor
        per: dict = {"train_s": train_s, "hyper": pred.hyper.__dict__}
        ref_rows = {int(c): i for i, c in enumerate(codes)}
        for k in shots:
            acc = {m: [] for m in methods}
            rng = np.random.default_rng(1000 + k)
            draws = [rng.choice(len(codes), k, replace=False) for _ in range(args.seeds)]
            design = np.array([ref_rows[int(c)] for c in pred.reference[:k]])
            for s in draws + [design]:
                rest = np.setdiff1d(np.arange(len(codes)), s)
                y, yr = logY[s, j], Y[rest, j]
                pred._adapt_codes(codes[s], y)
                p_ours = np.exp(pred.predict_log(codes[rest]))
                if s is design:
                    acc["ours_design"].append(lm.latency_metrics(p_ours, yr))
                    continue
                acc["ours_random"].append(lm.latency_metrics(p_ours, yr))
                pred._post_full = None          # the same adaptation without the source latencies
                acc["ours_arch_only"].append(lm.latency_metrics(np.exp(pred.predict_log(codes[rest])), yr))
                acc["floor"].append(lm.latency_metrics(np.exp(_ridge_floor(S[s], y, S[rest])), yr))
                for name, x in (("flops", logf), ("params", logp)):
                    # ranks: the proxy's own (as HELP reports it); MAPE / Acc(10%): the fitted line
                    m = lm.latency_metrics(np.exp(lm.cost_baseline(x[s], y, x[rest])), yr)
                    m.update({key: v for key, v in lm.latency_metrics(np.exp(x[rest]), yr).items()
                              if key in ("spearman", "kendall")})
                    acc[name].append(m)
            per[str(k)] = {m: {key: float(np.mean([r[key] for r in v])) for key in ("spearman", "kendall", "mape", "acc10")}
                           for m, v in acc.items()}
        # what an additive model of the cell can reach on this device at all: one-hot edge ops,
        # least squares on a random half of the cells, Spearman on the other half
        half = np.random.default_rng(0).random(len(codes)) < 0.5
        A = np.column_stack([np.ones(len(codes)), lm._onehot(codes)])
        w = np.linalg.lstsq(A[half], logY[half, j], rcond=None)[0]
        per["ceiling_spearman"] = lm.latency_metrics(np.exp(A[~half] @ w), Y[~half, j])["spearman"]
        res["per_device"][d] = per
        print(f"{d}: trained in {train_s:.1f} s (hyper {pred.hyper}); K=10 Spearman ours "
              f"{per['10']['ours_random']['spearman']:.3f} (design {per['10']['ours_design']['spearman']:.3f}), "
              f"floor {per['10']['floor']['spearman']:.3f}, flops {per['10']['flops']['spearman']:.3f}"
              if "10" in per else d, file=sys.stderr, flush=True)
    res["timing"]["total_s"] = time.perf_counter() - t_all
    # cost of adapting and predicting every cell (the last trained predictor)
    t0 = time.perf_counter()
    pred._adapt_codes(codes[:10], logY[:10, 0])
    t1 = time.perf_counter()
    pred.predict_log(codes)
    res["timing"].update(adapt_s=t1 - t0, predict_all_s=time.perf_counter() - t1)

    names = {"ours_random": "ours, random shots", "ours_design": "ours, design shots",
             "ours_arch_only": "ours without source latencies (random)", "floor": "floor (other devices)",
             "flops": "FLOPs alone", "params": "params alone"}
    short = [d.replace("lat_", "") for d in held]
    for metric in ("spearman",):
        for k in shots:
            print(f"\nSpearman, K = {k} ({args.seeds} random draws; design = the shipped reference cells)\n")
            print("| method | " + " | ".join(short) + " | mean |")
            print("|---" * (len(held) + 2) + "|")
            for m in methods:
                v = [res["per_device"][d][str(k)][m][metric] for d in held]
                print(f"| {names[m]} | " + " | ".join(f"{x:.3f}" for x in v) + f" | **{np.mean(v):.3f}** |")
    print("\nCeiling: an additive model of the cell (one-hot edge ops) fitted on half of the cells, "
          "Spearman on the other half\n")
    print("| " + " | ".join(short) + " | mean |")
    print("|---" * (len(held) + 1) + "|")
    v = [res["per_device"][d]["ceiling_spearman"] for d in held]
    print("| " + " | ".join(f"{x:.3f}" for x in v) + f" | {np.mean(v):.3f} |")
    if "10" in res["per_device"][held[0]]:
        for key, label in (("mape", "MAPE %"), ("acc10", "Acc(10%)")):
            print(f"\n{label} per device, K = 10\n")
            print("| method | " + " | ".join(short) + " |")
            print("|---" * (len(held) + 1) + "|")
            for m in methods:
                v = [res["per_device"][d]["10"][m][key] for d in held]
                print(f"| {names[m]} | " + " | ".join(f"{x:.1f}" if key == "mape" else f"{x:.3f}" for x in v) + " |")
    print("\nMean over the held-out devices\n")
    print("| method | K | Spearman | Kendall | MAPE % | Acc(10%) |")
    print("|---|---|---|---|---|---|")
    for k in shots:
        for m in methods:
            row = [np.mean([res["per_device"][d][str(k)][m][key] for d in held])
                   for key in ("spearman", "kendall", "mape", "acc10")]
            print(f"| {names[m]} | {k} | {row[0]:.3f} | {row[1]:.3f} | {row[2]:.1f} | {row[3]:.3f} |")
    print(f"\nHELP (published, its 6 unseen devices, K=10): mean Spearman {HELP_NB201['mean']}")
    print(f"time: {res['timing']['total_s']:.0f} s in all; adapt {1000 * res['timing']['adapt_s']:.1f} ms, "
          f"predict all 15,625 cells {1000 * res['timing']['predict_all_s']:.1f} ms")
    if args.out:
        _io.write_json(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
