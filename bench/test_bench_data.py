"""Data loading and ranking metrics, the two costs every protocol run pays outside the encoder.

- Loading the embedded NAS-Bench-201 table (``fgp_ext.load("nb201")``, its array cache cleared
  before every call): 15,625 cells, their graphs and all target columns.
- Kendall tau-b on 16,000 scores with ties in both: ``fgp_ext.metrics.kendall_tau`` (O(n log n)
  merge count) vs ``scipy.stats.kendalltau`` as the peer, outputs checked equal first.

These used to be wall-clock assertions in the tests; speed belongs here, measured side by side.
"""
from __future__ import annotations

import numpy as np
import pytest

from benchutil import record, run_bench

import fgp_ext
from fgp_ext import metrics
from fgp_ext.data import formats

N_RANK = 16_000


def test_load_embedded_nb201(benchmark):
    """Cold load of the embedded NB201 dataset (package data -> Dataset of 15,625 ArchGraphs)."""
    def load():
        formats._embedded_arrays.cache_clear()
        return fgp_ext.load("nb201")

    benchmark.group = "data | load embedded NB201 (cold) | cpu"
    ds = run_bench(benchmark, load, target=1.0)
    assert len(ds) == 15625
    record(benchmark, role="ours", contender='fgp_ext.load("nb201")', per=len(ds), unit="cell")


@pytest.fixture(scope="module")
def tied_scores():
    rng = np.random.default_rng(3)
    t = rng.normal(size=N_RANK).round(2)            # ties in both
    p = (t + rng.normal(size=N_RANK)).round(2)
    return p, t


def test_kendall_ours(benchmark, tied_scores):
    p, t = tied_scores
    benchmark.group = f"metrics | Kendall tau-b, n={N_RANK} with ties | cpu"
    tau = run_bench(benchmark, lambda: metrics.kendall_tau(p, t))
    assert np.isfinite(tau)
    record(benchmark, role="ours", contender="fgp_ext.metrics.kendall_tau")


def test_kendall_scipy(benchmark, tied_scores):
    stats = pytest.importorskip("scipy.stats")
    p, t = tied_scores
    benchmark.group = f"metrics | Kendall tau-b, n={N_RANK} with ties | cpu"
    tau = run_bench(benchmark, lambda: stats.kendalltau(p, t).statistic)
    np.testing.assert_allclose(tau, metrics.kendall_tau(p, t), rtol=1e-12)
    record(benchmark, role="thirdparty", contender="scipy.stats.kendalltau")
