"""Checkpoints that know their space and op vocabulary (format v2): ``fgp predict``, other spaces
and unknown ops refused, line order of a generic file irrelevant, version-1 files."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from fgp_ext.cli import main
from fgp_ext.data import formats as F
from fgp_ext.data import spaces as S
from fgp_ext.train import CHECKPOINT_VERSION, CheckpointError, load_checkpoint

_MID = ["skip", "pool", "conv1", "conv3"]


def _generic_records(n=150, seed=0):
    rng = np.random.RandomState(seed)
    recs = []
    for i in range(n):
        k = rng.randint(2, 6)
        mid = [_MID[j] for j in rng.randint(0, 4, size=k)]
        ops = ["in"] + mid + ["out"]
        m = len(ops)
        edges = {(v, v + 1) for v in range(m - 1)}
        edges |= {(a, b) for a in range(m) for b in range(a + 2, m) if rng.rand() < 0.3}
        acc = 2.0 * mid.count("conv3") + mid.count("conv1") - 0.5 * mid.count("pool") + 0.3 * rng.rand()
        recs.append({"name": f"net{i}", "ops": ops, "edges": sorted(map(list, edges)), "acc": acc})
    return recs


def _write_jsonl(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return str(path)


def _first_seen(recs):
    seen = []
    for r in recs:
        seen += [o for o in r["ops"] if o not in seen]
    return seen


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    recs = _generic_records()
    gen = _write_jsonl(d / "gen.jsonl", recs)
    # the same architectures in another line order, chosen so that first-seen op order differs
    shuffled = [recs[i] for i in np.random.RandomState(1).permutation(len(recs))]
    while _first_seen(shuffled) == _first_seen(recs):
        shuffled = shuffled[1:] + shuffled[:1]
    gen2 = _write_jsonl(d / "gen_shuffled.jsonl", shuffled)
    common = ["--encoder", "gin", "--hidden", "16", "--no-progress"]
    split = ["--n-train", "100", "--n-val", "10", "--ratio", "0.5"]
    assert main(["pretrain", "--data", "nb201", "--limit", "200", "--epochs", "1", "--out", str(d / "pre.pt")]
                + common) == 0
    assert main(["finetune", "--data", "nb201", "--limit", "200", "--checkpoint", str(d / "pre.pt"),
                 "--epochs", "2", "--out", str(d / "ft.pt"), "--no-progress"] + split) == 0
    assert main(["pretrain", "--data", gen, "--epochs", "1", "--out", str(d / "gpre.pt")] + common) == 0
    assert main(["finetune", "--data", gen, "--target", "acc", "--checkpoint", str(d / "gpre.pt"),
                 "--epochs", "3", "--out", str(d / "gft.pt"), "--no-progress"] + split) == 0
    return {"dir": d, "ft": str(d / "ft.pt"), "pre": str(d / "pre.pt"), "gft": str(d / "gft.pt"),
            "gen": gen, "gen2": gen2, "recs": recs}


def test_v2_checkpoint_records_space_vocabulary_settings_target(ckpts):
    ck = load_checkpoint(ckpts["ft"])
    assert ck.version == CHECKPOINT_VERSION == 2
    assert ck.space_name == "nb201" and ck.vocab == S.NB201_VOCAB
    assert ck.target == "cifar10_test_200ep"
    assert ck.settings["stage"] == "finetune" and ck.settings["pretrain"]["surrogate"]["k"] > 0
    g = load_checkpoint(ckpts["gft"])
    assert g.space_name == "generic" and g.vocab == sorted({"in", "out", *_MID}) and g.target == "acc"
    assert g.encoder.num_ops == len(g.vocab)
    pre = load_checkpoint(ckpts["pre"])
    assert pre.settings["stage"] == "pretrain" and pre.target is None and "surrogate" in pre.settings


def test_predict_embedded_nb201(ckpts, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    assert main(["predict", "--checkpoint", ckpts["ft"], "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "scored 15625 architectures" in text and "top 5" in text and "kendall_tau" in text
    rows = _read_csv(out)
    ds = F.load("nb201")
    assert len(rows) == len(ds) and list(rows[0]) == ["row", "index", "name", "arch_str", "score", "rank"]
    assert [int(r["row"]) for r in rows] == list(range(len(ds)))               # the file's order
    for i in (0, 4321, 15624):
        assert rows[i]["arch_str"] == S.nb201_to_string(ds[i].ops)
    scores = np.array([float(r["score"]) for r in rows])
    ranks = np.array([int(r["rank"]) for r in rows])
    assert ranks.min() == 1 and all(ranks[i] == 1 + (scores > scores[i]).sum() for i in range(0, len(ds), 97))
    assert scores[ranks == 1][0] == scores.max() and scores[ranks == len(ds)][0] == scores.min()
    assert (np.diff(scores[np.argsort(ranks)]) <= 0).all()
    # the scores are the fine-tuned model's
    from fgp_ext import collate
    from fgp_ext.train import predict

    ck = load_checkpoint(ckpts["ft"])
    ref = predict(ck.predictor(), collate(ds.graphs[:50]))
    np.testing.assert_allclose(scores[:50], ref, rtol=1e-6, atol=1e-6)


def test_predict_on_a_jsonl_file_and_line_order_does_not_matter(ckpts, tmp_path, capsys):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["predict", "--checkpoint", ckpts["gft"], "--data", ckpts["gen"], "--out", str(a)]) == 0
    assert "against acc (150 labelled)" in capsys.readouterr().out
    assert main(["predict", "--checkpoint", ckpts["gft"], "--data", ckpts["gen2"], "--out", str(b)]) == 0
    ra, rb = _read_csv(a), _read_csv(b)
    assert list(ra[0]) == ["row", "index", "name", "score", "rank"] and len(ra) == len(rb) == 150
    assert [r["name"] for r in ra] == [r["name"] for r in ckpts["recs"]]
    by_name = {r["name"]: (r["score"], r["rank"]) for r in rb}
    assert all(by_name[r["name"]] == (r["score"], r["rank"]) for r in ra)
    assert len({r["score"] for r in ra}) > 10                                   # not a constant model


def test_evaluate_same_metrics_for_any_line_order(ckpts, tmp_path):
    outs = []
    for data in (ckpts["gen"], ckpts["gen2"]):
        j = tmp_path / f"m{len(outs)}.json"
        assert main(["evaluate", "--checkpoint", ckpts["gft"], "--data", data, "--split", "all",
                     "--json", str(j)]) == 0
        outs.append(json.loads(j.read_text()))
    assert outs[0]["n"] == 150
    assert outs[0]["kendall_tau"] == outs[1]["kendall_tau"] and outs[0]["spearman"] == outs[1]["spearman"]


def test_a_subset_of_the_ops_keeps_the_checkpoint_ids(ckpts, tmp_path):
    recs = [r for r in ckpts["recs"] if "conv3" not in r["ops"]][:30]
    path = _write_jsonl(tmp_path / "sub.jsonl", recs)
    ck = load_checkpoint(ckpts["gft"])
    ds = ck.load_data(path)
    assert ds.space.vocab == ck.vocab
    assert ds[0].ops.tolist() == [ck.vocab.index(o) for o in recs[0]["ops"]]


def _nb101_file(tmp_path):
    rec = {"matrix": [[0, 1, 1], [0, 0, 1], [0, 0, 0]], "ops": ["input", "conv3x3-bn-relu", "output"],
           "val_accuracy": 0.9}
    return _write_jsonl(tmp_path / "nb101.jsonl", [rec, rec])


@pytest.mark.parametrize("cmd", ["predict", "evaluate", "finetune"])
def test_a_checkpoint_of_another_space_is_refused(ckpts, tmp_path, capsys, cmd):
    cases = [(ckpts["ft"], ckpts["gen"], "nb201", "generic"), (ckpts["ft"], _nb101_file(tmp_path), "nb201", "nb101"),
             (ckpts["gft"], "nb201", "generic", "nb201")]
    for ck, data, theirs, ours in cases:
        extra = ["--out", str(tmp_path / "x.pt")] if cmd == "finetune" else []
        assert main([cmd, "--checkpoint", ck, "--data", data] + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"fgp: error: checkpoint {ck} was trained on space {theirs}; {data} is {ours}"
    assert not (tmp_path / "x.pt").exists()
    assert main([cmd, "--checkpoint", ckpts["ft"], "--space", "nb101", "--out", str(tmp_path / "x.pt")]
                [: 5 if cmd != "finetune" else 7]) == 2
    assert capsys.readouterr().err.strip().endswith("was trained on space nb201; --space is nb101")


def test_an_unknown_op_is_refused_naming_it_and_the_line(ckpts, tmp_path, capsys):
    recs = list(ckpts["recs"][:5])
    recs[3] = dict(recs[3], ops=["in", "mystery_op", "out"], edges=[[0, 1], [1, 2]])
    path = _write_jsonl(tmp_path / "unknown.jsonl", recs)
    assert main(["predict", "--checkpoint", ckpts["gft"], "--data", path]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'mystery_op'" in err and "line 4" in err and path in err


def _rewrite(src, dst, fn):
    blob = torch.load(src, weights_only=True)
    fn(blob)
    torch.save(blob, dst)
    return str(dst)


def _as_v1(blob):
    blob["version"] = 1
    for k in ("space", "settings", "target"):
        del blob[k]


def test_version_1_checkpoints(ckpts, tmp_path, capsys):
    # v1 of a fixed space: the vocabulary is implied, predictions are the same
    v1 = _rewrite(ckpts["ft"], tmp_path / "v1.pt", _as_v1)
    ck = load_checkpoint(v1)
    assert ck.version == 1 and ck.space_name == "nb201" and ck.vocab == S.NB201_VOCAB
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["predict", "--checkpoint", ckpts["ft"], "--limit", "60", "--out", str(a)]) == 0
    assert main(["predict", "--checkpoint", v1, "--limit", "60", "--out", str(b)]) == 0
    assert _read_csv(a) == _read_csv(b)
    # v1 of a generic space did not record its op order: refused, saying how to regenerate
    g1 = _rewrite(ckpts["gft"], tmp_path / "g1.pt", _as_v1)
    assert load_checkpoint(g1).vocab is None
    capsys.readouterr()
    assert main(["predict", "--checkpoint", g1, "--data", ckpts["gen"]]) == 2
    err = capsys.readouterr().err
    assert "version-1" in err and "regenerate" in err and "\n" not in err.strip()
    # a future version and a truncated file stay refused
    v3 = _rewrite(ckpts["ft"], tmp_path / "v3.pt", lambda b: b.update(version=3))
    with pytest.raises(CheckpointError, match="version 3"):
        load_checkpoint(v3)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(open(ckpts["ft"], "rb").read()[:500])
    with pytest.raises(CheckpointError, match="not an fgp_ext checkpoint"):
        load_checkpoint(cut)


def test_predict_refuses_a_pretraining_checkpoint(ckpts):
    with pytest.raises(SystemExit, match="has no score head"):
        main(["predict", "--checkpoint", ckpts["pre"], "--limit", "60"])


def test_a_checkpoint_without_a_space(ckpts, tmp_path):
    from fgp_ext.train import save_checkpoint

    ck = load_checkpoint(ckpts["ft"])
    path = save_checkpoint(tmp_path / "nospace.pt", ck.encoder, ck.heads, {})
    bare = load_checkpoint(path)
    assert bare.space_name is None and bare.vocab is None
    with pytest.warns(UserWarning, match="records no search space"):
        ds = bare.load_data("nb201")                 # fixed vocabulary, same op count: unambiguous
    assert ds.space.vocab == S.NB201_VOCAB
    with pytest.raises(CheckpointError, match="records no search space"):
        bare.load_data(ckpts["gen"])                 # generic: op order unknown
    with pytest.raises(ValueError, match="7 op ids"):
        bare.load_data(_nb101_file(tmp_path))
    with pytest.raises(ValueError, match="has 7 op ids, the space 'nb101' 5"):
        save_checkpoint(tmp_path / "bad.pt", ck.encoder, ck.heads, {}, space="nb101")


def test_pretraining_cache_entries_record_their_space(tmp_path):
    from fgp_ext.train import ProtocolConfig, run_protocol

    ds = F.load("nb201").subset(np.arange(120))
    cfg = ProtocolConfig(encoder="gin", runs=[(21, 21)], ratio=0.5, n_train=60, n_val=10, epochs_pretrain=1,
                         epochs_finetune=1, hidden=8, pretrained_dir=str(tmp_path),
                         baseline=False, progress=False)
    run_protocol(ds, cfg)
    (entry,) = [p for p in tmp_path.glob("gin_seed21-*.pt") if ".partial" not in p.name]
    ck = load_checkpoint(entry)
    assert ck.space_name == "nb201" and ck.vocab == S.NB201_VOCAB and ck.settings["stage"] == "pretrain"
