"""Latency probe: sane positive medians; nonsense arguments refused with clear errors."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from fgp_ext.latency import main, measure_arch_latency, measure_latency

ARCH = "|nor_conv_1x1~0|+|skip_connect~0|none~1|+|none~0|none~1|avg_pool_3x3~2|"


def test_measure_latency_positive_median():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    model.train()
    old = torch.get_num_threads()
    r = measure_latency(model, batch_size=2, warmup=1, repeats=5, threads=1)
    assert torch.get_num_threads() == old and model.training
    assert len(r.times_ms) == 5 and r.repeats == 5 and r.batch_size == 2
    assert all(math.isfinite(t) and t >= 0 for t in r.times_ms)
    assert r.min_ms == min(r.times_ms) and r.max_ms == max(r.times_ms)
    assert r.min_ms <= r.median_ms <= r.max_ms
    assert r.to_dict()["input_shape"] == [3, 32, 32]


def test_measure_arch_latency_nb201():
    r = measure_arch_latency("nb201", ARCH, warmup=1, repeats=3)
    assert math.isfinite(r.median_ms) and r.median_ms >= 0 and r.threads == 1 and len(r.times_ms) == 3


@pytest.mark.parametrize("kw,match", [
    ({"repeats": 0}, "repeats must be >= 1"),
    ({"repeats": -3}, "repeats must be >= 1"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"warmup": -1}, "warmup must be >= 0"),
    ({"threads": 0}, "threads must be >= 1"),
    ({"threads": 100_000}, "exceeds"),
    ({"repeats": 2.5}, "must be an integer"),
    ({"batch_size": True}, "must be an integer"),
    ({"input_shape": (3, 0, 32)}, "input_shape"),
    ({"input_shape": "3x32x32"}, "input_shape"),
])
def test_nonsense_arguments_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        measure_latency(nn.Identity(), **kw)
    with pytest.raises(ValueError, match=match):
        measure_arch_latency("nb201", ARCH, **kw)


def test_bad_spec_refused():
    with pytest.raises(ValueError, match="unknown op"):
        measure_arch_latency("nb201", "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|")


def test_cli(tmp_path, capsys):
    out = tmp_path / "lat.jsonl"
    assert main(["--space", "nb201", "--arch", ARCH, "--repeats", "2", "--warmup", "0",
                 "--out", str(out)]) == 0
    rec = json.loads(out.read_text().splitlines()[0])
    assert rec["arch_str"] == ARCH and math.isfinite(rec["latency_ms"]) and rec["latency_ms"] >= 0
    from fgp_ext.data.formats import load

    assert load(str(out)).targets("latency_ms")[0] == rec["latency_ms"]
    for bad, message in ((["--repeats", "0"], "argument --repeats: must be an integer >= 1, got '0'"),
                         (["--batch-size", "-1"], "argument --batch-size: must be an integer >= 1, got '-1'")):
        with pytest.raises(SystemExit) as exc:  # refused by the parser, before any network is built
            main(["--space", "nb201", "--arch", ARCH, *bad])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    assert main(["--space", "nb201", "--arch", "garbage"]) == 2
    assert main(["--space", "nb201", "--file", str(tmp_path / "missing.json")]) == 2
