"""Real networks from specs: parameter counts equal the published ones; bad specs are clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fgp_ext.networks import DartsNetwork, NB101Network, NB201Network, build_network, count_params
from fgp_ext.proxies import count_flops


pytestmark = pytest.mark.usefixtures("one_thread")


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

# (arch_str, params [M], flops [M]) from nb201_zc_725.json (NASLib)
NB201_PUBLISHED = [
    ("|skip_connect~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_1x1~0|nor_conv_1x1~1|none~2|",
     0.615386, 88.307392),
    ("|avg_pool_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_3x3~1|skip_connect~2|",
     0.316346, 46.343872),
    ("|none~0|+|skip_connect~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|none~2|",
     0.802426, 115.402432),
    ("|nor_conv_1x1~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|"
     "avg_pool_3x3~2|", 0.101306, 18.757312),
]
# (matrix, ops, params [M]) from nb101_500.json; the first two need pruning
NB101_PUBLISHED = [
    ([[0, 1, 1, 1, 1, 0, 1], [0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 1, 0],
      [0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]],
     ["input", "maxpool3x3", "maxpool3x3", "conv3x3-bn-relu", "conv3x3-bn-relu",
      "conv3x3-bn-relu", "output"], 4.095778),
    ([[0, 1, 1, 0, 0, 1, 0], [0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 1, 0],
      [0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]],
     ["input", "conv3x3-bn-relu", "maxpool3x3", "conv1x1-bn-relu", "conv1x1-bn-relu",
      "maxpool3x3", "output"], 1.749031),
    ([[0, 0, 1, 1, 1, 0, 1], [0, 0, 1, 1, 1, 1, 0], [0, 0, 0, 1, 1, 0, 1], [0, 0, 0, 0, 1, 0, 0],
      [0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]],
     ["input", "maxpool3x3", "conv3x3-bn-relu", "maxpool3x3", "maxpool3x3", "maxpool3x3",
      "output"], 4.518282),
]
# (genotype, params [M]) from nb301_725.json
NB301_PUBLISHED = [
    ({"normal": [["max_pool_3x3", 0], ["dil_conv_3x3", 1], ["avg_pool_3x3", 1],
                 ["avg_pool_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0],
                 ["sep_conv_3x3", 1], ["skip_connect", 3]],
      "reduce": [["max_pool_3x3", 1], ["skip_connect", 0], ["sep_conv_3x3", 1],
                 ["sep_conv_3x3", 0], ["max_pool_3x3", 3], ["avg_pool_3x3", 0],
                 ["max_pool_3x3", 2], ["dil_conv_5x5", 3]]}, 0.856298),
    ({"normal": [["dil_conv_3x3", 0], ["max_pool_3x3", 1], ["avg_pool_3x3", 2],
                 ["skip_connect", 0], ["skip_connect", 3], ["sep_conv_3x3", 0],
                 ["max_pool_3x3", 1], ["dil_conv_3x3", 3]],
      "reduce": [["avg_pool_3x3", 1], ["skip_connect", 0], ["dil_conv_3x3", 0],
                 ["max_pool_3x3", 1], ["dil_conv_5x5", 0], ["skip_connect", 2],
                 ["dil_conv_5x5", 4], ["max_pool_3x3", 0]]}, 0.673834),
    ({"normal": [["dil_conv_5x5", 1], ["sep_conv_3x3", 0], ["avg_pool_3x3", 1],
                 ["skip_connect", 0], ["dil_conv_3x3", 3], ["dil_conv_3x3", 1],
                 ["sep_conv_3x3", 0], ["avg_pool_3x3", 2]],
      "reduce": [["dil_conv_3x3", 1], ["dil_conv_5x5", 0], ["max_pool_3x3", 1],
                 ["skip_connect", 0], ["sep_conv_3x3", 1], ["dil_conv_3x3", 0],
                 ["dil_conv_3x3", 3], ["avg_pool_3x3", 0]]}, 0.885674),
]
DARTS_V2 = {
    "normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["sep_conv_3x3", 1],
               ["sep_conv_3x3", 1], ["skip_connect", 0], ["skip_connect", 0], ["dil_conv_3x3", 2]],
    "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1],
               ["max_pool_3x3", 0], ["skip_connect", 2], ["skip_connect", 2], ["max_pool_3x3", 1]],
}


@pytest.mark.parametrize("arch,params,flops", NB201_PUBLISHED)
def test_nb201_params_and_flops_match_published(arch, params, flops):
    net = NB201Network(arch)
    assert count_params(net) == round(params * 1e6)
    assert count_flops(net) == round(flops * 1e6)


def test_nb201_forward_and_known_sizes():
    net = build_network("nb201", {"arch_str": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|"
                                              "nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"})
    assert count_params(net) == 1531546  # the largest NB201 network (1.53 MB in the paper)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    empty = NB201Network(["none"] * 6)
    out = empty(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert NB201Network(["skip_connect"] * 6, num_classes=100)(torch.randn(1, 3, 32, 32)).shape \
        == (1, 100)


@pytest.mark.parametrize("matrix,ops,params", NB101_PUBLISHED)
def test_nb101_params_match_published(matrix, ops, params):
    net = build_network("nb101", {"matrix": matrix, "ops": ops})
    assert count_params(net) == round(params * 1e6)


def test_nb101_forward_small():
    m, o, _ = NB101_PUBLISHED[1]
    net = NB101Network(m, o, stem_channels=16)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("genotype,params", NB301_PUBLISHED)
def test_nb301_params_match_published(genotype, params):
    assert count_params(build_network("nb301", {"genotype": genotype})) == round(params * 1e6)


def test_nb301_and_nb101_flops_match_published():
    assert count_flops(build_network("nb301", NB301_PUBLISHED[0][0])) == 153499136  # 153.499136 M
    m, o, _ = NB101_PUBLISHED[0]
    assert count_flops(build_network("nb101", (m, o))) == 624558080  # 624.55808 M


def test_darts_original_and_forward():
    net = DartsNetwork(DARTS_V2, C=36, layers=20, auxiliary=True, op_affine=True, pool_bn=False)
    assert count_params(net) == 3349342  # DARTS-V2 on CIFAR-10: 3.3M (auxiliary head excluded)
    small = DartsNetwork(DARTS_V2, C=8, layers=5, auxiliary=True)
    small.train()
    logits, aux = small(torch.randn(2, 3, 32, 32))
    assert logits.shape == aux.shape == (2, 10)
    small.eval()
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.skipif(not (SHARED / "nb201_zc_725.json").exists(), reason="shared data absent")
def test_all_published_params_when_available():
    rows = json.loads((SHARED / "nb201_zc_725.json").read_text())[::25]
    for r in rows:
        assert count_params(NB201Network(r["arch_str"])) == round(r["params"] * 1e6)
    rows = json.loads((SHARED / "nb301_725.json").read_text())[::60]
    for r in rows:
        assert count_params(build_network("darts", r)) == round(r["params"] * 1e6)
    rows = json.loads((SHARED / "nb101_500.json").read_text())[::50]
    for r in rows:
        assert count_params(build_network("nb101", r)) == round(r["params"] * 1e6)


@pytest.mark.parametrize("space,spec,match", [
    ("nb201", "|nor_conv_3x3~0|+|bogus~0|none~1|+|none~0|none~1|none~2|", "unknown op"),
    ("nb201", "|nor_conv_3x3~0|+|none~0|", "3 '\\+'-separated"),
    ("nb201", ["none"] * 5, "6 edge ops"),
    ("nb201", {"arch": "x"}, "arch_str"),
    ("nb101", {"matrix": [[0, 1], [1, 0]], "ops": ["input", "output"]}, "upper-triangular"),
    ("nb101", {"matrix": [[0, 1, 0], [0, 0, 0], [0, 0, 0]],
               "ops": ["input", "conv3x3-bn-relu", "output"]}, "not reachable"),
    ("nb101", {"matrix": [[0, 1, 1], [0, 0, 1], [0, 0, 0]],
               "ops": ["input", "conv5x5", "output"]}, "unknown NB101 op"),
    ("nb101", {"ops": ["input", "output"]}, "missing"),
    ("nb301", {"normal": DARTS_V2["normal"][:7], "reduce": DARTS_V2["reduce"]}, "8 \\[op, input\\]"),
    ("nb301", {"normal": [["sep_conv_3x3", 5]] * 8, "reduce": DARTS_V2["reduce"]}, "out of range"),
    ("nb301", {"normal": DARTS_V2["normal"]}, "missing"),
    ("nb999", "x", "unknown search space"),
])
def test_bad_spec_is_a_clear_error(space, spec, match):
    with pytest.raises(ValueError, match=match):
        build_network(space, spec)


def test_bad_sizes_rejected():
    with pytest.raises(ValueError, match="C must be a positive integer"):
        NB201Network(["none"] * 6, C=0)
    with pytest.raises(ValueError, match="layers"):
        DartsNetwork(DARTS_V2, layers=-1)
