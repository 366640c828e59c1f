"""Shared helpers of the fgp_ext benchmark suites: timing, result registry, NB201 loading, summary.

Run (never collected by ``pytest python_tests``)::

    /work/venv/bin/python -m pytest bench --benchmark-only -q

Every benchmark records its role with :func:`record` (``ours``, ``builtin`` for a stock-PyTorch
peer, ``thirdparty`` for torch_scatter or scipy, ``reference`` for fgp_ext.reference), its pytest-benchmark
group, and an optional per-unit scale. At the end of the pytest run a table per group prints each
contender's median and the ratio ``peer median / our median`` (> 1 means we are faster), plus a
one-line headline per group: ours vs the fastest built-in peer.

Set ``FGP_BENCH_MD=path`` to also write the summary as Markdown tables (used for RESULTS.md).
"""
from __future__ import annotations

import os
import platform
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

# CPU thread counts measured for every workload; CUDA entries are skipped without a GPU.
CPU_THREADS = tuple(int(t) for t in os.environ.get("FGP_BENCH_THREADS", "1,2").split(","))
DEVICE_THREADS = [pytest.param(("cpu", t), id=f"cpu-t{t}") for t in CPU_THREADS] + [
    pytest.param(("cuda", 0), id="cuda",
                 marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))
]

# Target wall time per contender (seconds of timed rounds); keeps the whole suite under ~10 min.
TARGET_SECONDS = float(os.environ.get("FGP_BENCH_SECONDS", "0.5"))

_RESULTS: "OrderedDict[str, list[dict]]" = OrderedDict()
_LOAD_AT_START = os.getloadavg()


# ----------------------------------------------------------------------------------------------
# timing helpers
# ----------------------------------------------------------------------------------------------
def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_bench(benchmark, fn, *, device: str = "cpu", min_rounds: int = 3, max_rounds: int = 40,
              target: float | None = None):
    """Time ``fn`` with pytest-benchmark in pedantic mode, the number of rounds chosen from one
    warm-up call so that every contender gets about ``target`` seconds. Returns ``fn``'s last result."""
    target = TARGET_SECONDS if target is None else target

    def call():
        out = fn()
        sync(device)
        return out

    t0 = time.perf_counter()
    call()  # warm-up (allocator, lazy init, page faults)
    dt = max(time.perf_counter() - t0, 1e-6)
    rounds = int(min(max_rounds, max(min_rounds, target / dt)))
    # A slow contender (one call > target) already had its warm-up call: no second one.
    return benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=0 if dt > target else 1)


def record(benchmark, *, role: str, contender: str, per: int = 1, unit: str = "call", note: str = ""):
    """Tag the benchmark that just ran: its role in the ratio table and an optional scale
    (``per``: the median is divided by it, e.g. time per graph on a subset)."""
    benchmark.extra_info.update(role=role, contender=contender, per=per, unit=unit, note=note,
                                threads=torch.get_num_threads())
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable
        return
    median = stats.stats.median
    _RESULTS.setdefault(benchmark.group, []).append(
        dict(role=role, contender=contender, median=median, min=stats.stats.min, scaled=median / per, per=per, unit=unit,
             rounds=stats.stats.rounds, note=note))


@pytest.fixture(params=DEVICE_THREADS)
def device_threads(request):
    """``(device, threads)``; sets ``torch.set_num_threads`` for CPU entries and restores it."""
    device, threads = request.param
    old = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(threads)
        assert torch.get_num_threads() == threads
    yield device, threads
    torch.set_num_threads(old)


@pytest.fixture(params=list(CPU_THREADS), ids=[f"cpu-t{t}" for t in CPU_THREADS])
def cpu_threads(request):
    """CPU-only thread counts (the suites with no CUDA variant); sets and restores
    ``torch.set_num_threads``."""
    old = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(old)


def training_epoch(batch, model, batch_size: int, width: int, forward=None):
    """A training epoch as a closure, the same for every encoder suite: every graph of ``batch`` once,
    in a fixed shuffled order, ``batch.select`` per step (as training does), the squared error of
    ``forward(sub_batch)`` (``[B, width]``; default ``model``) against fixed random targets, and an Adam
    step. The closure returns the summed loss."""
    forward = model if forward is None else forward
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(batch.num_graphs, generator=gen)
    target = torch.randn(batch.num_graphs, width, generator=gen)
    chunks = list(order.split(batch_size))

    def epoch():
        total = 0.0
        for ids in chunks:
            loss = (forward(batch.select(ids)) - target.index_select(0, ids)).pow(2).mean()
            extra = model.extra_loss() if hasattr(model, "extra_loss") else None   # as the training loops
            if extra is not None:
                loss = loss + extra
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss)
        return total

    return epoch


# ----------------------------------------------------------------------------------------------
# NB201 data
# ----------------------------------------------------------------------------------------------
def _embedded_nb201():
    from fgp_ext.data import formats

    return formats.load("nb201")


@pytest.fixture(scope="session")
def nb201_arch_strs():
    """The 15,625 NB201 cell strings of the embedded dataset."""
    from fgp_ext.data.spaces import nb201_to_string

    return [nb201_to_string(g.ops) for g in _embedded_nb201().graphs]


@pytest.fixture(scope="session")
def nb201_graphs():
    return list(_embedded_nb201().graphs)


@pytest.fixture(scope="session")
def nb201_batch(nb201_graphs):
    from fgp_ext import collate

    return collate(nb201_graphs)


# ----------------------------------------------------------------------------------------------
# summary
# ----------------------------------------------------------------------------------------------
def _fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.2f} us"


def machine_line() -> str:
    return (f"{platform.node()} | {os.cpu_count()} logical CPUs | {platform.processor() or platform.machine()} | "
            f"torch {torch.__version__} (CPU capability {torch.backends.cpu.get_cpu_capability()}) | "
            f"CUDA available: {torch.cuda.is_available()} | load average (1/5/15 min) at start "
            f"{'/'.join(f'{x:.2f}' for x in _LOAD_AT_START)}, at end {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")


def summary_tables() -> tuple[list[str], list[str]]:
    """(markdown tables per group, headline lines)."""
    md: list[str] = []
    heads: list[str] = []
    for group, rows in _RESULTS.items():
        ours = [r for r in rows if r["role"] == "ours"]
        if not ours:
            continue
        best_ours = min(ours, key=lambda r: r["scaled"])  # the primary entry ("ours-alt" rows are variants)
        md.append(f"#### {group}\n")
        md.append(f"| contender | role | median | min | median per unit | ratio (median / median of "
                  f"{best_ours['contender']}) |")
        md.append("|---|---|---:|---:|---:|---:|")
        for r in sorted(rows, key=lambda r: r["scaled"]):
            per = _fmt_time(r["scaled"]) + (f" / {r['unit']}" if r["per"] != 1 else "")
            ratio = r["scaled"] / best_ours["scaled"]
            note = f" ({r['note']})" if r["note"] else ""
            md.append(f"| {r['contender']}{note} | {r['role']} | {_fmt_time(r['median'])} | {_fmt_time(r['min'])} | {per} "
                      f"| {ratio:.2f}x |")
        md.append("")
        for role, label in (("builtin", "fastest built-in"), ("thirdparty", "third-party"),
                            ("reference", "reference")):
            peers = [r for r in rows if r["role"] == role]
            if not peers:
                continue
            best = min(peers, key=lambda r: r["scaled"])
            heads.append(f"{group}: {best_ours['contender']} vs {label} [{best['contender']}]: "
                         f"{best['scaled'] / best_ours['scaled']:.2f}x")
    return md, heads


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _RESULTS:
        return
    tr = terminalreporter
    md, heads = summary_tables()
    tr.section("fgp_ext benchmark ratios (peer median / our median; > 1 = ours faster)")
    tr.write_line(machine_line())
    for line in md:
        tr.write_line(line)
    tr.section("headline: ours vs fastest peer per workload")
    for h in heads:
        tr.write_line(h)
    out = os.environ.get("FGP_BENCH_MD")
    if out:
        from fgp_ext import _io

        _io.write_text(out, "\n".join([machine_line(), ""] + md + ["", "Headlines:", ""]
                                      + [f"- {h}" for h in heads]) + "\n")
        tr.write_line(f"markdown summary written to {out}")
