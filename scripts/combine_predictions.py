"""Combine the models recorded in `fgp run`'s predictions.npz files, run by run, without training.

Each SOURCE names models of one job: `PATH.npz[:METHOD[,METHOD...]][[START:STOP]]`. PATH is a
file or a glob pattern (quoted) matching the files of one job's `fgp run --seeds` processes, whose
runs are then taken together. The methods' score rows (see `fgp_ext.train.predictions` for the order) are
concatenated and the optional slice keeps rows START to STOP-1. Without methods: every method.

    # the first pre-training seed's five folds of an `--ensemble 3 --folds 5` job, against all 15
    python scripts/combine_predictions.py 'ff*/predictions.npz:fgp[0:5]' --against 'ff*/predictions.npz:fgp'
    # two encoders' models together (the same seeds and splits), against the first alone
    python scripts/combine_predictions.py ff/predictions.npz:fgp_aux_head gg/predictions.npz:fgp_aux_head \
        --against ff/predictions.npz:fgp_aux_head

For every run (a seed and permutation found in every file), the sources' rows are combined into one
score with `combine_scores` (the mean of the standardised rows, as `fgp run --ensemble` does), and
the script prints each run's Kendall tau and P@1%, their mean ± std over the runs, and with
`--against` the same for the other combination and the paired difference (mean, and in how many
runs the first is better). Runs present in only some sources are left out, and said so; a run is
its (seed, permutation) pair, so a run without a permutation never pairs with one that has one.
The sources' test sets and labels must agree run by run.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from fgp_ext.metrics import kendall_tau, precision_at
from fgp_ext.train import combine_scores
from fgp_ext.train.predictions import MODELS_SPEC_FORM, missing_runs, recorded_models


def combined_runs(sources: list[str], cache: dict | None = None, log=print) -> dict[tuple, dict]:
    """(seed, perm_seed) -> {"tau", "p@1%", "models"} of the sources' rows combined, for the runs
    every source holds (``log`` says how many others were left out). ``cache`` maps paths to
    loaded runs across calls."""
    cache = {} if cache is None else cache
    runs = recorded_models(sources, cache)
    left = missing_runs(sources, cache)
    if left:
        log(f"note: {len(left)} run(s) are not in every source of {' + '.join(sources)}: left out")
    out = {}
    for key, run in runs.items():
        score = combine_scores(run["scores"])
        out[key] = {"tau": kendall_tau(score, run["true"]), "p@1%": precision_at(score, run["true"], 0.01),
                    "models": run["scores"].shape[0]}
    return out


def _print(name: str, runs: dict) -> None:
    taus = np.array([r["tau"] for r in runs.values()])
    p1 = np.array([r["p@1%"] for r in runs.values()])
    models = sorted({r["models"] for r in runs.values()})
    print(f"{name}: {len(runs)} runs, {'/'.join(map(str, models))} models per run")
    for (seed, perm), r in runs.items():
        print(f"  seed {seed} perm {perm}: tau {r['tau']:.4f}  P@1% {r['p@1%']:.3f}")
    print(f"  Kendall tau {taus.mean():.4f} ± {taus.std():.4f}   P@1% {p1.mean():.3f} ± {p1.std():.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sources", nargs="+", help=MODELS_SPEC_FORM)
    ap.add_argument("--against", nargs="+", default=None, help="another combination to compare with, paired by run")
    args = ap.parse_args(argv)
    cache: dict = {}
    try:
        mine = combined_runs(args.sources, cache)
        other = combined_runs(args.against, cache) if args.against else None
    except (ValueError, OSError) as e:
        print(f"combine_predictions: error: {e}", file=sys.stderr)
        return 2
    if not mine:
        print("combine_predictions: error: no run is in every file", file=sys.stderr)
        return 2
    _print(" + ".join(args.sources), mine)
    if other is not None:
        _print(" + ".join(args.against), other)
        shared = [k for k in mine if k in other]
        left = len(mine) + len(other) - 2 * len(shared)
        if not shared:
            print("no run is in both combinations: nothing to pair")
            return 0
        diff = np.array([mine[k]["tau"] - other[k]["tau"] for k in shared])
        print(f"paired over {len(shared)} runs{f' ({left} unpaired left out)' if left else ''}: "
              f"{diff.mean():+.4f} tau, better in {int((diff > 0).sum())} of {len(shared)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
