#!/usr/bin/env python
"""Does a second pre-training seed add more when its fold models hold out other cells? Pairs an
``fgp run --folds K --ensemble 2 --reshuffle-folds`` job with a control job ``--folds K --seeds
s+1`` (no ensemble), whose models are bit for bit the second member of ``--ensemble 2`` without
``--reshuffle-folds`` (the same pre-training seed, fine-tuning seed and partition), and prints
per run and as 9-run means:

- the first seed's K models alone (rows 0..K-1 of the treatment job);
- the control: those K and the control job's K models (the same partition twice);
- the treatment: the job's 2K models (the second seed on another partition);
- the paired difference treatment - control, the second seed's mean single-model tau under each,
  and the Kendall tau between the two seeds' K-model scores (how much the second seed's errors
  differ from the first's).

Usage: python experiments/reshuffle_folds_control.py 'rs/ff*/predictions.npz' 'rs/c*/predictions.npz' --folds 5
A run ``(s, p)`` of the treatment pairs with the control's run ``(s + 1, p)``; both must hold the
same test set and labels.
"""
from __future__ import annotations

import argparse

import numpy as np

from fgp_ext.metrics import kendall_tau
from fgp_ext.train import combine_scores
from fgp_ext.train.predictions import load_job_runs, run_order


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("treatment", help="predictions.npz (a quoted glob) of the --ensemble 2 --reshuffle-folds job")
    ap.add_argument("control", help="predictions.npz (a quoted glob) of the --seeds s+1 job")
    ap.add_argument("--folds", type=int, required=True)
    ap.add_argument("--method", default="fgp")
    args = ap.parse_args()
    k = args.folds
    treat, ctrl = load_job_runs(args.treatment), load_job_runs(args.control)
    rows = []
    for (seed, perm) in sorted(treat, key=run_order):
        t = treat[(seed, perm)]
        c = ctrl.get((seed + 1, perm))
        if c is None:
            print(f"seed {seed} perm {perm}: no control run (seed {seed + 1}): left out")
            continue
        if not (np.array_equal(t["test_index"], c["test_index"]) and np.array_equal(t["true"], c["true"])):
            raise ValueError(f"seed {seed} perm {perm}: the two jobs' test sets differ")
        ts, cs, y = t["scores"][args.method], c["scores"][args.method], t["true"]
        if ts.shape[0] != 2 * k or cs.shape[0] != k:
            raise ValueError(f"seed {seed} perm {perm}: expected {2 * k} and {k} models, got {ts.shape[0]} "
                             f"and {cs.shape[0]}")
        first, second_same, second_other = ts[:k], cs, ts[k:]
        first_score = combine_scores(first)
        rows.append({
            "run": (seed, perm),
            "first": kendall_tau(first_score, y),
            "control": kendall_tau(combine_scores(np.concatenate([first, second_same])), y),
            "treatment": kendall_tau(combine_scores(ts), y),
            "single_same": np.mean([kendall_tau(s, y) for s in second_same[1:]]),
            "single_other": np.mean([kendall_tau(s, y) for s in second_other[1:]]),
            "agree_same": kendall_tau(first_score, combine_scores(second_same)),
            "agree_other": kendall_tau(first_score, combine_scores(second_other)),
            "fold0_equal": bool(np.array_equal(second_same[0], second_other[0])),
        })
    print(f"{'seed/perm':>16} {'first K':>8} {'control':>8} {'reshuf.':>8} {'diff':>8}   "
          f"second seed folds 1..: single tau same / other, agreement with the first seed same / other")
    for r in rows:
        print(f"{r['run'][0]:>7}/{r['run'][1]:<8} {r['first']:8.4f} {r['control']:8.4f} {r['treatment']:8.4f} "
              f"{r['treatment'] - r['control']:+8.4f}   {r['single_same']:.4f} / {r['single_other']:.4f}, "
              f"{r['agree_same']:.4f} / {r['agree_other']:.4f}" + ("" if r["fold0_equal"] else "  (fold 0 differs!)"))
    if not rows:
        return
    col = {key: np.array([r[key] for r in rows]) for key in rows[0] if key not in ("run", "fold0_equal")}
    diff = col["treatment"] - col["control"]
    print(f"{len(rows)} runs: first seed's {k} {col['first'].mean():.4f} ± {col['first'].std():.4f}; "
          f"control {col['control'].mean():.4f} ± {col['control'].std():.4f}; "
          f"--reshuffle-folds {col['treatment'].mean():.4f} ± {col['treatment'].std():.4f}")
    print(f"paired --reshuffle-folds - control: {diff.mean():+.4f} (better in {(diff > 0).sum()} of {len(rows)})")
    print(f"second seed's folds 1..{k - 1}, mean single tau: same partition {col['single_same'].mean():.4f}, "
          f"other partition {col['single_other'].mean():.4f}; agreement with the first seed's {k}: "
          f"{col['agree_same'].mean():.4f} / {col['agree_other'].mean():.4f}")


if __name__ == "__main__":
    main()
