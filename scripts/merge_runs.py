"""Merge the summary.json files of `fgp run --seeds ...` processes into one protocol table.

The protocol's nine runs can run as three processes (`--seeds 21`, `--seeds 2021`,
`--seeds 202121`, each with its three permutations); this prints the per-method mean ± std over all
their runs (the numbers one `fgp run --runs 9` would print), and with `--ensemble` runs also each
method's member-0 score beside the ensemble's and the paired difference (ensemble minus member 0:
mean, and in how many runs the ensemble is better), and each member's mean score over the runs
(members are ordered pre-training seed first, then fold: member j = seed + j // K, fold j % K).

    python scripts/merge_runs.py runs/s21/summary.json runs/s2021/summary.json runs/s202121/summary.json \
        [--json merged.json]

The files must come from the same settings (every key of the summary that is not a result must
match), and no (seed, permutation) run may appear twice.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

#: summary keys that describe results or the machine, not the settings
_RESULT_KEYS = {"runs", "mean", "std", "pretrain_s_per_epoch", "finetune_s_per_epoch", "wall_s", "command",
                "collate_s", "surrogate_s", "pretrained_dir"}


def merge(summaries: list[dict]) -> dict:
    """One summary of the runs of ``summaries`` (same settings): ``runs``, ``mean`` / ``std`` per
    method and metric, and ``paired`` (ensemble minus member 0) where the runs have members."""
    if not summaries:
        raise ValueError("no summary given")
    settings = {k: v for k, v in summaries[0].items() if k not in _RESULT_KEYS}
    for s in summaries[1:]:
        other = {k: v for k, v in s.items() if k not in _RESULT_KEYS}
        diff = sorted(k for k in set(settings) | set(other) if settings.get(k) != other.get(k))
        if diff:
            raise ValueError(f"the summaries were run with other settings: {diff}")
    runs = [r for s in summaries for r in s["runs"]]
    keys = [(r["seed"], r["perm_seed"]) for r in runs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"a (seed, permutation) run appears twice: {keys}")
    methods = [m for m in runs[0] if isinstance(runs[0][m], dict)]
    out = {**settings, "runs": runs, "mean": {}, "std": {}, "paired": {},
           "wall_s": float(sum(s.get("wall_s") or 0.0 for s in summaries))}
    for m in methods:
        metrics = [k for k, v in runs[0][m].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        vals = {k: np.array([r[m][k] for r in runs], dtype=np.float64) for k in metrics}
        out["mean"][m] = {k: float(v.mean()) for k, v in vals.items()}
        out["std"][m] = {k: float(v.std()) for k, v in vals.items()}
        if "single_kendall_tau" in vals:
            d = vals["kendall_tau"] - vals["single_kendall_tau"]
            out["paired"][m] = {"mean_gain": float(d.mean()), "better": int((d > 0).sum()), "runs": int(d.size)}
        member_taus = [r[m].get("member_taus") for r in runs]
        if member_taus[0] and all(t is not None and len(t) == len(member_taus[0]) for t in member_taus):
            out.setdefault("member_means", {})[m] = np.mean(np.array(member_taus, dtype=np.float64), axis=0).tolist()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("summaries", nargs="+", help="summary.json files of fgp run")
    ap.add_argument("--json", default=None, help="also write the merged summary here")
    args = ap.parse_args(argv)
    try:
        loaded = []
        for path in args.summaries:
            with open(path, encoding="utf-8") as f:
                loaded.append(json.load(f))
        merged = merge(loaded)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"merge_runs: error: {e}", file=sys.stderr)
        return 2
    print(f"{len(merged['runs'])} runs of {merged.get('encoder')} on {merged.get('dataset')} "
          f"(ensemble {merged.get('ensemble', 1)}, folds {merged.get('folds', 1)}), wall {merged['wall_s'] / 60:.1f} min in all")
    for m, vals in merged["mean"].items():
        sd = merged["std"][m]
        p1 = "n/a (test set under 100)" if vals.get("p@1%") is None else f"{vals['p@1%']:.3f}"
        line = f"{m:<16} Kendall tau {vals['kendall_tau']:.4f} ± {sd['kendall_tau']:.4f}   P@1% {p1}"
        if m in merged["paired"]:
            p = merged["paired"][m]
            line += (f"   member 0 alone {vals['single_kendall_tau']:.4f} ± {sd['single_kendall_tau']:.4f}"
                     f"   gain {p['mean_gain']:+.4f} (better in {p['better']} of {p['runs']})")
        print(line)
    folds = int(merged.get("folds") or 1)
    targets = [merged.get("aux_target")] + list(merged.get("ensemble_aux_targets") or [])

    def model_name(m: str, j: int) -> str:
        """Model j's seed offset, pre-training target (with --ensemble-aux-target) and fold, in the
        order of fgp_ext.train.predictions (the supervised baseline has no extra targets)."""
        t = len(targets) if m.startswith("fgp") else 1
        about = f" {targets[(j // folds) % t]}" if t > 1 else ""
        return f"seed+{j // (t * folds)}{about} fold {j % folds}"

    for m, means in merged.get("member_means", {}).items():
        print(f"{m:<16} members' mean Kendall tau: "
              + "  ".join(f"{model_name(m, j)} {t:.4f}" for j, t in enumerate(means)))
    if args.json:
        from fgp_ext import _io

        _io.write_json(args.json, merged)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
