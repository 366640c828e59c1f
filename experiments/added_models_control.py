#!/usr/bin/env python
"""Are some models worth more beside a job's models than a second pre-training seed of the same
recipe? Pairs, run by run, three sets of recorded models (``fgp run``'s predictions.npz, models
specs as in ``scripts/combine_predictions.py``):

- BASE: the models to add to, e.g. the first pre-training seed's five fold models of a job;
- ADDED: the candidate models, from a job on the same runs (the same seed and split), which differ
  from BASE in what they learn (another pre-training target, another encoder, ...);
- CONTROL: the same number of models of BASE's own recipe from the next pre-training seed, a job
  run with ``--seeds s+1``: its run ``(s + 1, p)`` pairs with BASE's run ``(s, p)``, which holds the
  same split because the split depends on the permutation ``p`` only.

It prints per run and as means over the runs: BASE alone, BASE + CONTROL, BASE + ADDED, the paired
difference (BASE + ADDED) - (BASE + CONTROL), the mean single-model tau of ADDED's and CONTROL's
models, and the Kendall tau between BASE's combined score and ADDED's (and CONTROL's): how much
their errors differ. Models are combined as ``fgp run --ensemble`` does (``combine_scores``).

Usage:
    python experiments/added_models_control.py 'rs/ff*/predictions.npz:fgp[0:5]' \\
        'ma/ms*/predictions.npz:fgp' 'rs/c*/predictions.npz:fgp'
"""
from __future__ import annotations

import argparse

import numpy as np

from fgp_ext.metrics import kendall_tau
from fgp_ext.train import combine_scores
from fgp_ext.train.predictions import recorded_models, run_order


def paired_rows(base: dict, added: dict, control: dict, seed_offset: int = 1) -> list[dict]:
    """One dict per run of ``base`` found in ``added`` (same key) and in ``control`` (seed +
    ``seed_offset``), all three as :func:`recorded_models` returns them."""
    rows = []
    for (seed, perm) in sorted(base, key=run_order):
        b, a, c = base[(seed, perm)], added.get((seed, perm)), control.get((seed + seed_offset, perm))
        if a is None or c is None:
            print(f"seed {seed} perm {perm}: no {'added' if a is None else 'control'} run: left out")
            continue
        for other, name in ((a, "added"), (c, "control")):
            if not (np.array_equal(b["test_index"], other["test_index"]) and np.array_equal(b["true"], other["true"])):
                raise ValueError(f"seed {seed} perm {perm}: the {name} models were scored on another test set")
        y, base_score = b["true"], combine_scores(b["scores"])
        rows.append({
            "run": (seed, perm),
            "base": kendall_tau(base_score, y),
            "control": kendall_tau(combine_scores(np.concatenate([b["scores"], c["scores"]])), y),
            "added": kendall_tau(combine_scores(np.concatenate([b["scores"], a["scores"]])), y),
            "added_alone": kendall_tau(combine_scores(a["scores"]), y),
            "control_alone": kendall_tau(combine_scores(c["scores"]), y),
            "single_added": np.mean([kendall_tau(s, y) for s in a["scores"]]),
            "single_control": np.mean([kendall_tau(s, y) for s in c["scores"]]),
            "agree_added": kendall_tau(base_score, combine_scores(a["scores"])),
            "agree_control": kendall_tau(base_score, combine_scores(c["scores"])),
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base", help="models spec (quote a glob) of the models to add to")
    ap.add_argument("added", help="models spec of the candidate models, on the same runs as BASE")
    ap.add_argument("control", help="models spec of BASE's recipe from the next pre-training seed (--seeds s+1)")
    ap.add_argument("--seed-offset", type=int, default=1, help="CONTROL's seed minus BASE's (default 1)")
    args = ap.parse_args()
    cache: dict = {}
    base, added, control = (recorded_models([spec], cache) for spec in (args.base, args.added, args.control))
    rows = paired_rows(base, added, control, args.seed_offset)
    print(f"{'seed/perm':>16} {'base':>7} {'+ctrl':>7} {'+added':>7} {'diff':>8}   added alone / control alone, "
          "mean single tau added / control, agreement with base added / control")
    for r in rows:
        print(f"{r['run'][0]:>7}/{r['run'][1]!s:<8} {r['base']:7.4f} {r['control']:7.4f} {r['added']:7.4f} "
              f"{r['added'] - r['control']:+8.4f}   {r['added_alone']:.4f} / {r['control_alone']:.4f}, "
              f"{r['single_added']:.4f} / {r['single_control']:.4f}, {r['agree_added']:.4f} / {r['agree_control']:.4f}")
    if not rows:
        return
    col = {key: np.array([r[key] for r in rows]) for key in rows[0] if key != "run"}
    diff = col["added"] - col["control"]
    print(f"{len(rows)} runs (mean ± std): base {col['base'].mean():.4f} ± {col['base'].std():.4f}; "
          f"base + control {col['control'].mean():.4f} ± {col['control'].std():.4f}; "
          f"base + added {col['added'].mean():.4f} ± {col['added'].std():.4f}")
    print(f"paired (base + added) - (base + control): {diff.mean():+.4f} (better in {(diff > 0).sum()} of {len(rows)})")
    print(f"alone: added {col['added_alone'].mean():.4f}, control {col['control_alone'].mean():.4f}; "
          f"mean single tau: added {col['single_added'].mean():.4f}, control {col['single_control'].mean():.4f}; "
          f"agreement with base: added {col['agree_added'].mean():.4f}, control {col['agree_control'].mean():.4f}")


if __name__ == "__main__":
    main()
