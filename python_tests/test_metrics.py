"""Ranking metrics (fgp_ext/metrics.py) against scipy and hand-worked examples."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fgp_ext import metrics as M

scipy_stats = pytest.importorskip("scipy.stats")


def scipy_tau(a, b):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(scipy_stats.kendalltau(a, b).statistic)


def scipy_rho(a, b):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(scipy_stats.spearmanr(a, b).statistic)


def same(x, y, tol=1e-12):
    return (math.isnan(x) and math.isnan(y)) or abs(x - y) <= tol


# ---------------------------------------------------------------------------- correlations

pairs = st.integers(min_value=2, max_value=60).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(-3, 3), min_size=n, max_size=n),      # heavy ties
        st.lists(st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32),
                 min_size=n, max_size=n),
    ))


@settings(max_examples=300, deadline=None)
@given(pairs)
def test_against_scipy_hypothesis(ab):
    a, b = (np.asarray(v, dtype=np.float64) for v in ab)
    assert same(M.kendall_tau(a, b), scipy_tau(a, b))
    assert same(M.kendall_tau(b, a), scipy_tau(b, a))
    assert same(M.spearman(a, b), scipy_rho(a, b), 1e-10)


@pytest.mark.parametrize("n, levels", [(2, 2), (7, 3), (100, 5), (1000, 20), (5000, 10_000)])
def test_against_scipy_random_with_ties(n, levels):
    rng = np.random.default_rng(n)
    for _ in range(5):
        a = rng.integers(0, levels, n).astype(float)
        b = a + rng.integers(0, levels, n)          # correlated, with ties
        assert same(M.kendall_tau(a, b), scipy_tau(a, b))
        assert same(M.spearman(a, b), scipy_rho(a, b), 1e-10)
        c = rng.normal(size=n)
        assert same(M.kendall_tau(c, b), scipy_tau(c, b))


def test_large_input_exact():
    """16,000 tied scores: the O(n log n) path agrees with scipy (its speed: bench/test_bench_data.py)."""
    rng = np.random.default_rng(3)
    n = 16_000
    t = rng.normal(size=n).round(2)            # ties in both
    p = (t + rng.normal(size=n)).round(2)
    out = M.evaluate_ranking(p, t)
    assert same(out["kendall_tau"], scipy_tau(p, t))
    assert same(out["spearman"], scipy_rho(p, t), 1e-10)


def test_hand_worked_correlations():
    # pairs (1,2): concordant, (1,3): concordant, (2,3): discordant -> tau = 1/3
    assert M.kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # spearman: ranks d = [0, 1, -1] -> 1 - 6*2/(3*8) = 0.5
    assert M.spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    # tau-b with ties: x=[1,1,2], y=[1,2,3]: n0=3, n1=1, n2=0, nc=2, nd=0 -> 2/sqrt(2*3)
    assert M.kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert M.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert math.isnan(M.kendall_tau([1, 1, 1], [1, 2, 3]))
    assert math.isnan(M.spearman([1, 2, 3], [5, 5, 5]))


def test_rankdata_average_ties():
    np.testing.assert_array_equal(M.rankdata([10, 20, 10, 30, 20, 20]), [1.5, 4, 1.5, 6, 4, 4])


# ---------------------------------------------------------------------------- precision@K

def test_precision_hand_examples():
    true = np.arange(10, 0, -1, dtype=float)          # item 0 best ... item 9 worst
    pred = np.array([9, 8, 1, 7, 2, 3, 4, 6, 5, 0.])  # predicted order: 0,1,3,7,8,6,5,4,2,9
    # k = int(10 * 0.5) = 5: true top {0,1,2,3,4}; pred top {0,1,3,7,8} -> 3/5
    assert M.precision_at(pred, true, 0.5) == pytest.approx(0.6)
    # k = 1: item 0 is both the true and predicted best
    assert M.precision_at(pred, true, 0.1) == 1.0
    # k = int(10 * 0.01) = 0 -> nan
    assert math.isnan(M.precision_at(pred, true, 0.01))
    assert M.precision_at(pred, true, 1.0) == 1.0
    # k = int(10 * 0.3) = 3: true {0,1,2}, pred {0,1,3} -> 2/3
    assert M.precision_at(pred, true, 0.3) == pytest.approx(2 / 3)


def test_precision_at_200_items():
    n = 200
    true = np.arange(n, dtype=float)                  # best items: 199, 198, ...
    pred = true.copy()
    pred[199], pred[0] = pred[0], pred[199]           # the best item predicted worst
    # p@1%: k = 2, true top {199, 198}, pred top {0, 198} -> 1/2
    out = M.evaluate_ranking(pred, true)
    assert out["p@1%"] == 0.5
    # p@5%: k = 10: pred top {0, 198..190} vs true {199..190} -> 9/10
    assert out["p@5%"] == pytest.approx(0.9)
    assert out["p@100%"] == 1.0


def test_precision_ties_are_broken_by_position():
    true = np.array([1.0, 1.0, 1.0, 0.0])
    pred = np.array([0.0, 5.0, 5.0, 5.0])
    # k = 2: true top = first two of the tied 1.0s {0, 1}; pred top = {1, 2} -> 1/2
    assert M.precision_at(pred, true, 0.5) == 0.5


def test_evaluate_ranking_keys_and_extremes():
    x = np.arange(300, dtype=float)
    out = M.evaluate_ranking(x, x)
    assert list(out) == ["kendall_tau", "spearman", "p@1%", "p@5%", "p@10%", "p@50%", "p@100%"]
    assert out["kendall_tau"] == 1.0 and out["spearman"] == pytest.approx(1.0)
    assert all(out[k] == 1.0 for k in out if k.startswith("p@"))
    rev = M.evaluate_ranking(-x, x)
    assert rev["kendall_tau"] == -1.0 and rev["spearman"] == pytest.approx(-1.0)
    assert rev["p@1%"] == 0.0 and rev["p@50%"] == 0.0 and rev["p@100%"] == 1.0
    small = M.evaluate_ranking([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])
    assert math.isnan(small["p@1%"]) and math.isnan(small["p@10%"])
    assert small["p@50%"] == 0.0  # k=1: pred best = item 2, true best = item 1


def test_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    p = torch.tensor([0.1, 0.4, 0.2, 0.9], requires_grad=True)
    t = torch.tensor([1.0, 3.0, 2.0, 4.0])
    assert M.kendall_tau(p, t) == 1.0
    assert M.evaluate_ranking(p.reshape(-1, 1), t)["spearman"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------- errors

@pytest.mark.parametrize("pred, true, fragment", [
    ([1, 2, 3], [1, 2], "same length, got 3 and 2"),
    ([1.0], [2.0], "at least 2 items"),
    ([], [], "at least 2 items"),
    ([1, np.nan, 3], [1, 2, 3], "pred contains 1 NaN/inf value(s) (first at position 1)"),
    ([1, 2, 3], [1, 2, np.inf], "true contains 1 NaN/inf"),
    (np.ones((2, 3)), np.ones((2, 3)), "must be 1-D"),
    (["a", "b"], [1, 2], "must be numeric"),
])
@pytest.mark.parametrize("fn", [M.kendall_tau, M.spearman, M.evaluate_ranking,
                                lambda p, t: M.precision_at(p, t, 0.5)])
def test_errors(fn, pred, true, fragment):
    with pytest.raises(ValueError) as ei:
        fn(pred, true)
    assert fragment in str(ei.value)


def test_precision_bad_ratio():
    with pytest.raises(ValueError, match="ratio"):
        M.precision_at([1, 2], [1, 2], 0.0)
    with pytest.raises(ValueError, match="ratio"):
        M.precision_at([1, 2], [1, 2], 1.5)
