"""``--aux-target auto`` on files: a cost or proxy column the file offers, in a fixed priority,
never the target or another label; said in the output and summary.json; a warning when none."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fgp_ext.cli import main
from fgp_ext.data.formats import from_records
from fgp_ext.train.auto_aux import AUTO_PRIORITY, auto_kind, choose_aux_target

OPS = ["conv3", "conv5", "skip", "pool"]


def _records(n: int = 80, seed: int = 0, **columns) -> list[dict]:
    """Chains input -> 3 ops -> output with an accuracy ``acc`` and the named extra columns, each a
    function of the record: ``columns[name](rng, ops) -> value``."""
    rng = np.random.default_rng(seed)
    recs = []
    for _ in range(n):
        ops = [OPS[i] for i in rng.integers(0, len(OPS), 3)]
        convs = sum(o.startswith("conv") for o in ops)
        rec = {"ops": ["input", *ops, "output"], "edges": [[i, i + 1] for i in range(4)],
               "acc": float(90 + convs + rng.normal(0, 0.5))}
        for name, f in columns.items():
            rec[name] = f(rng, ops)
        recs.append(rec)
    return recs


def _params(rng, ops):
    return float(sum({"conv3": 9, "conv5": 25}.get(o, 0) for o in ops) + rng.uniform(0, 1))


def _noise(rng, ops):
    return float(rng.normal())


def _write(tmp_path, recs, name="archs.jsonl"):
    f = tmp_path / name
    f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return f


def test_names_auto_may_pick_are_costs_and_proxies_only():
    for name, kind in [("params", "params"), ("#Params (M)", "params"), ("num_params", "params"),
                       ("MFLOPs", "flops"), ("flops", "flops"), ("mult_adds", "macs"), ("MACs", "macs"),
                       ("nwot", "nwot"), ("synflow", "synflow"), ("meco", "meco")]:
        assert auto_kind(name) == kind, name
    # labels of the architecture (accuracies, errors, latencies) and sign-unstable proxies: never
    for name in ["acc", "val_acc", "val_accuracy", "test_acc_top1", "error", "lat_pixel3_1", "latency_ms",
                 "train_loss", "jacov", "snip", "params_std", "flops_latency"]:
        assert auto_kind(name) is None, name


def test_priority_order_whatever_the_file_order():
    cols = {"synflow": _noise, "nwot": _noise, "zico": _noise, "meco": _noise, "macs": _params,
            "flops": _params, "params": _params}          # file order is the reverse of the priority
    order = [kind for kind, _ in AUTO_PRIORITY]
    assert order[:3] == ["params", "flops", "macs"]
    for k in range(len(order)):
        keep = {c: f for c, f in cols.items() if c in order[k:]}
        ds = from_records(_records(**keep))
        choice = choose_aux_target(ds, "acc")
        assert choice.name == order[k], (keep.keys(), choice)
        assert order[k] in choice.reason


def test_never_the_target_nor_a_copy_of_it():
    ds = from_records(_records(params=_params, flops=_params))
    assert choose_aux_target(ds, "acc").name == "params"
    c = choose_aux_target(ds, "params")               # the target named like a cost column
    assert c.name == "flops" and "params (the target)" in c.reason
    only = from_records(_records(params=_params))
    assert choose_aux_target(only, "params").name is None     # the only numeric column besides acc
    # a cost-named column that ranks the architectures exactly like the target is the label again
    recs = _records(params=_params)
    for r in recs:
        r["num_params"] = r["params"] * 1e-6
    c = choose_aux_target(from_records(recs), "params")
    assert c.name is None and "ranks like the target" in c.reason


def test_other_labels_are_never_chosen():
    lab = {"val_acc": lambda rng, ops: float(rng.normal()), "test_acc": lambda rng, ops: float(rng.normal()),
           "lat_cpu": lambda rng, ops: float(rng.uniform(1, 2)), "jacov": _noise}
    c = choose_aux_target(from_records(_records(**lab)), "acc")
    assert c.name is None and "no cost" in c.reason
    assert choose_aux_target(from_records(_records(**lab, flops=_params)), "acc").name == "flops"


def test_constant_or_mostly_missing_columns_are_skipped():
    recs = _records(params=lambda rng, ops: 5.0, flops=_params)
    c = choose_aux_target(from_records(recs), "acc")
    assert c.name == "flops" and "params (constant)" in c.reason
    recs = _records(params=_params, flops=_params)
    for r in recs[::8]:                      # 10 of 80 without params: 87.5% finite, under 95%
        del r["params"]
    c = choose_aux_target(from_records(recs), "acc")
    assert c.name == "flops" and "finite for 70/80" in c.reason
    recs = _records(params=_params)
    del recs[0]["params"]                    # one missing value of 80 is fine (NaN = no aux loss there)
    assert choose_aux_target(from_records(recs), "acc").name == "params"


def test_nb201_keeps_meco():
    from fgp_ext import load
    from fgp_ext.proxies import DEFAULT_AUX_TARGET

    ds = load("nb201")
    assert choose_aux_target(ds[:100], "cifar10_test_200ep").name == DEFAULT_AUX_TARGET == "meco"


RUN = ["run", "--encoder", "gin", "--hidden", "8", "--runs", "1", "--n-train", "40", "--ratio", "0.5",
       "--n-val", "10", "--epochs-pretrain", "2", "--epochs-finetune", "2", "--no-progress", "--no-plots",
       "--no-baseline"]


def test_run_reports_and_records_the_choice(tmp_path, capsys):
    f = _write(tmp_path, _records(val_acc=lambda rng, ops: float(rng.normal()), params=_params, synflow=_noise))
    out = tmp_path / "run"
    assert main([*RUN, "--data", str(f), "--target", "acc", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    lines = [ln for ln in cap.out.splitlines() if ln.startswith("auxiliary target:")]
    assert len(lines) == 1 and lines[0].startswith("auxiliary target: params (auto: cost column 'params'")
    assert "warning" not in cap.err
    s = json.loads((out / "summary.json").read_text())
    assert s["aux_target"] == "params" and "cost column 'params'" in s["aux_target_reason"]
    # the target named like a cost column: auto moves on and says so
    assert main([*RUN, "--data", str(f), "--target", "params", "--out", str(tmp_path / "p")]) == 0
    s = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert s["aux_target"] == "synflow" and "params (the target)" in s["aux_target_reason"]


def test_warning_when_nothing_is_usable(tmp_path, capsys):
    f = _write(tmp_path, _records(lat_cpu=lambda rng, ops: float(rng.uniform(1, 2)), jacov=_noise))
    out = tmp_path / "run"
    assert main([*RUN, "--data", str(f), "--target", "acc", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    warn = [ln for ln in cap.err.splitlines() if "warning" in ln]
    assert len(warn) == 1 and "reconstruction alone" in warn[0]
    assert "auxiliary target:" not in cap.out
    s = json.loads((out / "summary.json").read_text())
    assert s["aux_target"] is None and "no cost" in s["aux_target_reason"]
    # an explicit none is the user's choice: no warning
    assert main([*RUN, "--data", str(f), "--aux-target", "none", "--out", str(tmp_path / "n")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_pretrain_trains_the_chosen_auxiliary_head(tmp_path, capsys):
    from fgp_ext.train import load_checkpoint

    f = _write(tmp_path, _records(val_accuracy=lambda rng, ops: float(rng.normal()), flops=_params))
    pre = tmp_path / "pre.pt"
    assert main(["pretrain", "--data", str(f), "--encoder", "gin", "--hidden", "8", "--epochs", "1",
                 "--no-progress", "--out", str(pre)]) == 0
    assert "auxiliary target: flops" in capsys.readouterr().out
    ck = load_checkpoint(pre)
    assert ck.meta["aux_target"] == "flops" and "flops" in ck.meta["aux_target_reason"]
    assert ck.heads.get("aux") is not None and ck.meta["history"][0]["aux"] is not None
