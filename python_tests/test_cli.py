"""The ``fgp`` command line end to end on small samples of the embedded NB201 data."""
from __future__ import annotations

import json
import re
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from fgp_ext.cli import main


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    old = torch.get_num_threads()       # the CLI sets torch threads (default 1)
    yield
    torch.set_num_threads(old)


def test_run_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", "--encoder", "gatedgcn", "--limit", "300", "--ratio", "0.2", "--hidden", "16",
               "--epochs-pretrain", "1", "--epochs-finetune", "3", "--runs", "2", "--out", str(out),
               "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Kendall tau" in text and "P@1%" in text and "supervised" in text and "fgp" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_archs"] == 300 and summary["encoder"] == "gatedgcn"
    assert len(summary["runs"]) == 2 and summary["runs"][0]["n_labelled"] == int(150 * 0.2)
    for m in ("fgp", "supervised"):
        assert -1.0 <= summary["mean"][m]["kendall_tau"] <= 1.0
        assert "p@1%" in summary["mean"][m]
    assert all(math.isfinite(summary[k]) and summary[k] >= 0 for k in ("pretrain_s_per_epoch", "finetune_s_per_epoch"))
    for png in ("rank_scatter.png", "training_curves.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_finetune_schedule_and_pretrained_cache(tmp_path, capsys):
    """The fine-tuning optimiser flags reach the summary; --pretrained-dir is written by the first
    run, reused by the next (same numbers, no pre-training); other pre-training settings get their
    own file (the name carries a key of the settings) and never overwrite another."""
    common = ["run", "--encoder", "gin", "--limit", "200", "--ratio", "0.2", "--hidden", "8", "--runs", "1",
              "--epochs-pretrain", "1", "--epochs-finetune", "4", "--no-progress", "--no-plots",
              "--no-baseline", "--pretrained-dir", str(tmp_path / "pre")]
    sched = ["--finetune-lr", "5e-4", "--finetune-weight-decay", "6e-5", "--finetune-schedule", "cosine",
             "--finetune-warmup", "1", "--finetune-schedule-epochs", "6", "--finetune-select-after", "1"]
    # a selection window that leaves no epoch is refused before any pre-training
    assert main([*common, *sched, "--finetune-select-after", "4", "--out", str(tmp_path / "bad")]) == 2
    out, err = capsys.readouterr()
    assert "finetune_select_after must be in [0, epochs_finetune) = [0, 4), got 4" in err
    assert "pre-training" not in out and not (tmp_path / "pre").exists()
    assert main([*common, *sched, "--out", str(tmp_path / "a")]) == 0
    first = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert (first["finetune_lr"], first["finetune_weight_decay"], first["finetune_schedule"],
            first["finetune_warmup"], first["finetune_schedule_epochs"],
            first["finetune_select_after"]) == (5e-4, 6e-5, "cosine", 1, 6, 1)
    assert first["runs"][0]["fgp"]["best_epoch"] > 1
    cached = sorted((tmp_path / "pre").glob("gin_seed21-*.pt"))
    assert first["lr"] == 1e-3 and len(cached) == 1
    assert "pre-training gin" in capsys.readouterr().out
    assert main([*common, *sched, "--out", str(tmp_path / "b")]) == 0
    assert "pre-training gin" not in capsys.readouterr().out
    second = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert second["runs"][0]["fgp"]["kendall_tau"] == first["runs"][0]["fgp"]["kendall_tau"]
    # the cache names its proxy ('auto' is MeCo on NB201), so the explicit name reuses it too
    from fgp_ext.train import load_checkpoint

    assert load_checkpoint(cached[0]).meta["aux_target"] == "meco"
    assert main([*common, *sched, "--aux-target", "meco", "--out", str(tmp_path / "b2")]) == 0
    assert "pre-training gin" not in capsys.readouterr().out
    # self-training adds students and leaves the teacher's rows as they were
    assert main([*common, *sched, "--self-train", "20", "--self-train-weight", "0.5", "--out", str(tmp_path / "st")]) == 0
    out = capsys.readouterr().out
    assert "pre-training gin" not in out and "student 0 alone" in out
    st = json.loads((tmp_path / "st" / "summary.json").read_text())
    assert (st["self_train"], st["self_train_weight"]) == (20, 0.5) and first["self_train"] == 0
    assert st["runs"][0]["fgp"]["kendall_tau"] == first["runs"][0]["fgp"]["kendall_tau"]
    assert {"fgp_self_train", "fgp_teacher_students"} <= set(st["mean"]) and "fgp_self_train" not in first["mean"]
    assert main([*common, "--self-train", "1", "--out", str(tmp_path / "st1")]) == 2
    assert "self_train must be 0 (off) or an int >= 2, got 1" in capsys.readouterr().err
    # a weight average of the fine-tuned weights reaches the summary and changes the fine-tuned model
    assert main([*common, *sched, "--finetune-ema", "0.9", "--out", str(tmp_path / "ema")]) == 0
    assert "pre-training gin" not in capsys.readouterr().out
    ema = json.loads((tmp_path / "ema" / "summary.json").read_text())
    assert ema["finetune_ema"] == 0.9 and first["finetune_ema"] == 0.0
    assert ema["runs"][0]["fgp"]["kendall_tau"] != first["runs"][0]["fgp"]["kendall_tau"]
    with pytest.raises(SystemExit):
        main([*common, "--finetune-ema", "1"])
    assert "--finetune-ema" in capsys.readouterr().err
    # another fine-tuning loss reaches the summary and changes the fine-tuned model
    assert main([*common, *sched, "--finetune-loss", "listmle", "--out", str(tmp_path / "listmle")]) == 0
    assert "pre-training gin" not in capsys.readouterr().out
    lm = json.loads((tmp_path / "listmle" / "summary.json").read_text())
    assert lm["finetune_loss"] == "listmle" and first["finetune_loss"] == "hinge"
    assert lm["runs"][0]["fgp"]["kendall_tau"] != first["runs"][0]["fgp"]["kendall_tau"]
    with pytest.raises(SystemExit):
        main([*common, "--finetune-loss", "mse"])
    assert "invalid choice: 'mse'" in capsys.readouterr().err
    before = cached[0].read_bytes()
    assert main([*common, "--hidden", "12", "--out", str(tmp_path / "c")]) == 0
    assert "pre-training gin" in capsys.readouterr().out
    assert len(list((tmp_path / "pre").glob("gin_seed21-*.pt"))) == 2 and cached[0].read_bytes() == before
    gated = [a if a != "gin" else "gatedgcn" for a in common]
    assert main([*gated, "--directed", "--epochs-finetune", "1", "--out", str(tmp_path / "d")]) == 0
    assert json.loads((tmp_path / "d" / "summary.json").read_text())["encoder_config"]["undirected"] is False
    capsys.readouterr()
    assert main([*gated, "--epochs-finetune", "1", "--out", str(tmp_path / "e")]) == 0   # undirected: other cache key
    assert "pre-training gatedgcn" in capsys.readouterr().out
    assert len(list((tmp_path / "pre").glob("gatedgcn_seed21-*.pt"))) == 2
    with pytest.raises(SystemExit):
        main([*common, "--finetune-schedule", "step"])
    assert "invalid choice: 'step'" in capsys.readouterr().err
    from fgp_ext.cli import FINETUNE_LOSS_CHOICES
    from fgp_ext.train.config import FINETUNE_LOSSES

    assert tuple(FINETUNE_LOSS_CHOICES) == FINETUNE_LOSSES   # the parser's spelled-out copy


def test_stages_chain(tmp_path, capsys):
    sur = tmp_path / "sur.npy"
    assert main(["surrogate", "--limit", "200", "--out", str(sur)]) == 0
    assert np.load(sur).shape == (200, 7)
    pre = tmp_path / "pre.pt"
    common = ["--limit", "200", "--no-progress"]
    assert main(["pretrain", "--encoder", "gin", "--hidden", "8", "--epochs", "1", "--aux-target", "params",
                 "--out", str(pre), *common]) == 0
    ft = tmp_path / "ft.pt"
    assert main(["finetune", "--checkpoint", str(pre), "--ratio", "0.2", "--epochs", "2", "--out", str(ft),
                 "--schedule", "cosine", "--warmup", "1", "--weight-decay", "1e-5", "--select-after", "1",
                 "--loss", "logistic", *common]) == 0
    assert "at epoch 2;" in capsys.readouterr().out        # epoch 1 may not be kept: 2 is the only choice
    from fgp_ext.train import load_checkpoint

    assert (load_checkpoint(ft).settings["select_after"], load_checkpoint(ft).settings["loss"]) == (1, "logistic")
    js = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(ft), "--ratio", "0.2", "--json", str(js), *common]) == 0
    m = json.loads(js.read_text())
    assert m["n"] == 200 - 100 - 40 and "kendall_tau" in m
    out = capsys.readouterr().out
    assert "test" in out and "wrote" in out


def test_errors(tmp_path, capsys):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    assert main(["evaluate", "--checkpoint", str(foreign), "--limit", "100"]) == 2
    assert "not an fgp_ext checkpoint" in capsys.readouterr().err
    assert main(["surrogate", "--data", str(tmp_path / "nope.jsonl")]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["run", "--encoder", "transformer"])
    assert exc.value.code == 2 and "invalid choice: 'transformer'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--directed applies to --encoder gatedgcn only"):
        main(["run", "--encoder", "gin", "--directed", "--limit", "100"])
    with pytest.raises(SystemExit, match="unknown target 'no_such_column'"):
        main(["run", "--target", "no_such_column", "--limit", "100"])
    with pytest.raises(SystemExit, match="--finetune-aux-head needs a one-column --aux-target"):
        main(["run", "--limit", "100", "--aux-target", "none", "--finetune-aux-head"])
    with pytest.raises(SystemExit, match="--finetune-aux-head needs a one-column --aux-target"):
        main(["run", "--limit", "100", "--aux-target", "meco,synflow", "--finetune-aux-head"])


def test_python_dash_m_help():
    r = subprocess.run([sys.executable, "-m", "fgp_ext", "--help"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0
    for cmd in ("surrogate", "pretrain", "finetune", "evaluate", "run"):
        assert cmd in r.stdout


def test_aux_target_auto_is_meco_on_nb201_and_off_elsewhere(tmp_path):
    from argparse import Namespace

    from fgp_ext import load
    from fgp_ext.cli import _aux_name
    from fgp_ext.proxies import DEFAULT_AUX_TARGET

    nb201 = load("nb201")
    assert _aux_name(Namespace(aux_target="auto"), nb201) == DEFAULT_AUX_TARGET == "meco"
    assert _aux_name(Namespace(aux_target="none"), nb201) is None
    assert _aux_name(Namespace(aux_target="flops"), nb201) == "flops"
    f = tmp_path / "a.jsonl"
    f.write_text('{"ops": ["input", "conv", "output"], "edges": [[0, 1], [1, 2]], "acc": 1.0}\n'
                 '{"ops": ["input", "output"], "edges": [[0, 1]], "acc": 2.0}\n')
    assert _aux_name(Namespace(aux_target="auto"), load(str(f))) is None


def test_run_with_unlabelled_nb101_samples(tmp_path, capsys):
    """--unlabelled sample:N adds random NB101 cells to pre-training only; refused on other spaces."""
    from fgp_ext.data.spaces import sample_nb101

    f = tmp_path / "nb101.jsonl"
    rng = np.random.default_rng(0)
    lines = []
    for g in sample_nb101(120, seed=5).graphs:
        m = np.zeros((g.num_nodes, g.num_nodes), dtype=int)
        m[g.edges[0], g.edges[1]] = 1
        names = ["input", "output", "conv1x1-bn-relu", "conv3x3-bn-relu", "maxpool3x3"]
        lines.append(json.dumps({"matrix": m.tolist(), "ops": [names[o] for o in g.ops], "acc": float(rng.random())}))
    f.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    assert main(["run", "--data", str(f), "--encoder", "gin", "--hidden", "8", "--n-train", "60", "--ratio", "0.5",
                 "--epochs-pretrain", "1", "--epochs-finetune", "1", "--runs", "1", "--unlabelled", "sample:50",
                 "--no-plots", "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_unlabelled"] == 50 and summary["num_archs"] == 120
    assert "read P@5%" in capsys.readouterr().out  # small test set: the P@1% caveat is printed
    with pytest.raises(SystemExit, match="NAS-Bench-101"):
        main(["run", "--limit", "100", "--unlabelled", "sample:10", "--runs", "1", "--no-plots"])
    with pytest.raises(SystemExit, match="needs an integer N"):
        main(["run", "--data", str(f), "--unlabelled", "sample:many", "--runs", "1", "--no-plots"])


def test_reverse_successors_reaches_the_flowerformer(tmp_path):
    from fgp_ext.train import load_checkpoint

    pre = tmp_path / "pre.pt"
    assert main(["pretrain", "--encoder", "flowerformer", "--hidden", "8", "--epochs", "1", "--limit", "60",
                 "--reverse-successors", "earliest", "--no-progress", "--out", str(pre)]) == 0
    assert load_checkpoint(pre).encoder.reverse_successors == "earliest"
    with pytest.raises(SystemExit, match="flowerformer only"):
        main(["pretrain", "--encoder", "gatedgcn", "--limit", "60", "--reverse-successors", "earliest",
              "--out", str(pre)])


def test_flowerformer_layer_options_reach_the_encoder(tmp_path):
    from fgp_ext.train import load_checkpoint

    pre = tmp_path / "pre.pt"
    assert main(["pretrain", "--encoder", "flowerformer", "--hidden", "8", "--layers", "2", "--heads", "2",
                 "--layout", "parallel", "--norm", "batch", "--flow-relu", "--attention-dropout", "0.5",
                 "--epochs", "1", "--limit", "60", "--no-progress", "--out", str(pre)]) == 0
    enc = load_checkpoint(pre).encoder
    assert (enc.layers, enc.heads, enc.layout, enc.norm, enc.flow_relu, enc.attention_dropout) == (
        2, 2, "parallel", "batch", True, 0.5)
    assert main(["pretrain", "--encoder", "gin", "--hidden", "8", "--layers", "2", "--epochs", "1", "--limit", "60",
                 "--no-progress", "--out", str(pre)]) == 0
    assert load_checkpoint(pre).encoder.config["layers"] == 2
    # the preset: the original's NB201 model, explicit flags over it
    assert main(["pretrain", "--encoder", "flowerformer", "--flowerformer-original", "--hidden", "16",
                 "--layers", "1", "--epochs", "1", "--limit", "60", "--no-progress", "--out", str(pre)]) == 0
    cfg = load_checkpoint(pre).encoder.config
    assert {k: cfg[k] for k in ("hidden", "layers", "heads", "dropout", "layout", "norm", "flow_relu",
                                "attention_dropout")} == dict(hidden=16, layers=1, heads=8, dropout=0.0,
                                                              layout="parallel", norm="batch", flow_relu=True,
                                                              attention_dropout=0.5)
    for flag in (["--layout", "parallel"], ["--norm", "batch"], ["--flow-relu"], ["--heads", "2"],
                 ["--flowerformer-original"]):
        with pytest.raises(SystemExit, match="flowerformer only"):
            main(["pretrain", "--encoder", "gatedgcn", "--limit", "60", *flag, "--out", str(pre)])


def test_run_seeds_runs_one_seeds_permutations(tmp_path, capsys):
    """``--seeds S`` runs seed S with the protocol's permutations (its own first) and gives the very
    rows of the full protocol; ``--runs`` keeps the first of them; bad lists stop at parsing."""
    common = ["run", "--encoder", "gin", "--limit", "200", "--ratio", "0.2", "--hidden", "8",
              "--epochs-pretrain", "1", "--epochs-finetune", "2", "--no-progress", "--no-plots", "--no-baseline",
              "--aux-target", "none"]
    assert main([*common, "--runs", "4", "--out", str(tmp_path / "all")]) == 0
    assert main([*common, "--seeds", "2021", "--runs", "2", "--out", str(tmp_path / "one")]) == 0
    assert "2 run(s)" in capsys.readouterr().out
    full = json.loads((tmp_path / "all" / "summary.json").read_text())["runs"]
    one = json.loads((tmp_path / "one" / "summary.json").read_text())["runs"]
    assert [(r["seed"], r["perm_seed"]) for r in one] == [(2021, 2021), (2021, 21)]
    by_pair = {(r["seed"], r["perm_seed"]): r for r in full}
    for r in one:
        assert r["fgp"]["kendall_tau"] == by_pair[r["seed"], r["perm_seed"]]["fgp"]["kendall_tau"]
        assert r["fgp"]["p@10%"] == by_pair[r["seed"], r["perm_seed"]]["fgp"]["p@10%"]
    assert main([*common, "--seeds", "5", "--epochs-finetune", "1", "--out", str(tmp_path / "five")]) == 0
    five = json.loads((tmp_path / "five" / "summary.json").read_text())["runs"]
    assert [(r["seed"], r["perm_seed"]) for r in five] == [(5, 21), (5, 2021), (5, 202121)]
    capsys.readouterr()
    for bad, msg in ((["--seeds", "21,,5"], "seeds joined by commas"), (["--seeds", "21,21"], "twice"),
                     (["--seeds", "-1"], "--seeds")):
        with pytest.raises(SystemExit) as e:
            main([*common, *bad, "--out", str(tmp_path / "x")])
        assert e.value.code == 2 and msg in capsys.readouterr().err
    assert main([*common, "--seeds", "21", "--runs", "4", "--out", str(tmp_path / "x")]) == 2
    assert "fgp: error: --runs 4 is more than the 3 runs of --seeds 21" in capsys.readouterr().err


def _nb101_jsonl(path, n=120, missing_every=3):
    """``n`` NB101 cells as JSON Lines with target ``acc``; every ``missing_every``-th is ``null``."""
    from fgp_ext.data.spaces import sample_nb101

    rng = np.random.default_rng(0)
    names = ["input", "output", "conv1x1-bn-relu", "conv3x3-bn-relu", "maxpool3x3"]
    lines = []
    for i, g in enumerate(sample_nb101(n, seed=5).graphs):
        m = np.zeros((g.num_nodes, g.num_nodes), dtype=int)
        m[g.edges[0], g.edges[1]] = 1
        acc = None if missing_every and i % missing_every == 0 else float(rng.random())
        lines.append(json.dumps({"matrix": m.tolist(), "ops": [names[o] for o in g.ops], "acc": acc}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_partly_labelled_file(tmp_path, capsys):
    """Architectures with a null target are unlabelled: fgp run pre-trains on all of them and splits
    and measures the labelled ones; finetune and evaluate do the same."""
    f = _nb101_jsonl(tmp_path / "part.jsonl")
    common = ["--data", str(f), "--ratio", "0.5", "--n-val", "10", "--no-progress"]
    out = tmp_path / "run"
    assert main(["run", *common, "--encoder", "gin", "--hidden", "8", "--epochs-pretrain", "1",
                 "--epochs-finetune", "2", "--runs", "2", "--no-plots", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert (s["num_archs"], s["num_labelled"], s["num_unlabelled"], s["n_train"]) == (120, 80, 40, 40)
    assert s["runs"][0]["n_test"] == 30 and math.isfinite(s["mean"]["fgp"]["kendall_tau"])
    ft = tmp_path / "ft.pt"
    assert main(["finetune", *common, "--encoder", "gin", "--hidden", "8", "--epochs", "2", "--out", str(ft)]) == 0
    assert "fine-tuned on 20 labelled architectures" in capsys.readouterr().out
    for split, n in (("test", 30), ("all", 80)):
        assert main(["evaluate", *common, "--checkpoint", str(ft), "--split", split,
                     "--json", str(tmp_path / f"{split}.json")]) == 0
        m = json.loads((tmp_path / f"{split}.json").read_text())
        assert m["n"] == n and math.isfinite(m["kendall_tau"])


def test_file_without_labels_or_architectures(tmp_path, capsys):
    """A file whose target is null everywhere, or a file without architectures, is one error line."""
    f = _nb101_jsonl(tmp_path / "none.jsonl", n=60, missing_every=1)
    assert main(["run", "--data", str(f), "--target", "acc", "--epochs-pretrain", "1", "--epochs-finetune", "1",
                 "--runs", "1", "--no-plots", "--no-progress", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fgp: error:") and "acc" in err and "unlabelled" in err and "Traceback" not in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["run", "--data", str(empty), "--no-plots", "--no-progress", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fgp: error:") and "no architectures" in err


def test_run_ensemble_option(tmp_path, capsys):
    """``fgp run --ensemble 2``: the summary records the size and each method's member-0 score, the
    table prints that score under the ensemble's; ``--ensemble 0`` is a usage error."""
    f = _nb101_jsonl(tmp_path / "ens.jsonl")
    out = tmp_path / "run"
    assert main(["run", "--data", str(f), "--ratio", "0.5", "--n-val", "10", "--no-progress", "--encoder", "gin",
                 "--hidden", "8", "--epochs-pretrain", "1", "--epochs-finetune", "2", "--runs", "1",
                 "--ensemble", "2", "--no-plots", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    assert s["ensemble"] == 2
    for m in ("fgp", "supervised"):
        assert len(s["runs"][0][m]["member_taus"]) == 2
        assert s["mean"][m]["single_kendall_tau"] == s["runs"][0][m]["member_taus"][0]
    assert text.count("member 0 alone") == 2
    with pytest.raises(SystemExit):
        main(["run", "--data", str(f), "--ensemble", "0"])
    assert "--ensemble" in capsys.readouterr().err


def test_run_folds_option(tmp_path, capsys):
    """``fgp run --folds 2``: the summary records the folds and each method's member-0 score beside
    the two-model score; ``--folds 0`` is a usage error."""
    f = _nb101_jsonl(tmp_path / "folds.jsonl")
    out = tmp_path / "run"
    assert main(["run", "--data", str(f), "--ratio", "0.5", "--n-val", "10", "--no-progress", "--encoder", "gin",
                 "--hidden", "8", "--epochs-pretrain", "1", "--epochs-finetune", "2", "--runs", "1",
                 "--folds", "2", "--no-baseline", "--no-plots", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    assert s["folds"] == 2 and s["ensemble"] == 1
    assert len(s["runs"][0]["fgp"]["member_taus"]) == 2
    assert s["mean"]["fgp"]["single_kendall_tau"] == s["runs"][0]["fgp"]["member_taus"][0]
    assert "fold 1" in text and text.count("member 0 alone") == 1
    # predictions.npz: both models' test scores, from which the summary's numbers follow
    from fgp_ext.metrics import kendall_tau
    from fgp_ext.train import combine_scores, load_predictions

    assert f"wrote {out / 'predictions.npz'}" in text
    (run,) = load_predictions(out / "predictions.npz")
    assert (run["seed"], run["perm_seed"]) == (s["runs"][0]["seed"], s["runs"][0]["perm_seed"])
    assert list(run["scores"]) == ["fgp"] and run["scores"]["fgp"].shape == (2, s["runs"][0]["n_test"])
    assert [kendall_tau(p, run["true"]) for p in run["scores"]["fgp"]] == s["runs"][0]["fgp"]["member_taus"]
    assert kendall_tau(combine_scores(run["scores"]["fgp"]), run["true"]) == s["runs"][0]["fgp"]["kendall_tau"]
    with pytest.raises(SystemExit):
        main(["run", "--data", str(f), "--folds", "0"])
    assert "--folds" in capsys.readouterr().err
    # --reshuffle-folds: recorded in the summary; member 1's folds 1.. differ, its fold 0 does not
    small = ["run", "--data", str(f), "--ratio", "0.5", "--n-val", "10", "--no-progress", "--encoder", "gin",
             "--hidden", "8", "--epochs-pretrain", "1", "--epochs-finetune", "2", "--runs", "1", "--folds", "3",
             "--ensemble", "2", "--no-baseline", "--no-plots"]
    assert main([*small, "--out", str(tmp_path / "same")]) == 0
    assert main([*small, "--reshuffle-folds", "--out", str(tmp_path / "reshuffled")]) == 0
    same, reshuffled = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("same", "reshuffled"))
    assert (same["reshuffle_folds"], reshuffled["reshuffle_folds"]) == (False, True)
    a, b = (x["runs"][0]["fgp"]["member_taus"] for x in (same, reshuffled))
    assert a[:4] == b[:4] and a[4:] != b[4:]
    capsys.readouterr()
    assert main([*small[:-4], "--no-baseline", "--no-plots", "--reshuffle-folds", "--out", str(tmp_path / "x")]) == 2
    assert "reshuffle_folds" in capsys.readouterr().err


def test_run_ensemble_aux_target_option(tmp_path, capsys):
    """``fgp run --aux-target params --ensemble-aux-target flops``: two pre-trainings per member, the
    output says so, the summary records it, the job's models are the params job's followed by the
    flops job's; an unknown target fails before any work."""
    from fgp_ext.train import load_predictions

    f = _nb101_jsonl(tmp_path / "e.jsonl")
    rng = np.random.default_rng(1)
    rows = [json.loads(line) for line in f.read_text().splitlines()]
    for r in rows:       # two cost columns to pre-train on
        r["params"], r["flops"] = float(len(r["ops"]) + rng.random()), float(rng.random())
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    small = ["run", "--data", str(f), "--target", "acc", "--ratio", "0.5", "--n-val", "10", "--no-progress",
             "--encoder", "gin", "--hidden", "8", "--epochs-pretrain", "1", "--epochs-finetune", "2", "--runs", "1",
             "--folds", "2", "--no-baseline", "--no-plots"]
    for name, extra in (("params", []), ("flops", ["--aux-target", "flops"]),
                        ("both", ["--ensemble-aux-target", "flops"])):
        args = [*small, "--out", str(tmp_path / name)] + (["--aux-target", "params"] if name != "flops" else extra)
        assert main(args + (extra if name == "both" else [])) == 0
    text = capsys.readouterr().out
    assert "also pre-trained on (--ensemble-aux-target): flops" in text
    s = json.loads((tmp_path / "both" / "summary.json").read_text())
    assert s["ensemble_aux_targets"] == ["flops"] and s["aux_target"] == "params"
    assert len(s["runs"][0]["fgp"]["member_taus"]) == 4
    (p,), (q,), (both,) = (load_predictions(tmp_path / d / "predictions.npz") for d in ("params", "flops", "both"))
    np.testing.assert_array_equal(both["scores"]["fgp"], np.concatenate([p["scores"]["fgp"], q["scores"]["fgp"]]))
    with pytest.raises(SystemExit, match="--ensemble-aux-target"):
        main([*small, "--aux-target", "params", "--ensemble-aux-target", "nosuch", "--out", str(tmp_path / "bad")])
    assert "pre-training" not in capsys.readouterr().out


def test_run_combine_with_option(tmp_path, capsys):
    """``fgp run --combine-with A/predictions.npz[:METHOD][START:STOP]``: method fgp_combined scores
    every run with the job's FGP models and A's chosen rows together (combine_scores); without
    methods A's FGP models, not its baseline; a file without one of the job's runs, with another
    test, training or validation set or other labels is refused before any training."""
    from fgp_ext.metrics import kendall_tau
    from fgp_ext.train import combine_scores, load_predictions, save_predictions

    f = _nb101_jsonl(tmp_path / "c.jsonl")
    common = ["run", "--data", str(f), "--ratio", "0.5", "--n-val", "10", "--no-progress", "--hidden", "8",
              "--epochs-pretrain", "1", "--epochs-finetune", "2", "--no-plots"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(common + ["--encoder", "gin", "--runs", "2", "--folds", "2", "--out", str(a)]) == 0
    assert main(common + ["--encoder", "mlp", "--runs", "2", "--no-baseline", "--out", str(b),
                          "--combine-with", f"{a}/predictions.npz:fgp[1:2]"]) == 0
    text = capsys.readouterr().out
    s = json.loads((b / "summary.json").read_text())
    assert s["combine_with"] == [f"{a}/predictions.npz:fgp[1:2]"]
    assert s["combine_with_files"] == [str(a / "predictions.npz")]
    recorded, own = load_predictions(a / "predictions.npz"), load_predictions(b / "predictions.npz")
    assert list(own[0]["scores"]) == ["fgp"]        # the job's file keeps its own models only
    taus = []
    for row, rec, mine in zip(s["runs"], recorded, own):
        assert np.array_equal(rec["test_index"], mine["test_index"])
        assert np.array_equal(rec["train_index"], mine["train_index"]) and rec["train_index"].size > 0
        want = kendall_tau(combine_scores([mine["scores"]["fgp"][0], rec["scores"]["fgp"][1]]), mine["true"])
        assert row["fgp_combined"]["kendall_tau"] == pytest.approx(want) and row["fgp_combined"]["models"] == 2
        assert row["fgp_combined"]["kendall_tau"] != row["fgp"]["kendall_tau"]
        taus.append(want)
    assert s["mean"]["fgp_combined"]["kendall_tau"] == pytest.approx(np.mean(taus))
    assert "fgp_combined" in text and "1 models of this job + 1 recorded" in text
    # without methods: A's two FGP models per run, not its supervised baseline
    assert list(recorded[0]["scores"]) == ["fgp", "supervised"]
    assert main(common + ["--encoder", "mlp", "--runs", "1", "--no-baseline", "--out", str(tmp_path / "d"),
                          "--combine-with", f"{a}/predictions.npz"]) == 0
    assert "1 models of this job + 2 recorded" in capsys.readouterr().out

    # refused before any training: a run the file lacks, another split (--ratio keeps the test set
    # but not the training set), other labels, an unknown method, no file
    relabelled = save_predictions(tmp_path / "r.npz", [dict(r, true=r["true"] + 1) for r in recorded])
    c = tmp_path / "c"
    for extra, message in ((["--runs", "3"], f"{a}/predictions.npz has no run seed 202121"),
                           (["--runs", "2", "--n-val", "12"], "another test set"),
                           (["--runs", "1", "--ratio", "0.4"], "another training set"),
                           (["--runs", "1", "--combine-with", str(relabelled)], "other labels"),
                           (["--runs", "1", "--combine-with", f"{a}/predictions.npz:gin"], "no method"),
                           (["--runs", "1", "--combine-with", f"{tmp_path}/none.npz"], "no predictions file")):
        assert main(common + ["--encoder", "mlp", "--out", str(c), "--combine-with", f"{a}/predictions.npz"]
                    + extra) == 2
        err = capsys.readouterr()
        assert message in err.err and "] pre-training" not in err.out, (extra, err.err)
        assert not (c / "summary.json").exists() and not (c / "predictions.npz").exists()
