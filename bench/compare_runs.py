"""Compare our own contenders between two benchmark runs (the FGP_BENCH_MD tables of each).

    python bench/compare_runs.py BEFORE.md AFTER.md [--out table.md]

For every workload table and every row whose role is `ours` or `ours-alt`, prints the median of
both runs and after / before (above 1: slower after). Used to check that a change (the stable-ABI
port) slows no op by more than 5%.
"""
from __future__ import annotations

import argparse
import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}


def _seconds(text: str) -> float:
    value, unit = text.strip().split()
    return float(value) * _UNITS[unit]


def parse(path: str) -> dict[tuple[str, str], float]:
    """{(table title, contender): median seconds} for our rows."""
    out, title = {}, None
    for line in open(path, encoding="utf-8"):
        if line.startswith("#### "):
            title = line[5:].strip()
        elif line.startswith("| ") and title and not line.startswith("| contender") and "---" not in line:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 3 and cells[1] in ("ours", "ours-alt"):
                out[(title, cells[0])] = _seconds(cells[2])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--out")
    args = ap.parse_args()
    before, after = parse(args.before), parse(args.after)
    rows = ["| workload | contender | before | after | after / before |", "|---|---|---:|---:|---:|"]
    ratios = []
    for key in sorted(before.keys() & after.keys()):
        b, a = before[key], after[key]
        ratios.append(a / b)
        flag = " **(slower > 5%)**" if a / b > 1.05 else ""
        rows.append(f"| {key[0]} | {key[1]} | {b * 1e3:.3f} ms | {a * 1e3:.3f} ms | {a / b:.3f}{flag} |")
    missing = sorted(before.keys() ^ after.keys())
    text = "\n".join(rows)
    if ratios:
        ratios.sort()
        text += (f"\n\n{len(ratios)} rows; after / before: median {ratios[len(ratios) // 2]:.3f}, "
                 f"min {ratios[0]:.3f}, max {ratios[-1]:.3f}; {sum(r > 1.05 for r in ratios)} rows slower by more than 5%.")
    if missing:
        text += f"\nIn one run only: {missing}"
    print(text)
    if args.out:
        open(args.out, "w", encoding="utf-8").write(text + "\n")


if __name__ == "__main__":
    main()
