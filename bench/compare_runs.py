"""Compare our own contenders between two benchmark runs (the FGP_BENCH_MD tables of each).

    python bench/compare_runs.py BEFORE.md AFTER.md [--out table.md]

For every workload table and every row whose role is `ours` or `ours-alt`, prints the median of
both runs and after / before (above 1: slower after). Used to check that a change (the stable-ABI
port) slows no op by more than 5%.

Two runs minutes apart on a shared machine differ by more than 5% on their own (the same build
measured twice here: 0.46x to 1.48x per row). Where a table also times contenders the change
cannot affect (roles `builtin`, `thirdparty`, `reference`: stock PyTorch and plain-PyTorch code),
the column `normalised` divides each run's ratio by the same ratio of those peers (their geometric
mean), which cancels the machine's drift between the runs.
"""
from __future__ import annotations

import argparse
import math
import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}


def _seconds(text: str) -> float:
    value, unit = text.strip().split()
    return float(value) * _UNITS[unit]


PEER_ROLES = ("builtin", "thirdparty", "reference")


def parse(path: str) -> tuple[dict[tuple[str, str], float], dict[str, dict[str, float]]]:
    """({(table title, contender): median seconds} for our rows, {table: {peer: median seconds}})."""
    ours, peers, title = {}, {}, None
    for line in open(path, encoding="utf-8"):
        if line.startswith("#### "):
            title = line[5:].strip()
        elif line.startswith("| ") and title and not line.startswith("| contender") and "---" not in line:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 3 and cells[1] in ("ours", "ours-alt"):
                ours[(title, cells[0])] = _seconds(cells[2])
            elif len(cells) >= 3 and cells[1] in PEER_ROLES:
                peers.setdefault(title, {})[cells[0]] = _seconds(cells[2])
    return ours, peers


def peer_drift(table: str, before_peers: dict, after_peers: dict) -> float | None:
    """Geometric mean of after / before over the peers timed in both runs of one table."""
    common = before_peers.get(table, {}).keys() & after_peers.get(table, {}).keys()
    if not common:
        return None
    log_sum = sum(math.log(after_peers[table][p] / before_peers[table][p]) for p in common)
    return math.exp(log_sum / len(common))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--out")
    args = ap.parse_args()
    (before, before_peers), (after, after_peers) = parse(args.before), parse(args.after)
    rows = ["| workload | contender | before | after | after / before | normalised by the table's peers |",
            "|---|---|---:|---:|---:|---:|"]
    ratios, normalised = [], []
    for key in sorted(before.keys() & after.keys()):
        b, a = before[key], after[key]
        ratios.append(a / b)
        drift = peer_drift(key[0], before_peers, after_peers)
        norm = "-"
        if drift is not None:
            normalised.append(a / b / drift)
            norm = f"{a / b / drift:.3f}" + (" **(> 1.05)**" if a / b / drift > 1.05 else "")
        rows.append(f"| {key[0]} | {key[1]} | {b * 1e3:.3f} ms | {a * 1e3:.3f} ms | {a / b:.3f} | {norm} |")
    missing = sorted(before.keys() ^ after.keys())
    text = "\n".join(rows)
    for name, values in (("after / before", ratios), ("normalised", normalised)):
        if values:
            values = sorted(values)
            text += (f"\n\n{name}: {len(values)} rows, median {values[len(values) // 2]:.3f}, min {values[0]:.3f}, "
                     f"max {values[-1]:.3f}; {sum(r > 1.05 for r in values)} rows above 1.05.")
    if missing:
        text += f"\nIn one run only: {missing}"
    print(text)
    if args.out:
        from fgp_ext import _io

        _io.write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
