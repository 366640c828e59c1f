"""Zero-cost proxies: deterministic for a fixed seed, exact params/FLOPs, shipped NB201 table."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from fgp_ext.networks import NB201Network, build_network
from fgp_ext.proxies import (DEFAULT_AUX_PROXY, PROXIES, compute_proxies, load_nb201_proxies,
                             nb201_all_proxies, nb201_canonical, nb201_proxy, synthetic_batch)

A = "|skip_connect~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_1x1~0|nor_conv_1x1~1|none~2|"
B = "|avg_pool_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_3x3~1|skip_connect~2|"


pytestmark = pytest.mark.usefixtures("one_thread")


def _net(arch, seed=0):
    torch.manual_seed(seed)
    return NB201Network(arch)


def test_all_proxies_deterministic_for_fixed_seed():
    kw = dict(batch_size=8, input_shape=(3, 16, 16), flops_shape=(3, 32, 32))
    r1 = compute_proxies(_net(A), seed=3, **kw)
    r2 = compute_proxies(_net(A), seed=3, **kw)
    assert list(r1) == list(PROXIES)
    assert r1 == r2
    assert all(math.isfinite(v) for v in r1.values())
    r3 = compute_proxies(_net(A, seed=1), seed=4, **kw)
    assert r3["params"] == r1["params"] and r3["flops"] == r1["flops"]
    assert r3["snip"] != r1["snip"] and r3["nwot"] != r1["nwot"]


def test_params_flops_exact_and_network_unchanged():
    net = _net(B)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    r = compute_proxies(net, ["params", "flops", "synflow"])
    assert r["params"] == 316346 and r["flops"] == 46343872  # published: 0.316346 / 46.343872 M
    for k, v in net.state_dict().items():
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in net.parameters())


def test_proxies_on_other_spaces_and_degenerate_cells():
    g = {"normal": [["sep_conv_3x3", 0], ["skip_connect", 1]] * 4,
         "reduce": [["max_pool_3x3", 0], ["dil_conv_3x3", 1]] * 4}
    torch.manual_seed(0)
    net = build_network("darts", g, C=8, layers=4)
    r = compute_proxies(net, ["synflow", "grad_norm", "jacov"], batch_size=4)
    assert all(math.isfinite(v) for v in r.values())
    r = compute_proxies(_net(["none"] * 6), batch_size=4, input_shape=(3, 16, 16))
    assert all(math.isfinite(v) for v in r.values())
    assert r["nwot"] == 0.0 and r["synflow"] == 0.0


def test_bad_proxy_arguments():
    with pytest.raises(ValueError, match="unknown proxy"):
        compute_proxies(_net(A), ["params", "zen"])
    with pytest.raises(ValueError, match="batch_size"):
        synthetic_batch(0)
    with pytest.raises(ValueError, match="6 edge ops"):
        nb201_canonical(["none"] * 3)


def test_canonical_isomorphism_and_all_cells_path():
    c1 = ["nor_conv_3x3", "skip_connect", "none", "avg_pool_3x3", "nor_conv_1x1", "skip_connect"]
    c2 = ["skip_connect", "nor_conv_3x3", "none", "avg_pool_3x3", "skip_connect", "nor_conv_1x1"]
    assert nb201_canonical(c1) == nb201_canonical(c2)
    c3 = list(c1)
    c3[2] = "skip_connect"  # edge 1->2 present: nodes not interchangeable
    assert nb201_canonical(c3) == tuple(c3)
    strs = [NB201Network(c).arch_str for c in (c1, c2, c3)] + [A]
    kw = dict(batch_size=4, resolution=8, seed=0)
    v1 = nb201_all_proxies(strs, **kw)
    v2 = nb201_all_proxies(strs, **kw)
    for k in PROXIES:
        np.testing.assert_array_equal(v1[k], v2[k])
        assert v1[k][0] == v1[k][1]  # isomorphic cells
    assert v1["params"][3] == 615386 and v1["flops"][3] == 88307392


def test_shipped_table_loads_and_aligns():
    from fgp_ext.data.formats import load
    from fgp_ext.data.spaces import nb201_to_string

    ds = load("nb201")
    p = load_nb201_proxies()
    assert set(p) == set(PROXIES)
    for k, v in p.items():
        assert v.shape == (len(ds),) and np.isfinite(v).all(), k
    rng = np.random.default_rng(0)
    for i in rng.choice(len(ds), 3, replace=False):
        net = NB201Network(nb201_to_string(ds[int(i)].ops))
        assert p["params"][i] == sum(q.numel() for q in net.parameters())
    # a shuffled subset is aligned through its official index
    idx = rng.permutation(len(ds))[:50]
    sub = ds.subset(idx)
    ps = load_nb201_proxies(["snip", "flops"], dataset=sub)
    np.testing.assert_array_equal(ps["snip"], p["snip"][idx])
    assert nb201_proxy(dataset=sub).shape == (50,)
    assert DEFAULT_AUX_PROXY in PROXIES


class _FixedChannels(torch.nn.Module):
    """Returns the given [C, H, W] feature map (batch 1) whatever the input: MeCo of this module
    is the smallest eigenvalue of its channels' correlation matrix."""

    def __init__(self, feat):
        super().__init__()
        self.register_buffer("feat", torch.as_tensor(feat, dtype=torch.float32))

    def forward(self, x):
        return self.feat[None] + 0 * x.sum()


@pytest.mark.parametrize("channels,expected", [
    ([[1, -1, 1, -1], [1, 1, -1, -1]], 1.0),     # centred and orthogonal: correlation = identity
    ([[1, 2, 3, 4], [2, 4, 6, 8]], 0.0),         # perfectly correlated: [[1,1],[1,1]] -> 0 and 2
    ([[1, 2, 3, 5], [7, 7, 7, 7]], 0.0),         # a constant channel: zero row/column -> 0
    ([[1, -1, 1, -1], [1, 1, -1, -1], [1, -1, 0, 0]], 1 - 1 / math.sqrt(2)),  # corr(1,3) = 1/sqrt2
])
def test_meco_hand_worked(channels, expected):
    feat = torch.tensor(channels, dtype=torch.float32).reshape(len(channels), 2, 2)
    r = compute_proxies(_FixedChannels(feat), ["meco"], input_shape=(3, 2, 2))
    assert r["meco"] == pytest.approx(expected, abs=1e-6)


def test_meco_survives_non_finite_activations():
    feat = torch.tensor([[1.0, -1, 1, -1], [1, 1, -1, -1], [float("inf"), 1, 2, 3], [float("nan"), 0, 1, 2]])
    r = compute_proxies(_FixedChannels(feat.reshape(4, 2, 2)), ["meco"], input_shape=(3, 2, 2))
    # the two non-finite channels get zero rows: eigenvalues {1, 1, 0, 0}
    assert r["meco"] == 0.0


def test_meco_matches_plain_reference_and_leaves_the_network_alone():
    net = _net(A)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.eval()
    got = compute_proxies(net, ["meco"], seed=5)["meco"]
    assert not net.training and all(torch.equal(v, before[k]) for k, v in net.state_dict().items())

    # reference: the published recipe written out directly (corrcoef, NaN -> 0, eigenvalues one
    # module at a time) on the same image, train-mode BN on a copy
    import copy

    ref_net = copy.deepcopy(net).train()
    x = torch.randn((1, 3, 32, 32), generator=torch.Generator().manual_seed(5 + 104_729))
    terms = []

    def hook(m, inp, out):
        if out.dim() >= 3:
            c = torch.nan_to_num(torch.corrcoef(out[0].detach().reshape(out.shape[1], -1).double()))
            terms.append(float(torch.linalg.eigvalsh(c)[0]))

    hs = [m.register_forward_hook(hook) for m in ref_net.modules()]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # corrcoef of a constant channel (a `none` edge) warns
        ref_net(x)
    for h in hs:
        h.remove()
    assert len(terms) > 100
    assert got == pytest.approx(sum(terms), rel=1e-9, abs=1e-9)
    # a different image (seed) gives a different score; the same one the same score
    assert compute_proxies(net, ["meco"], seed=6)["meco"] != got
    assert compute_proxies(net, ["meco"], seed=5)["meco"] == got


def test_shipped_meco_column_is_reproducible():
    """The shipped MeCo column is what nb201_all_proxies computes (slot-seeded bank, 32x32)."""
    from fgp_ext.data.formats import load
    from fgp_ext.data.spaces import nb201_to_string

    ds = load("nb201")
    p = load_nb201_proxies(["meco"])["meco"]
    rows = np.random.default_rng(1).choice(len(ds), 3, replace=False)
    strs = [nb201_to_string(ds[int(i)].ops) for i in rows]
    again = nb201_all_proxies(strs, ["meco"], seed=0)["meco"]
    np.testing.assert_allclose(again, p[rows], rtol=1e-6)


def test_meco_restores_modes_ignores_dropout_and_keeps_the_global_rng():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                              torch.nn.Dropout(0.5), torch.nn.Conv2d(8, 8, 3, padding=1))
    net.train()
    net[1].eval()  # a deliberately frozen BatchNorm inside a training model
    state = torch.random.get_rng_state()
    a = compute_proxies(net, ["meco", "synflow", "flops"], input_shape=(3, 8, 8))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert [m.training for m in net.modules()] == [True, True, False, True, True]
    assert compute_proxies(net, ["meco"], input_shape=(3, 8, 8))["meco"] == a["meco"]  # dropout off


def test_meco_follows_the_network_dtype_and_names_a_failing_forward():
    net = _net(A).double()
    assert math.isfinite(compute_proxies(net, ["meco"], input_shape=(3, 8, 8))["meco"])
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4), torch.nn.BatchNorm1d(4))
    with pytest.raises(RuntimeError, match="MeCo: the forward pass of one image of shape"):
        compute_proxies(flat, ["meco"], input_shape=(3, 2, 2))  # BatchNorm1d cannot train on one sample
