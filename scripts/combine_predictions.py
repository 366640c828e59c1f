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
import glob
import re
import sys

import numpy as np

from fgp_ext.metrics import kendall_tau, precision_at
from fgp_ext.train import combine_scores, load_predictions

_SOURCE = re.compile(r"(?P<path>.+\.npz)(?::(?P<spec>.*))?")
_SPEC = re.compile(r"(?P<methods>\w+(?:,\w+)*)?(?:\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?")
_FORM = "PATH.npz[:METHOD[,METHOD...]][[START:STOP]]"


def parse_source(text: str) -> tuple[str, list[str] | None, slice]:
    """``PATH.npz[:METHOD,...][START:STOP]`` as (path, methods or None for all, row slice). The
    slice bounds are Python's (negative counts from the end)."""
    m = _SOURCE.fullmatch(text)
    if m is None:
        raise ValueError(f"cannot read the source {text!r}: expected {_FORM} (the path ends in .npz)")
    if m["spec"] is None:
        return m["path"], None, slice(None)
    spec = _SPEC.fullmatch(m["spec"])
    if not m["spec"] or spec is None:
        raise ValueError(f"cannot read {m['spec']!r} after the path in {text!r}: expected {_FORM}")
    methods = spec["methods"].split(",") if spec["methods"] else None
    if "-" in (spec["start"], spec["stop"]):
        raise ValueError(f"cannot read the slice in {text!r}: a bound is '-' alone")
    start, stop = (int(b) if b else None for b in (spec["start"], spec["stop"]))
    return m["path"], methods, slice(start, stop)


def _load_runs(pattern: str) -> dict[tuple, dict]:
    """(seed, perm_seed) -> run of every file ``pattern`` names (a path or a glob pattern: the
    files of one job's `fgp run --seeds` processes together)."""
    paths = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
    if not paths:
        raise ValueError(f"no file matches {pattern!r}")
    runs: dict[tuple, dict] = {}
    methods = None      # the first file's; every file of the pattern must have the same
    for path in paths:
        for run in load_predictions(path):
            key = (run["seed"], run["perm_seed"])
            if key in runs:
                raise ValueError(f"{pattern}: run seed {key[0]} perm {key[1]} appears twice")
            methods = methods or list(run["scores"])
            if list(run["scores"]) != methods:
                raise ValueError(f"{path} has methods {list(run['scores'])}, the other files of {pattern!r} "
                                 f"have {methods}")
            runs[key] = run
    return runs


def combined_runs(sources: list[str], cache: dict | None = None, log=print) -> dict[tuple, dict]:
    """(seed, perm_seed) -> {"tau", "p@1%", "models"} of the sources' rows combined, for the runs
    every source holds (``log`` says how many others were left out). ``cache`` maps paths to
    loaded runs across calls."""
    cache = {} if cache is None else cache
    per_source = []
    for text in sources:
        path, methods, rows = parse_source(text)
        if path not in cache:
            cache[path] = _load_runs(path)
        runs = cache[path]
        any_run = next(iter(runs.values()))
        known = list(any_run["scores"])
        chosen = known if methods is None else methods
        unknown = [m for m in chosen if m not in known]
        if unknown:
            raise ValueError(f"{path} has no method {unknown}; it has {known}")
        per_source.append((text, runs, chosen, rows))
    keys = set.intersection(*(set(runs) for _, runs, _, _ in per_source))
    left = set.union(*(set(runs) for _, runs, _, _ in per_source)) - keys
    if left:
        log(f"note: {len(left)} run(s) are not in every source of {' + '.join(sources)}: left out")
    out = {}
    for key in sorted(keys, key=lambda k: (k[0], -1 if k[1] is None else k[1])):
        index = true = None
        models = []
        for text, runs, chosen, rows in per_source:
            run = runs[key]
            if index is None:
                index, true = run["test_index"], run["true"]
            elif not np.array_equal(index, run["test_index"]):
                raise ValueError(f"{text}: run seed {key[0]} perm {key[1]} has another test set than {sources[0]}")
            elif not np.array_equal(true, run["true"]):     # same split of another target or file
                raise ValueError(f"{text}: run seed {key[0]} perm {key[1]} has other labels than {sources[0]}")
            picked = np.concatenate([run["scores"][m] for m in chosen])[rows]
            if picked.shape[0] == 0:
                total = sum(run["scores"][m].shape[0] for m in chosen)
                raise ValueError(f"{text}: the slice keeps no model (the methods have {total})")
            models.extend(picked)
        score = combine_scores(models)
        out[key] = {"tau": kendall_tau(score, true), "p@1%": precision_at(score, true, 0.01), "models": len(models)}
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
    ap.add_argument("sources", nargs="+", help="PATH[:METHOD[,METHOD...]][[START:STOP]]")
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
