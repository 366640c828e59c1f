"""Pre-training, fine-tuning, the split protocol and checkpoints (fgp_ext.train)."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

import fgp_ext
from fgp_ext.encoders import build_encoder
from fgp_ext.train import (CheckpointError, MLPHead, Predictor, evaluate, finetune, load_checkpoint, permutation,
                           predict, pretrain, protocol_runs, ranking_loss, save_checkpoint, set_seed,
                           split_indices, resolve_aux_target)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def nb201():
    from fgp_ext.data import formats

    ds = formats.load("nb201")
    return ds, fgp_ext.collate(ds.graphs)


# --------------------------------------------------------------------------------------------
# ranking loss
# --------------------------------------------------------------------------------------------
def test_ranking_loss_hand_examples():
    t = torch.tensor
    # correctly ordered with a gap larger than the margin: no loss
    assert float(ranking_loss(t([1.0, 0.0]), t([2.0, 1.0]), margin=0.5)) == 0.0
    # wrongly ordered by 1: 0.5 + 1
    assert float(ranking_loss(t([0.0, 1.0]), t([2.0, 1.0]), margin=0.5)) == pytest.approx(1.5)
    # correct but inside the margin: 0.5 - 0.2
    assert float(ranking_loss(t([0.2, 0.0]), t([5.0, 1.0]), margin=0.5)) == pytest.approx(0.3)
    # ties in y are skipped: pairs (0,2) and (1,2) only, each 0.5 with constant scores
    assert float(ranking_loss(t([0.0, 0.0, 0.0]), t([1.0, 1.0, 2.0]), margin=0.5)) == pytest.approx(0.5)
    # mean over pairs: y = [3, 2, 1], s = [0, 1, 0] -> pairs (0,1): 0.5+1, (0,2): 0.5, (1,2): 0
    assert float(ranking_loss(t([0.0, 1.0, 0.0]), t([3.0, 2.0, 1.0]))) == pytest.approx(2.0 / 3.0)
    # margin 0.1
    assert float(ranking_loss(t([0.0, 0.0]), t([1.0, 2.0]), margin=0.1)) == pytest.approx(0.1)


def test_ranking_loss_no_pairs_and_grad():
    s = torch.zeros(3, requires_grad=True)
    loss = ranking_loss(s, torch.ones(3))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(s.grad, torch.zeros(3))
    s = torch.tensor([0.0, 1.0], requires_grad=True)
    ranking_loss(s, torch.tensor([2.0, 1.0])).backward()
    torch.testing.assert_close(s.grad, torch.tensor([-1.0, 1.0]))


def test_ranking_loss_max_pairs_and_errors():
    g = torch.Generator().manual_seed(0)
    s, y = torch.randn(10), torch.arange(10.0)
    full = ranking_loss(s, y)
    capped = ranking_loss(s, y, max_pairs=5, generator=g)
    # the same 5 pairs by hand: the generator's first permutation of the 45 pairs i < j
    i, j = torch.triu_indices(10, 10, 1)
    sel = torch.randperm(45, generator=torch.Generator().manual_seed(0))[:5]
    i, j = i[sel], j[sel]
    torch.testing.assert_close(capped, torch.relu(0.5 - torch.sign(y[i] - y[j]) * (s[i] - s[j])).mean())
    assert not torch.equal(capped, full)
    assert torch.equal(ranking_loss(s, y, max_pairs=5, generator=torch.Generator().manual_seed(0)), capped)
    assert torch.equal(ranking_loss(s, y, max_pairs=45), full)      # cap >= number of pairs: all pairs
    with pytest.raises(ValueError, match="length"):
        ranking_loss(torch.zeros(3), torch.zeros(2))


def test_other_finetuning_losses_hand_examples():
    """The pairwise logistic, ListMLE and hinge + squared-error losses against values worked by hand;
    ``finetune_loss`` dispatches by name and refuses an unknown one."""
    from fgp_ext.train.config import FINETUNE_LOSSES
    from fgp_ext.train.losses import finetune_loss, listmle_loss, logistic_ranking_loss, regression_ranking_loss

    t = lambda v: torch.tensor(v, dtype=torch.float64)
    sp = lambda v: math.log1p(math.exp(v))
    # logistic: the pairs (0,1), (0,2), (1,2) of y = 3, 2, 1 with differences 1, -1, -2
    assert float(logistic_ranking_loss(t([0.0, -1.0, 1.0]), t([3.0, 2.0, 1.0]))) == pytest.approx(
        (sp(-1.0) + sp(1.0) + sp(2.0)) / 3)
    assert float(logistic_ranking_loss(t([0.0, 5.0]), t([1.0, 1.0]))) == 0.0          # a tie: no pair
    # ListMLE of scores (a, b, c) with y ranking b > c > a:
    # [lse(b, c, a) - b + lse(c, a) - c + lse(a) - a] / 3
    a, b, c = 0.3, 1.0, -0.5
    lse = lambda *v: math.log(sum(math.exp(x) for x in v))
    want = (lse(b, c, a) - b + lse(c, a) - c + 0.0) / 3
    assert float(listmle_loss(t([a, b, c]), t([1.0, 9.0, 4.0]))) == pytest.approx(want)
    s, y = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    # ListMLE reads the scores up to a shift only, the labels up to their order only
    assert float(listmle_loss(s + 3.0, y)) == pytest.approx(float(listmle_loss(s, y)))
    assert float(listmle_loss(s, torch.exp(y))) == pytest.approx(float(listmle_loss(s, y)))
    ordered = torch.sort(y, descending=True).indices
    far = torch.empty(8, dtype=torch.float64)
    far[ordered] = torch.arange(8, 0, -1, dtype=torch.float64) * 10.0       # the true order, far apart
    assert float(listmle_loss(far, y)) < 1e-3 and float(listmle_loss(-far, y)) > 10.0
    assert float(listmle_loss(t([2.0]), t([1.0]))) == 0.0
    # hinge + squared error to the batch's standardised labels; any positive affine map of y is the same
    z = (y - y.mean()) / y.std()
    torch.testing.assert_close(regression_ranking_loss(s, y), ranking_loss(s, y) + ((s - z) ** 2).mean())
    torch.testing.assert_close(regression_ranking_loss(s, 7.0 * y - 2.0), regression_ranking_loss(s, y))
    # dispatch by name
    torch.testing.assert_close(finetune_loss("hinge", s, y, margin=0.3), ranking_loss(s, y, margin=0.3))
    torch.testing.assert_close(finetune_loss("logistic", s, y), logistic_ranking_loss(s, y))
    torch.testing.assert_close(finetune_loss("listmle", s, y), listmle_loss(s, y))
    torch.testing.assert_close(finetune_loss("hinge+mse", s, y), regression_ranking_loss(s, y))
    assert FINETUNE_LOSSES == ("hinge", "logistic", "listmle", "hinge+mse")
    with pytest.raises(ValueError, match="unknown fine-tuning loss 'mse'"):
        finetune_loss("mse", s, y)
    for f in (logistic_ranking_loss, listmle_loss, regression_ranking_loss):
        with pytest.raises(ValueError, match="length"):
            f(torch.zeros(3), torch.zeros(2))


@pytest.mark.parametrize("name", ["logistic", "listmle", "hinge+mse"])
def test_other_finetuning_losses_have_gradients_that_order_the_scores(name):
    """A few plain gradient steps on each loss alone take random scores to the labels' order."""
    from fgp_ext.metrics import kendall_tau
    from fgp_ext.train.losses import finetune_loss

    g = torch.Generator().manual_seed(1)
    y = torch.randn(12, generator=g, dtype=torch.float64)
    s = torch.randn(12, generator=g, dtype=torch.float64, requires_grad=True)
    before = kendall_tau(s.detach().numpy(), y.numpy())
    for _ in range(300):
        loss = finetune_loss(name, s, y)
        (grad,) = torch.autograd.grad(loss, s)
        with torch.no_grad():
            s -= 2.0 * grad
    assert before < 0.5 and kendall_tau(s.detach().numpy(), y.numpy()) > 0.95


# --------------------------------------------------------------------------------------------
# split protocol
# --------------------------------------------------------------------------------------------
def test_split_nb201_sizes_and_permutations():
    s = split_indices(15625, 7813, 0.01, 21)
    assert (s["train"].size, s["val"].size, s["test"].size) == (78, 40, 15625 - 7813 - 40)
    np.testing.assert_array_equal(s["train"], np.arange(78))             # identity for seed 21
    np.testing.assert_array_equal(s["val"], np.arange(7813, 7853))
    expect = np.random.RandomState(2021).permutation(15625)     # what np.random.seed(2021) draws
    np.testing.assert_array_equal(permutation(15625, 2021), expect)
    s2 = split_indices(15625, 7813, 0.01, 2021)
    np.testing.assert_array_equal(s2["train"], expect[:78])
    np.testing.assert_array_equal(s2["test"], expect[7853:])
    assert set(s2["train"]) | set(s2["val"]) | set(s2["test"]) <= set(range(15625))
    assert not (set(s2["pool"]) & set(s2["val"])) and not (set(s2["val"]) & set(s2["test"]))
    with pytest.raises(ValueError):
        split_indices(100, 80, 0.01, 21)
    with pytest.raises(ValueError):
        split_indices(100, 50, 0.01, 21)     # int(50 * 0.01) = 0 labelled


def test_protocol_runs():
    runs = protocol_runs(9)
    assert runs[:3] == [(21, 21), (2021, 2021), (202121, 202121)]
    assert len(set(runs)) == 9
    with pytest.raises(ValueError):
        protocol_runs(10)


# --------------------------------------------------------------------------------------------
# pre-training + fine-tuning on real NB201 data
# --------------------------------------------------------------------------------------------
def test_pretrain_finetune_beats_random(nb201):
    ds, batch = nb201
    y = ds.targets("cifar10_test_200ep")
    rng = np.random.default_rng(0)
    sur = fgp_ext.flow_surrogate(batch, k=7, std=0.1, num_ops=7)
    set_seed(21)
    enc = build_encoder("gatedgcn", 7, hidden=32)
    pre = pretrain(enc, batch, sur, epochs=1, batch_size=256, indices=rng.choice(len(ds), 1024, replace=False),
                   aux_target=resolve_aux_target("params", ds), seed=21, progress=False)
    assert len(pre.history) == 1 and math.isfinite(pre.history[0]["rec"]) and pre.history[0]["aux"] is not None
    assert math.isfinite(pre.time_per_epoch) and pre.time_per_epoch >= 0
    split = split_indices(len(ds), 7813, 0.01, 2021)
    ft = finetune(enc, batch, y, split["train"], split["val"], epochs=12, seed=21, progress=False)
    assert len(ft.history) == 12 and 1 <= ft.best_epoch <= 12
    test = split["test"][:2000]
    m = evaluate(ft.model, batch, y, test)
    assert m["n"] == 2000
    assert m["kendall_tau"] > 0.3, m
    # the restored model is the best-validation one
    from fgp_ext.metrics import kendall_tau
    assert kendall_tau(predict(ft.model, batch, split["val"]), y[split["val"]]) == pytest.approx(ft.best_val_tau)


def test_finetune_deterministic(nb201):
    ds, batch = nb201
    y = ds.targets("cifar10_test_200ep")
    idx = np.arange(40)
    outs = []
    for _ in range(2):
        set_seed(5)
        enc = build_encoder("gin", 7, hidden=16)
        ft = finetune(enc, batch, y, idx[:24], idx[24:], epochs=2, seed=5, progress=False)
        outs.append(predict(ft.model, batch, idx))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_input_errors(nb201):
    ds, batch = nb201
    enc = build_encoder("mlp", 7, hidden=8)
    with pytest.raises(ValueError, match="surrogate_targets"):
        pretrain(enc, batch, torch.zeros(3, 7), epochs=1)
    with pytest.raises(ValueError, match="at least 2"):
        finetune(enc, batch, ds.targets("cifar10_test_200ep"), [0], epochs=1)


def test_diverging_training_stops_at_the_epoch_it_diverges(nb201, tmp_path):
    from fgp_ext.train import TrainingDivergedError

    ds, batch = nb201
    idx = np.arange(64)
    sur = fgp_ext.flow_surrogate(batch, k=7, std=0.1, num_ops=7)
    # one epoch at lr 1e30: the loss of that epoch is finite but the weights overflow the next
    # forward pass, which only the final look at the embeddings sees
    set_seed(0)
    with pytest.raises(TrainingDivergedError, match=r"pre-training diverged in epoch 1: .*embedding.*1e\+30"):
        pretrain(build_encoder("gatedgcn", 7, hidden=8), batch, sur, epochs=1, lr=1e30, indices=idx, progress=False)
    # several epochs: caught in the epoch where the loss turns NaN, before the resume state is
    # written for it (so a resumed run never continues from NaN weights)
    state = tmp_path / "partial.pt"
    set_seed(0)
    with pytest.raises(TrainingDivergedError, match=r"pre-training diverged in epoch 2: the mean training loss"):
        pretrain(build_encoder("gatedgcn", 7, hidden=8), batch, sur, epochs=5, lr=1e30, indices=idx,
                 progress=False, resume_path=state)
    saved = torch.load(state, weights_only=True)
    assert saved["epochs_done"] == 1
    # a healthy learning rate passes the same checks
    set_seed(0)
    ok = pretrain(build_encoder("gatedgcn", 7, hidden=8), batch, sur, epochs=2, indices=idx, progress=False)
    assert len(ok.history) == 2
    # fine-tuning: with validation the epoch's predictions are checked, without it the final model
    y = ds.targets("cifar10_test_200ep")
    for val in (idx[40:], None):
        set_seed(0)
        with pytest.raises(TrainingDivergedError, match=r"fine-tuning diverged in epoch \d+"):
            finetune(build_encoder("gin", 7, hidden=8), batch, y, idx[:40], val, epochs=3, lr=1e30, seed=0,
                     progress=False)


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gatedgcn", "gin", "mlp"])
def test_checkpoint_round_trip(tmp_path, nb201, name):
    ds, batch = nb201
    torch.manual_seed(0)
    enc = build_encoder(name, 7, hidden=16, max_nodes=8) if name == "mlp" else build_encoder(name, 7, hidden=16)
    model = Predictor(enc, MLPHead(enc.out_dim, 8, 1))
    flow = MLPHead(enc.out_dim, 128, 7)
    path = save_checkpoint(tmp_path / "m.pt", enc, {"score": model.head, "flow": flow}, {"note": "x"})
    ck = load_checkpoint(path)
    assert ck.meta == {"note": "x"} and set(ck.heads) == {"score", "flow"}
    sub = batch.select(np.arange(50))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(ck.predictor()(sub), model(sub), rtol=0, atol=0)
        torch.testing.assert_close(ck.heads["flow"](ck.encoder(sub)), flow(enc(sub)), rtol=0, atol=0)


def test_checkpoint_refuses_foreign_files(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other)
    with pytest.raises(CheckpointError, match="not an fgp_ext checkpoint"):
        load_checkpoint(other)
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(CheckpointError, match="not an fgp_ext checkpoint"):
        load_checkpoint(text)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    enc = build_encoder("gin", 3, hidden=4)
    p = save_checkpoint(tmp_path / "v.pt", enc)
    blob = torch.load(p, weights_only=True)
    blob["version"] = 99
    torch.save(blob, p)
    with pytest.raises(CheckpointError, match="version"):
        load_checkpoint(p)


def test_resolve_aux_target_columns_proxies_and_errors():
    from fgp_ext import load, proxies
    from fgp_ext.train import resolve_aux_target

    ds = load("nb201")
    col = resolve_aux_target("cifar10_val_12ep", ds)
    np.testing.assert_array_equal(col, ds.targets("cifar10_val_12ep"))
    syn = resolve_aux_target("synflow", ds)
    assert syn.shape == (len(ds),) and np.isfinite(syn).all()
    np.testing.assert_array_equal(syn, proxies.nb201_proxy("synflow", dataset=ds))
    with pytest.raises(ValueError, match="unknown auxiliary target"):
        resolve_aux_target("bogus", ds)


def test_proxy_only_pretraining_needs_aux_and_ignores_reconstruction():
    from fgp_ext import collate, load
    from fgp_ext.encoders import build_encoder
    from fgp_ext.train import pretrain

    ds = load("nb201")
    batch = collate(ds.graphs[:64])
    sur = torch.randn(64, 7)
    enc = build_encoder("gin", ds.space.num_ops, hidden=16)
    with pytest.raises(ValueError, match="needs an aux_target"):
        pretrain(enc, batch, sur, epochs=1, reconstruction=False)
    aux = ds.targets("cifar10_val_12ep")[:64]
    # proxy only: the surrogate values must not matter (same seed, different surrogates, same weights)
    outs = []
    for s in (sur, torch.randn(64, 7) * 100):
        e = build_encoder("gin", ds.space.num_ops, hidden=16)
        torch.manual_seed(0)
        e.load_state_dict(enc.state_dict())
        pretrain(e, batch, s, epochs=2, batch_size=32, aux_target=aux, reconstruction=False, seed=1, progress=False)
        outs.append(torch.cat([p.detach().flatten() for p in e.parameters()]))
    assert torch.equal(outs[0], outs[1])


def test_pretrain_leaves_nan_aux_targets_out_of_the_ranking_loss():
    """Extra unlabelled architectures carry NaN proxies: pre-training runs and stays finite, and the
    NaN rows do not enter the ranking loss (finite stand-ins for them change the result)."""
    from fgp_ext import collate, load
    from fgp_ext.encoders import build_encoder
    from fgp_ext.train import pretrain

    ds = load("nb201")
    batch = collate(ds.graphs[:48])
    aux = np.array(ds.targets("cifar10_val_12ep")[:48], dtype=np.float64)
    aux[::3] = np.nan
    outs = []
    for a in (aux, np.where(np.isnan(aux), 1e6, aux)):
        torch.manual_seed(0)
        e = build_encoder("gin", ds.space.num_ops, hidden=8)
        res = pretrain(e, batch, torch.zeros(48, 7), epochs=2, batch_size=16, aux_target=a, reconstruction=False,
                       seed=1, progress=False)
        assert all(np.isfinite(h["loss"]) and h["loss"] > 0 for h in res.history)
        outs.append(torch.cat([p.detach().flatten() for p in e.parameters()]))
    assert torch.isfinite(outs[0]).all()
    assert not torch.equal(outs[0], outs[1])
    with pytest.raises(ValueError, match="fewer than 2 finite"):
        pretrain(build_encoder("gin", ds.space.num_ops, hidden=8), batch, torch.zeros(48, 7), epochs=1,
                 aux_target=np.full(48, np.nan))


def test_run_protocol_pretrains_on_extra_unlabelled_cells():
    from fgp_ext import ArchGraph, load
    from fgp_ext.data.spaces import sample_nb101
    from fgp_ext.train import run_protocol

    ds = sample_nb101(160, seed=1)
    rng = np.random.default_rng(0)
    labelled = type(ds)(ds.graphs[:120], ds.space, {"acc": rng.random(120), "proxy": rng.random(120)})
    extra = type(ds)(ds.graphs[120:], ds.space)
    s = run_protocol(labelled, "gin", "acc", runs=1, ratio=0.5, n_train=60, n_val=20, epochs_pretrain=1,
                     epochs_finetune=1, hidden=8, aux_target=labelled.targets("proxy"), unlabelled=extra,
                     progress=False, log=lambda *a: None)
    assert s["num_unlabelled"] == 40 and s["num_archs"] == 120
    assert s["runs"][0]["n_test"] == 120 - 60 - 20
    bad_ops = type(ds)([ArchGraph(np.array([0, 9]), np.array([[0], [1]]))], ds.space)
    with pytest.raises(ValueError, match="op id outside the vocabulary"):
        run_protocol(labelled, "gin", "acc", runs=1, n_train=60, n_val=20, epochs_pretrain=1, epochs_finetune=1,
                     unlabelled=bad_ops, progress=False, log=lambda *a: None)
    with pytest.raises(ValueError, match="another search space"):
        run_protocol(labelled, "gin", "acc", runs=1, n_train=60, n_val=20, epochs_pretrain=1, epochs_finetune=1,
                     unlabelled=load("nb201").subset(np.arange(5)), progress=False, log=lambda *a: None)


def test_aux_target_rank_vote():
    """'a+b' is the mean of the parts' ranks (ties averaged); NaN where a part is missing."""
    from fgp_ext import load
    from fgp_ext.data.dataset import Dataset
    from fgp_ext.train import resolve_aux_target

    ds = load("nb201").subset(np.arange(6))
    cols = {"a": [3.0, 1.0, 2.0, 2.0, 9.0, 0.0], "b": [0.0, 1.0, 2.0, 3.0, 4.0, np.nan]}
    d = Dataset(ds.graphs, ds.space, cols)
    np.testing.assert_allclose(resolve_aux_target("a+b", d)[:5], [(5 + 1) / 2, (2 + 2) / 2, (3.5 + 3) / 2,
                                                                  (3.5 + 4) / 2, (6 + 5) / 2])
    assert np.isnan(resolve_aux_target("a+b", d)[5])
    with pytest.raises(ValueError, match="malformed"):
        resolve_aux_target("a+", d)
    with pytest.raises(ValueError, match="unknown auxiliary target"):
        resolve_aux_target("a+nope", d)


def test_aux_target_rank_vote_is_scipys_without_scipy():
    """The vote ranks with fgp_ext.metrics.rankdata (no scipy at run time) and gives the very values
    scipy's average ranks gave, on the shipped NB201 proxies (many ties among them)."""
    stats = pytest.importorskip("scipy.stats")
    from fgp_ext import load, proxies
    from fgp_ext.train import resolve_aux_target

    ds = load("nb201")
    vote = resolve_aux_target("synflow+jacov+snip", ds)
    parts = [np.asarray(proxies.nb201_proxy(p, dataset=ds), dtype=np.float64) for p in ("synflow", "jacov", "snip")]
    assert min(len(np.unique(p)) for p in parts) < len(ds)          # ties do occur
    expect = np.mean([stats.rankdata(p) for p in parts], axis=0)
    np.testing.assert_array_equal(vote, expect)


def test_mlp_encoder_sized_for_larger_unlabelled_cells():
    """The MLP baseline's input width must cover the pre-training extras, which may be larger than
    every labelled architecture."""
    from fgp_ext.data.spaces import sample_nb101
    from fgp_ext.train import run_protocol

    ds = sample_nb101(400, seed=2)
    small = [g for g in ds.graphs if g.num_nodes <= 5][:100]
    big = [g for g in ds.graphs if g.num_nodes == 7][:20]
    assert len(small) == 100 and big
    rng = np.random.default_rng(0)
    labelled = type(ds)(small, ds.space, {"acc": rng.random(100)})
    s = run_protocol(labelled, "mlp", "acc", runs=1, ratio=0.5, n_train=50, n_val=20, epochs_pretrain=1,
                     epochs_finetune=1, hidden=8, unlabelled=type(ds)(big, ds.space), baseline=False, progress=False,
                     log=lambda *a: None)
    assert s["encoder_config"]["max_nodes"] == 7


def test_several_auxiliary_targets_get_one_output_each():
    """``a,b`` resolves to [B, 2] columns; pre-training gives the head one output per column, each
    with its own ranking loss; a one-column [B, 1] target is exactly the [B] one."""
    from fgp_ext import collate, load
    from fgp_ext.encoders import build_encoder
    from fgp_ext.train import pretrain, resolve_aux_target

    ds = load("nb201")
    both = resolve_aux_target("meco,synflow+snip", ds)
    assert both.shape == (len(ds), 2)
    np.testing.assert_array_equal(both[:, 0], resolve_aux_target("meco", ds))
    np.testing.assert_array_equal(both[:, 1], resolve_aux_target("synflow+snip", ds))
    with pytest.raises(ValueError, match="malformed auxiliary target list"):
        resolve_aux_target("meco,", ds)
    with pytest.raises(ValueError, match="malformed auxiliary target vote"):
        resolve_aux_target("meco+", ds)

    batch = collate(ds.graphs[:48])
    aux = np.array(ds.targets("cifar10_val_12ep")[:48], dtype=np.float64)

    def train(a, out_dim):
        torch.manual_seed(0)
        e = build_encoder("gin", ds.space.num_ops, hidden=8)
        res = pretrain(e, batch, torch.zeros(48, 7), epochs=2, batch_size=16, aux_target=a, seed=1,
                       progress=False)
        assert res.aux_head[-1].out_features == out_dim
        return torch.cat([p.detach().flatten() for p in e.parameters()]), res

    one, _ = train(aux, 1)
    col, _ = train(aux[:, None], 1)
    assert torch.equal(one, col)
    two, res = train(np.stack([aux, aux], 1), 2)
    assert all(np.isfinite(h["aux"]) and h["aux"] > 0 for h in res.history)
    # same head initialisation (same shapes, same seed): only the second column differs, and it counts
    other, _ = train(np.stack([aux, -aux], 1), 2)
    assert not torch.allclose(other, two, atol=1e-4)
    from fgp_ext.train import Predictor
    with pytest.raises(ValueError, match="one output"):
        Predictor(build_encoder("gin", ds.space.num_ops, hidden=8), res.aux_head)
    with pytest.raises(ValueError, match=r"must be \[48\] or \[48, P\]"):
        pretrain(build_encoder("gin", ds.space.num_ops, hidden=8), batch, torch.zeros(48, 7), epochs=1,
                 aux_target=np.zeros((48, 2, 2)))
    with pytest.raises(ValueError, match="fewer than 2 finite"):
        pretrain(build_encoder("gin", ds.space.num_ops, hidden=8), batch, torch.zeros(48, 7), epochs=1,
                 aux_target=np.stack([aux, np.full(48, np.nan)], 1))


def test_run_protocol_pads_several_aux_targets_for_unlabelled_cells():
    from fgp_ext.data.spaces import sample_nb101
    from fgp_ext.train import run_protocol

    ds = sample_nb101(100, seed=2)
    rng = np.random.default_rng(0)
    labelled = type(ds)(ds.graphs[:80], ds.space, {"acc": rng.random(80)})
    extra = type(ds)(ds.graphs[80:], ds.space)
    kw = dict(runs=1, ratio=0.5, n_train=40, n_val=20, epochs_pretrain=1, epochs_finetune=1, hidden=8,
              unlabelled=extra, progress=False, log=lambda *a: None)
    s = run_protocol(labelled, "gin", "acc", aux_target=rng.random((80, 2)), **kw)
    assert np.isfinite(s["mean"]["fgp"]["kendall_tau"])
    with pytest.raises(ValueError, match=r"must be \[B\] or \[B, P\]"):
        run_protocol(labelled, "gin", "acc", aux_target=rng.random((80, 2, 2)), **kw)


def test_run_protocol_finetunes_from_the_aux_head():
    """``finetune_aux_head`` adds a method that starts fine-tuning from the pre-trained proxy head: with
    no fine-tuning epochs it ranks by the proxy pre-training learned (here the labels, or their
    negation, as the proxy), so the sign of its tau follows the proxy's; the plain FGP runs are
    unchanged by the extra method."""
    from fgp_ext.data.spaces import sample_nb101
    from fgp_ext.train import run_protocol

    ds = sample_nb101(160, seed=4)
    acc = np.array([float((g.ops == 3).sum()) + 0.5 * g.num_nodes for g in ds.graphs])  # learnable from ops
    acc += np.random.RandomState(0).rand(len(acc)) * 0.1
    labelled = type(ds)(ds.graphs, ds.space, {"acc": acc})
    kw = dict(runs=1, ratio=0.5, n_train=60, n_val=20, epochs_pretrain=30, epochs_finetune=0, hidden=16,
              baseline=False, progress=False, log=lambda *a: None)
    with_aux = run_protocol(labelled, "gin", "acc", aux_target=acc, finetune_aux_head=True, **kw)
    plain = run_protocol(labelled, "gin", "acc", aux_target=acc, **kw)
    inverted = run_protocol(labelled, "gin", "acc", aux_target=-acc, finetune_aux_head=True, **kw)
    assert set(with_aux["mean"]) == {"fgp", "fgp_aux_head", "fgp_both_heads"} and set(plain["mean"]) == {"fgp"}
    assert with_aux["runs"][0]["fgp"]["kendall_tau"] == plain["runs"][0]["fgp"]["kendall_tau"]
    assert with_aux["runs"][0]["fgp_aux_head"]["kendall_tau"] > 0.4
    assert inverted["runs"][0]["fgp_aux_head"]["kendall_tau"] < -0.4
    with pytest.raises(ValueError, match="one-column aux_target"):
        run_protocol(labelled, "gin", "acc", aux_target=None, finetune_aux_head=True, **kw)
    with pytest.raises(ValueError, match="one-column aux_target"):
        run_protocol(labelled, "gin", "acc", aux_target=np.stack([acc, acc], 1), finetune_aux_head=True, **kw)


def test_run_protocol_passes_encoder_config():
    from fgp_ext.data.spaces import sample_nb101
    from fgp_ext.train import run_protocol

    ds = sample_nb101(120, seed=3)
    rng = np.random.default_rng(0)
    labelled = type(ds)(ds.graphs, ds.space, {"acc": rng.random(len(ds))})
    s = run_protocol(labelled, "flowerformer", "acc", runs=1, ratio=0.5, n_train=40, n_val=20, epochs_pretrain=1,
                     epochs_finetune=1, hidden=8, baseline=False, progress=False, log=lambda *a: None,
                     encoder_config={"reverse_successors": "earliest", "hidden": 999})
    assert s["encoder_config"] == {"reverse_successors": "earliest", "hidden": 8, "dropout": 0.1}
    with pytest.raises(ValueError, match="reverse_successors"):
        run_protocol(labelled, "flowerformer", "acc", runs=1, ratio=0.5, n_train=40, n_val=20, epochs_pretrain=1,
                     epochs_finetune=1, hidden=8, baseline=False, progress=False, log=lambda *a: None,
                     encoder_config={"reverse_successors": "last"})


# --------------------------------------------------------------------------------------------
# fine-tuning lr schedule and the pre-training cache of run_protocol
# --------------------------------------------------------------------------------------------
def test_lr_factor_warmup_cosine_and_errors():
    from fgp_ext.train import lr_factor

    assert [lr_factor(e) for e in (0, 7, 499)] == [1.0, 1.0, 1.0]
    # linear warm-up, floored so that epoch 0 still moves
    assert lr_factor(0, "cosine", 30, 600) == 1e-6
    assert lr_factor(15, "cosine", 30, 600) == pytest.approx(0.5)
    assert lr_factor(10, "constant", 20) == pytest.approx(0.5)
    assert lr_factor(20, "constant", 20) == 1.0
    # half a cosine from 1 (end of warm-up) through 0.5 (midway) to 0 (schedule end), then 0
    assert lr_factor(30, "cosine", 30, 600) == pytest.approx(1.0)
    assert lr_factor(315, "cosine", 30, 600) == pytest.approx(0.5)
    assert lr_factor(600, "cosine", 30, 600) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(700, "cosine", 30, 600) == pytest.approx(0.0, abs=1e-12)
    # FlowerFormer's recipe stops at 500 of 600: the rate is still above 0 there
    assert lr_factor(499, "cosine", 30, 600) == pytest.approx(0.5 * (1 + math.cos(math.pi * 469 / 570)))
    assert lr_factor(499, "cosine", 30, 600) > 0.06
    factors = [lr_factor(e, "cosine", 5, 50) for e in range(60)]
    assert all(a <= b for a, b in zip(factors[:5], factors[1:6]))        # rising in the warm-up
    assert all(a >= b for a, b in zip(factors[5:], factors[6:]))         # falling after it
    with pytest.raises(ValueError, match="unknown lr schedule"):
        lr_factor(0, "linear")
    with pytest.raises(ValueError, match="schedule_epochs > warmup_epochs"):
        lr_factor(40, "cosine", 30, 30)
    with pytest.raises(ValueError, match=">= 0"):
        lr_factor(-1)


def test_finetune_follows_the_lr_schedule(nb201):
    """The optimiser's rate in every epoch is ``lr * lr_factor(epoch)`` (recorded in the history),
    a cosine run differs from a constant one, and a bad schedule is refused before any training."""
    from fgp_ext.train import lr_factor

    ds, batch = nb201
    y = ds.targets("cifar10_test_200ep")
    idx = np.arange(40)
    runs = {}
    for sched in ("constant", "cosine"):
        set_seed(5)
        enc = build_encoder("gin", 7, hidden=16)
        ft = finetune(enc, batch, y, idx[:24], idx[24:], epochs=6, lr=2e-3, seed=5, progress=False,
                      lr_schedule=sched, warmup_epochs=2, schedule_epochs=8)
        assert [h["lr"] for h in ft.history] == pytest.approx([2e-3 * lr_factor(e, sched, 2, 8) for e in range(6)])
        runs[sched] = predict(ft.model, batch, idx)
    assert not np.array_equal(runs["constant"], runs["cosine"])
    enc = build_encoder("gin", 7, hidden=16)
    with pytest.raises(ValueError, match="schedule_epochs"):
        finetune(enc, batch, y, idx[:24], idx[24:], epochs=6, progress=False, lr_schedule="cosine", warmup_epochs=6)


def test_finetune_select_after_keeps_a_later_checkpoint(nb201):
    """``select_after=k`` trains exactly as without it (same history) but keeps the best-validation
    epoch among epochs > k. With k = the unrestricted best epoch the kept checkpoint must move
    later, and the kept model scores the validation set with that later epoch's tau; ``k`` outside
    [0, epochs) is refused before any training."""
    from fgp_ext.metrics import kendall_tau

    ds, batch = nb201
    y = ds.targets("cifar10_test_200ep")
    idx = np.arange(60)

    def run(k):
        set_seed(3)
        enc = build_encoder("gin", 7, hidden=16)
        return finetune(enc, batch, y, idx[:30], idx[30:], epochs=10, lr=1e-2, seed=3, progress=False,
                        select_after=k)

    free = run(0)
    hist = [h["val_tau"] for h in free.history]
    assert free.best_epoch == int(np.argmax(hist)) + 1 and free.best_val_tau == max(hist)
    k = free.best_epoch
    assert k < 10, "the unrestricted best must leave later epochs to choose from"
    late = run(k)
    assert [h["val_tau"] for h in late.history] == hist           # selection never changes training
    assert late.best_epoch == int(np.argmax(hist[k:])) + k + 1 > k
    assert late.best_val_tau == max(hist[k:]) <= free.best_val_tau
    assert kendall_tau(predict(late.model, batch, idx[30:]), y[idx[30:]]) == pytest.approx(late.best_val_tau)
    for bad in (-1, 10):
        with pytest.raises(ValueError, match="select_after"):
            finetune(build_encoder("gin", 7, hidden=16), batch, y, idx[:30], idx[30:], epochs=10,
                     progress=False, select_after=bad)


def _small_labelled(n=120, seed=3):
    from fgp_ext.data.spaces import sample_nb101

    ds = sample_nb101(n, seed=seed)
    acc = np.array([float((g.ops == 3).sum()) + 0.5 * g.num_nodes for g in ds.graphs])
    acc += np.random.RandomState(0).rand(len(acc)) * 0.1
    return type(ds)(ds.graphs, ds.space, {"acc": acc}), acc


def _cache_entries(folder) -> list:
    """The pre-training cache entries of a ``pretrained_dir`` (not partials, not lock files)."""
    return sorted(p for p in folder.glob("*.pt") if not p.name.endswith(".partial.pt"))


def test_run_protocol_caches_pretraining_per_seed(tmp_path):
    """``pretrained_dir`` writes one file per seed, a second call loads it instead of pre-training
    and gives the same numbers as the first (and as a run without the cache); other fine-tuning
    settings reuse it; other pre-training settings or data get files of their own (the name carries
    a key of the settings), never reuse or overwrite another's."""
    from fgp_ext.train import run_protocol

    labelled, acc = _small_labelled()
    logs = []
    kw = dict(runs=2, ratio=0.5, n_train=50, n_val=20, epochs_pretrain=3, epochs_finetune=3, hidden=16,
              baseline=False, progress=False, aux_target=acc, finetune_aux_head=True)
    cache = tmp_path / "pre"
    first = run_protocol(labelled, "gin", "acc", pretrained_dir=cache, log=logs.append, **kw)
    entries = _cache_entries(cache)
    assert [re.sub("-[0-9a-f]{12}", "-KEY", p.name) for p in entries] == ["gin_seed2021-KEY.pt", "gin_seed21-KEY.pt"]
    assert sum("pre-training gin" in line for line in logs) == 2
    logs.clear()
    second = run_protocol(labelled, "gin", "acc", pretrained_dir=cache, log=logs.append, **kw)
    assert not any("pre-training gin" in line for line in logs)
    assert sum("loaded from" in line for line in logs) == 2
    uncached = run_protocol(labelled, "gin", "acc", log=lambda *a: None, **kw)
    for other in (second, uncached):
        for r0, r1 in zip(first["runs"], other["runs"]):
            for method in ("fgp", "fgp_aux_head"):
                assert r0[method]["kendall_tau"] == r1[method]["kendall_tau"]
                assert r0[method]["p@10%"] == r1[method]["p@10%"]
    assert second["pretrain_s_per_epoch"] == first["pretrain_s_per_epoch"]    # the history comes along
    # fine-tuning settings are not part of the key
    logs.clear()
    ft = run_protocol(labelled, "gin", "acc", pretrained_dir=cache, log=logs.append, finetune_lr=3e-4,
                      finetune_schedule="cosine", finetune_warmup=1, **kw)
    assert not any("pre-training gin" in line for line in logs)
    assert ft["finetune_lr"] == 3e-4 and ft["finetune_schedule"] == "cosine" and ft["finetune_schedule_epochs"] == 3
    # pre-training settings and data are: each gets its own entry, the first ones stay as they were
    before = {p: p.read_bytes() for p in entries}
    for k, change in enumerate((dict(epochs_pretrain=4), dict(hidden=8), dict(aux_target=acc + 1.0), dict(lr=3e-3))):
        logs.clear()
        run_protocol(labelled, "gin", "acc", pretrained_dir=cache, log=logs.append, **{**kw, **change, "runs": 1})
        assert sum("pre-training gin" in line for line in logs) == 1, change
        assert len(_cache_entries(cache)) == 3 + k
    assert all(p.read_bytes() == b for p, b in before.items())
    # a corrupt cache file is our checkpoint error, not a crash deep in torch
    entries[1].write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        run_protocol(labelled, "gin", "acc", pretrained_dir=cache, log=lambda *a: None, **kw)


def test_run_protocol_aux_name_labels_an_array_target(tmp_path):
    """An array ``aux_target`` is recorded as ``aux_name`` (default "array"), so a cache made from
    the resolved column is shared with a caller that names the column; a name that contradicts a
    string target is refused."""
    from fgp_ext.train import run_protocol

    labelled, acc = _small_labelled(80)
    kw = dict(runs=1, ratio=0.5, n_train=30, n_val=10, epochs_pretrain=1, epochs_finetune=1, hidden=8,
              baseline=False, progress=False, pretrained_dir=tmp_path / "pre")
    named = run_protocol(labelled, "gin", "acc", aux_target=acc, aux_name="acc", log=lambda *a: None, **kw)
    assert named["aux_target"] == "acc"
    assert load_checkpoint(_cache_entries(tmp_path / "pre")[0]).meta["aux_target"] == "acc"
    logs = []
    by_name = run_protocol(labelled, "gin", "acc", aux_target="acc", log=logs.append, **kw)
    assert any("loaded from" in line for line in logs) and not any("pre-training gin" in line for line in logs)
    assert by_name["runs"][0]["fgp"]["kendall_tau"] == named["runs"][0]["fgp"]["kendall_tau"]
    logs.clear()
    run_protocol(labelled, "gin", "acc", aux_target=acc, log=logs.append, **kw)   # unnamed: "array", another key
    assert any("pre-training gin" in line for line in logs) and len(_cache_entries(tmp_path / "pre")) == 2
    with pytest.raises(ValueError, match="aux_name 'meco' names another target than aux_target 'acc'"):
        run_protocol(labelled, "gin", "acc", aux_target="acc", aux_name="meco", log=lambda *a: None, **kw)


def test_run_protocol_refuses_a_bad_finetune_schedule_before_pretraining(tmp_path):
    from fgp_ext.train import run_protocol

    labelled, acc = _small_labelled(80)
    with pytest.raises(ValueError, match="unknown lr schedule"):
        run_protocol(labelled, "gin", "acc", runs=1, ratio=0.5, n_train=30, n_val=10, epochs_pretrain=1,
                     epochs_finetune=1, hidden=8, progress=False, finetune_schedule="step",
                     pretrained_dir=tmp_path / "pre", log=lambda *a: None)
    assert not (tmp_path / "pre").exists()


class _Killed(Exception):
    pass


def test_pretrain_resumes_after_a_kill_with_identical_results(tmp_path):
    """A pre-training killed after epoch 2 of 4 and started again from its state file ends with
    exactly the weights, heads and history of an uninterrupted run (shuffling, dropout and AdamW
    state all restored); the state file is gone afterwards; other settings are refused."""
    labelled, acc = _small_labelled(90)
    batch = fgp_ext.collate(labelled.graphs)
    sur = fgp_ext.flow_surrogate(batch, k=4, std=1.0, num_ops=labelled.space.num_ops)

    def run(**kw):
        set_seed(7)
        enc = build_encoder("gin", labelled.space.num_ops, hidden=8, dropout=0.3)
        pre = pretrain(enc, batch, sur, epochs=4, batch_size=32, aux_target=acc, seed=7, progress=False, **kw)
        return enc, pre

    enc_a, pre_a = run()
    state = tmp_path / "gin_seed7.partial.pt"

    def kill_after_two(row):
        if row["epoch"] == 2:
            raise _Killed

    with pytest.raises(_Killed):
        run(resume_path=state, resume_meta={"run": "a"}, on_epoch=kill_after_two)
    assert state.is_file()
    seen = []
    enc_b, pre_b = run(resume_path=state, resume_meta={"run": "a"}, on_epoch=seen.append)
    assert [r["epoch"] for r in seen] == [3, 4]                       # only the missing epochs ran
    assert not state.exists()
    for (name, pa), pb in zip(enc_a.state_dict().items(), enc_b.state_dict().values()):
        assert torch.equal(pa, pb), name
    for ha, hb in ((pre_a.flow_head, pre_b.flow_head), (pre_a.aux_head, pre_b.aux_head)):
        for pa, pb in zip(ha.state_dict().values(), hb.state_dict().values()):
            assert torch.equal(pa, pb)
    assert [r["loss"] for r in pre_a.history] == [r["loss"] for r in pre_b.history]
    # a state from other settings, or not a state at all, is refused
    with pytest.raises(_Killed):
        run(resume_path=state, resume_meta={"run": "a"}, on_epoch=kill_after_two)
    with pytest.raises(ValueError, match=r"other settings \(run differ"):
        run(resume_path=state, resume_meta={"run": "b"})
    state.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="pre-training state"):
        run(resume_path=state, resume_meta={"run": "a"})


def test_run_protocol_continues_a_killed_pretraining(tmp_path, monkeypatch):
    """Through ``pretrained_dir``: a run killed during pre-training leaves ``*.partial.pt``; the same
    call again completes it and matches a never-interrupted run."""
    import fgp_ext.train as train
    import fgp_ext.train.protocol as protocol

    labelled, acc = _small_labelled(90)
    kw = dict(runs=1, ratio=0.5, n_train=40, n_val=20, epochs_pretrain=3, epochs_finetune=2, hidden=8,
              baseline=False, progress=False, aux_target=acc, log=lambda *a: None)
    clean = train.run_protocol(labelled, "gin", "acc", **kw)
    real = train.pretrain

    def killed_pretrain(*a, **k):
        def stop(row):
            if row["epoch"] == 2:
                raise _Killed
        return real(*a, **k, on_epoch=stop)

    monkeypatch.setattr(protocol, "pretrain", killed_pretrain)
    with pytest.raises(_Killed):
        train.run_protocol(labelled, "gin", "acc", pretrained_dir=tmp_path, **kw)
    assert [re.sub("-[0-9a-f]{12}", "-KEY", p.name) for p in sorted(tmp_path.iterdir()) if p.suffix != ".lock"] \
        == ["gin_seed21-KEY.partial.pt"]
    monkeypatch.setattr(protocol, "pretrain", real)
    resumed = train.run_protocol(labelled, "gin", "acc", pretrained_dir=tmp_path, **kw)
    assert [re.sub("-[0-9a-f]{12}", "-KEY", p.name) for p in sorted(tmp_path.iterdir()) if p.suffix != ".lock"] \
        == ["gin_seed21-KEY.pt"]
    assert resumed["runs"][0]["fgp"]["kendall_tau"] == clean["runs"][0]["fgp"]["kendall_tau"]
    assert resumed["runs"][0]["fgp"]["p@10%"] == clean["runs"][0]["fgp"]["p@10%"]


def test_cached_pretraining_of_another_model_is_refused(tmp_path):
    """A cache whose recorded arguments match but whose stored encoder differs (e.g. a constructor
    default changed since it was written) is an error naming the difference, not a failed or
    partial load."""
    from fgp_ext.encoders import build_encoder
    from fgp_ext.train import PretrainResult, _load_pretrained, _save_pretrained

    meta = {"kind": "fgp_pretraining", "encoder": "flowerformer"}
    old = build_encoder("flowerformer", 5, hidden=8, heads=2)
    path = tmp_path / "flowerformer_seed0.pt"
    _save_pretrained(path, PretrainResult(old, MLPHead(8, 4, 2), None, [], None, None), meta)
    same = build_encoder("flowerformer", 5, hidden=8, heads=2)
    assert _load_pretrained(path, same, meta) is not None
    torch.testing.assert_close(same.state_dict(), old.state_dict())
    other = build_encoder("flowerformer", 5, hidden=8, heads=2, norm="batch")
    with pytest.raises(ValueError, match="norm differ"):
        _load_pretrained(path, other, meta)


# --------------------------------------------------------------------------------------------
# the protocol's configuration: explicit runs, surrogate parameters resolved once
# --------------------------------------------------------------------------------------------
def test_seed_runs_order_matches_the_protocol():
    """The runs of a seed are its pairs in the protocol's order: the 3 seeds' runs together are the
    protocol's 9, and one seed's runs start with its own permutation."""
    from fgp_ext.train import PROTOCOL_SEEDS, seed_runs

    assert seed_runs(PROTOCOL_SEEDS) == protocol_runs(9)
    assert seed_runs([21]) == [(21, 21), (21, 2021), (21, 202121)]
    assert seed_runs([2021]) == [(2021, 2021), (2021, 21), (2021, 202121)]
    assert seed_runs([7]) == [(7, 21), (7, 2021), (7, 202121)]
    for s in PROTOCOL_SEEDS:
        assert seed_runs([s]) == [p for p in protocol_runs(9) if p[0] == s]
    with pytest.raises(ValueError, match="twice"):
        seed_runs([21, 21])


def test_protocol_config_validates_runs():
    from fgp_ext.train import ProtocolConfig

    assert ProtocolConfig(runs=2).runs == protocol_runs(2)
    assert ProtocolConfig(runs=[(5, 21), [6, 2021]]).runs == [(5, 21), (6, 2021)]
    assert ProtocolConfig(runs=[(5, 21), (6, 21), (5, 2021)]).seeds == [5, 6]
    for bad, match in (([], "empty"), ([(1, 2), (1, 2)], "twice"), ("x", "pairs"), (10, "1..9")):
        with pytest.raises(ValueError, match=match):
            ProtocolConfig(runs=bad)


def test_resolve_surrogate_one_place():
    """The space's defaults, seed 0, then the overrides; one object that records itself as the dict
    summaries and cache keys hold; an unknown parameter is refused."""
    from fgp_ext.train import SurrogateParams, resolve_surrogate

    space = fgp_ext.load("nb201").space
    base = resolve_surrogate(space)
    assert base.as_dict() == {**space.surrogate_params, "seed": 0}
    assert resolve_surrogate(space, {"k": 4}, seed=3).as_dict() == {**space.surrogate_params, "k": 4, "seed": 3}
    assert resolve_surrogate(space, std=None, alpha=0.25).alpha == 0.25
    assert resolve_surrogate(None).as_dict() == {"k": 8, "std": 0.1, "alpha": 0.5, "seed": 0}
    given = SurrogateParams(k=3, std=0.2, alpha=0.1, seed=9)
    assert resolve_surrogate(space, given) is given
    with pytest.raises(ValueError, match="unknown surrogate parameter"):
        resolve_surrogate(space, {"kk": 4})


def test_run_protocol_config_equals_keyword_form_and_explicit_runs_reproduce_rows():
    """``run_protocol(dataset, ProtocolConfig)`` gives the numbers of the keyword form; a config
    with explicit runs (one pre-training seed's, as ``fgp run --seeds`` makes) reproduces those
    rows of the full protocol exactly, so seeds can run as separate processes."""
    from fgp_ext.train import ProtocolConfig, run_protocol, seed_runs

    labelled, acc = _small_labelled(90)
    quiet = dict(log=lambda *a: None)
    kw = dict(ratio=0.5, n_train=40, n_val=20, epochs_pretrain=2, epochs_finetune=2, hidden=8, progress=False,
              surrogate={"k": 4})
    old = run_protocol(labelled, "gin", "acc", runs=4, aux_target=acc, aux_name="acc", **kw, **quiet)
    config = ProtocolConfig(encoder="gin", target="acc", runs=4, aux_target="acc", **kw)
    new = run_protocol(labelled, config, **quiet)
    strip = lambda rows: [{k: {m: v for m, v in r[k].items() if not m.endswith("_s") and "s_per" not in m}
                           if isinstance(r[k], dict) else r[k] for k in r} for r in rows]
    assert strip(new["runs"]) == strip(old["runs"])
    assert new["aux_target"] == old["aux_target"] == "acc"
    assert new["surrogate"] == old["surrogate"] == {**labelled.space.surrogate_params, "k": 4, "seed": 0}
    one = run_protocol(labelled, config.replace(runs=seed_runs([2021])[:2]), **quiet)
    assert [(r["seed"], r["perm_seed"]) for r in one["runs"]] == [(2021, 2021), (2021, 21)]
    full = {(r["seed"], r["perm_seed"]): r for r in strip(old["runs"])}
    for row in strip(one["runs"]):
        assert {k: v for k, v in row.items() if k != "run"} == {k: v for k, v in full[row["seed"], row["perm_seed"]].items()
                                                                if k != "run"}
    with pytest.raises(TypeError, match="ProtocolConfig"):
        run_protocol(labelled, config, runs=2)


# --------------------------------------------------------------------------------------------
# partly labelled data: NaN targets are unlabelled
# --------------------------------------------------------------------------------------------
def _partly_labelled(n=120, every=3):
    """``_small_labelled`` with every ``every``-th target missing (NaN)."""
    labelled, acc = _small_labelled(n)
    y = acc.copy()
    y[::every] = np.nan
    return type(labelled)(labelled.graphs, labelled.space, {"acc": y}), y


def test_split_labelled_leaves_unlabelled_out():
    from fgp_ext.train import labelled_indices, split_labelled

    y = np.arange(100, dtype=float)
    for perm in (21, 2021):       # every architecture labelled: exactly the plain split
        split, n_train = split_labelled(y, None, 0.5, perm, 10)
        plain = split_indices(100, 50, 0.5, perm, 10)
        assert n_train == 50 and all(np.array_equal(split[k], plain[k]) for k in plain)
    y[[3, 50, 51, 99]] = np.nan
    lab = labelled_indices(y)
    assert lab.size == 96 and not np.isin([3, 50, 51, 99], lab).any()
    split, n_train = split_labelled(y, None, 0.5, 2021, 10)
    assert n_train == 48
    parts = [split["pool"], split["val"], split["test"]]
    together = np.concatenate(parts)
    assert np.array_equal(np.sort(together), lab)                     # a partition of the labelled
    assert np.isfinite(y[together]).all() and np.array_equal(split["train"], split["pool"][:24])
    with pytest.raises(ValueError, match="no labelled architectures for target 'acc'"):
        labelled_indices(np.full(5, np.nan), "acc")
    with pytest.raises(ValueError, match="infinite"):
        labelled_indices([1.0, np.inf])
    with pytest.raises(ValueError, match="10 of the 100 architectures are labelled"):
        split_labelled(np.r_[np.arange(10.0), np.full(90, np.nan)], 8, 0.5, 21, 5, target="acc")


def test_evaluate_leaves_unlabelled_out(nb201):
    ds, batch = nb201
    sub = batch.select(torch.arange(300))
    y = ds.targets("cifar10_test_200ep")[:300].copy()
    set_seed(0)
    model = Predictor(build_encoder("gin", ds.space.num_ops, hidden=8))
    y[::4] = np.nan
    known = np.flatnonzero(~np.isnan(y))
    m = evaluate(model, sub, y)
    assert m["n"] == known.size == 225 and math.isfinite(m["kendall_tau"])
    assert m == evaluate(model, sub, y, known)


def test_run_protocol_partly_labelled(monkeypatch):
    """A dataset with missing targets runs: pre-training sees every architecture, the splits and
    metrics only the labelled ones; without pre-training the numbers equal those of the labelled
    subset with the rest given as extra unlabelled architectures."""
    import fgp_ext.train.protocol as protocol
    from fgp_ext.train import ProtocolConfig, run_protocol

    ds, y = _partly_labelled()
    seen = []
    real = protocol.pretrain
    monkeypatch.setattr(protocol, "pretrain", lambda enc, data, *a, **k: seen.append(data.num_graphs) or
                        real(enc, data, *a, **k))
    config = ProtocolConfig(encoder="gin", target="acc", runs=2, ratio=0.5, n_val=10, epochs_pretrain=1,
                            epochs_finetune=2, hidden=8, progress=False, aux_target="acc")
    out = run_protocol(ds, config, log=lambda *a: None)
    assert seen == [120, 120]
    assert (out["num_archs"], out["num_labelled"], out["num_unlabelled"]) == (120, 80, 40)
    assert out["n_train"] == 40 and out["runs"][0]["n_test"] == 80 - 40 - 10
    assert all(math.isfinite(r[m]["kendall_tau"]) for r in out["runs"] for m in ("fgp", "supervised"))

    known = np.flatnonzero(~np.isnan(y))
    subset = type(ds)([ds.graphs[i] for i in known], ds.space, {"acc": y[known]})
    rest = [ds.graphs[i] for i in np.flatnonzero(np.isnan(y))]
    no_pre = config.replace(epochs_pretrain=0, aux_target=None)
    a = run_protocol(ds, no_pre, log=lambda *a: None)
    b = run_protocol(subset, no_pre, unlabelled=rest, log=lambda *a: None)
    for ra, rb in zip(a["runs"], b["runs"]):
        for m in ("fgp", "supervised"):
            assert ra[m]["kendall_tau"] == rb[m]["kendall_tau"] and ra[m]["p@10%"] == rb[m]["p@10%"]
    none = type(ds)(ds.graphs, ds.space, {"acc": np.full(len(ds), np.nan)})
    with pytest.raises(ValueError, match="no labelled architectures for target 'acc'"):
        run_protocol(none, config, log=lambda *a: None)


def test_combine_scores_standardises_each_member():
    """The ensemble score is the mean of z-scores: a member's scale and offset do not matter, a
    constant member adds nothing, and two members' disagreement splits the difference."""
    from fgp_ext.train.protocol import combine_scores

    a = np.array([0.0, 1.0, 2.0, 3.0])
    b = np.array([3.0, 2.0, 1.0, 0.0])
    z = (a - a.mean()) / a.std()
    np.testing.assert_allclose(combine_scores([a]), z)
    np.testing.assert_allclose(combine_scores([a, 1000 * a - 7]), z)
    np.testing.assert_allclose(combine_scores([a, np.full(4, 5.0)]), z / 2)
    np.testing.assert_allclose(combine_scores([a, b]), 0.0, atol=1e-12)
    np.testing.assert_allclose(combine_scores([a, 2 * a, b]), z / 3)
    with pytest.raises(ValueError, match="finite"):
        combine_scores([a, np.array([0.0, np.nan, 1.0, 2.0])])
    with pytest.raises(ValueError, match="no member"):
        combine_scores([])
    with pytest.raises(ValueError, match=r"different numbers of architectures: \[3, 4\]"):
        combine_scores([a, a[:3]])
    from fgp_ext.train import combine_scores as exported
    assert exported is combine_scores


def test_ensemble_members_and_member_zero_is_the_plain_run():
    """``ensemble=3``: three members per method with pre-training seeds seed, seed+1, seed+2; member 0
    is bit for bit the run without an ensemble (its metrics are reported as ``single_*``); the
    members differ; the run's score is the combined members' score."""
    from fgp_ext.data.spaces import sample_nb101
    from fgp_ext.metrics import kendall_tau
    from fgp_ext.train import ProtocolConfig, run_protocol
    from fgp_ext.train.config import ensemble_seeds

    assert ensemble_seeds(21, 3) == [21, 22, 23] and ensemble_seeds(5, 1) == [5]
    with pytest.raises(ValueError, match="at least 1 member"):
        ProtocolConfig(ensemble=0)
    ds = sample_nb101(120, seed=3)
    acc = np.array([float((g.ops == 3).sum()) + 0.5 * g.num_nodes for g in ds.graphs])
    acc += np.random.RandomState(1).rand(len(acc)) * 0.5
    labelled = type(ds)(ds.graphs, ds.space, {"acc": acc})
    logs = []
    cfg = ProtocolConfig(encoder="gin", target="acc", runs=[(7, 7)], ratio=0.5, n_train=40, n_val=20,
                         epochs_pretrain=2, epochs_finetune=3, hidden=16, progress=False)
    plain = run_protocol(labelled, cfg, log=lambda *a: None)
    ens = run_protocol(labelled, cfg.replace(ensemble=3), log=logs.append)
    assert ens["ensemble"] == 3 and plain["ensemble"] == 1
    assert sum("pre-training gin (seed" in line for line in logs) == 3
    assert [f"seed {s}," in " ".join(logs) for s in (7, 8, 9)] == [True] * 3
    for method in ("fgp", "supervised"):
        run, base = ens["runs"][0][method], plain["runs"][0][method]
        assert run["single_kendall_tau"] == base["kendall_tau"] and run["member_taus"][0] == base["kendall_tau"]
        assert len(run["member_taus"]) == 3 and len(set(run["member_taus"])) == 3
        assert ens["mean"][method]["single_kendall_tau"] == plain["mean"][method]["kendall_tau"]
        assert "member_taus" not in base and "single_kendall_tau" not in plain["mean"][method]
    # the reported tau is the combined score's, which is none of the members'
    assert ens["runs"][0]["fgp"]["kendall_tau"] not in ens["runs"][0]["fgp"]["member_taus"]
    pred = ens["_artifacts"]["fgp"]["pred"]
    assert ens["runs"][0]["fgp"]["kendall_tau"] == pytest.approx(kendall_tau(pred, ens["_artifacts"]["fgp"]["true"]))


def test_cross_fit_folds_cover_every_label_and_keep_the_plain_split_first():
    """Fold 0 is the run's own (train, val); the other folds validate on disjoint parts of the
    training set that together make it up, and train on everything else labelled; no fold trains
    on what it validates on; too small a set is a clear error."""
    from fgp_ext.train import cross_fit_folds

    train, val = np.arange(10, 40), np.arange(100, 112)
    folds = cross_fit_folds(train, val, 4, perm_seed=5)
    assert len(folds) == 4
    assert np.array_equal(folds[0][0], train) and np.array_equal(folds[0][1], val)
    parts = [v for _, v in folds[1:]]
    assert sorted(p.size for p in parts) == [10, 10, 10]
    assert np.array_equal(np.sort(np.concatenate(parts)), train)
    labelled = np.union1d(train, val)
    for tr, va in folds:
        assert np.intersect1d(tr, va).size == 0
        assert np.array_equal(np.union1d(tr, va), labelled)
    # the parts are a shuffle, not consecutive blocks, and the shuffle follows perm_seed
    assert not all(np.array_equal(p, np.arange(p[0], p[0] + p.size)) for p in parts)
    again = cross_fit_folds(train, val, 4, perm_seed=5)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    other = cross_fit_folds(train, val, 4, perm_seed=6)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds[1:], other[1:]))
    assert len(cross_fit_folds(train, val, 1, perm_seed=5)) == 1
    with pytest.raises(ValueError, match="at least 6 training architectures"):
        cross_fit_folds(train[:5], val, 4, perm_seed=5)
    with pytest.raises(ValueError, match="validation set of at least 2"):
        cross_fit_folds(train, val[:1], 3, perm_seed=5)
    with pytest.raises(ValueError, match="overlap"):
        cross_fit_folds(train, np.array([10, 200]), 3, perm_seed=5)
    from fgp_ext.train import ProtocolConfig
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="folds must be an int >= 1"):
            ProtocolConfig(folds=bad)


def test_cross_fit_partitions_hold_out_other_cells_and_share_fold_zero():
    """Partition 0 is the default shuffle; partition p > 0 is another valid cross-fitting of the
    same labels (same fold 0, parts that again make up the training set) whose parts differ from
    partition 0's, reproducibly; a negative partition and reshuffle_folds without both folds and
    an ensemble are clear errors."""
    from fgp_ext.train import ProtocolConfig, cross_fit_folds

    train, val = np.arange(10, 50), np.arange(100, 112)
    base = cross_fit_folds(train, val, 5, perm_seed=5)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(base, cross_fit_folds(train, val, 5, 5, partition=0)))
    seen = [{tuple(v) for _, v in base[1:]}]
    for partition in (1, 2):
        folds = cross_fit_folds(train, val, 5, perm_seed=5, partition=partition)
        assert np.array_equal(folds[0][0], train) and np.array_equal(folds[0][1], val)
        parts = [v for _, v in folds[1:]]
        assert np.array_equal(np.sort(np.concatenate(parts)), train)
        for tr, va in folds:
            assert np.intersect1d(tr, va).size == 0 and np.array_equal(np.union1d(tr, va), np.union1d(train, val))
        again = cross_fit_folds(train, val, 5, perm_seed=5, partition=partition)
        assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
        # no held-out part repeats one of another partition
        assert not {tuple(p) for p in parts} & set().union(*seen)
        seen.append({tuple(p) for p in parts})
    with pytest.raises(ValueError, match="partition must be >= 0"):
        cross_fit_folds(train, val, 5, perm_seed=5, partition=-1)
    for folds, ensemble in ((1, 2), (5, 1)):
        with pytest.raises(ValueError, match="reshuffle_folds .* needs folds >= 2 and ensemble >= 2"):
            ProtocolConfig(folds=folds, ensemble=ensemble, reshuffle_folds=True)
    with pytest.raises(ValueError, match="reshuffle_folds must be a bool"):
        ProtocolConfig(folds=5, ensemble=2, reshuffle_folds="yes")


def test_folds_fine_tune_on_every_fold_and_member_zero_is_the_plain_run(monkeypatch):
    """``folds=3`` with ``ensemble=2``: 6 fine-tunings per method (2 pre-training seeds x 3 folds)
    from only 2 pre-trainings; each fine-tunes on its fold's split; member 0 is bit for bit the
    plain run; the run's score combines all six."""
    import fgp_ext.train.protocol as protocol
    from fgp_ext.data.spaces import sample_nb101
    from fgp_ext.train import ProtocolConfig, cross_fit_folds, run_protocol, split_labelled

    ds = sample_nb101(120, seed=3)
    acc = np.array([float((g.ops == 3).sum()) + 0.5 * g.num_nodes for g in ds.graphs])
    acc += np.random.RandomState(1).rand(len(acc)) * 0.5
    labelled = type(ds)(ds.graphs, ds.space, {"acc": acc})
    cfg = ProtocolConfig(encoder="gin", target="acc", runs=[(7, 7)], ratio=0.5, n_train=40, n_val=20,
                         epochs_pretrain=2, epochs_finetune=3, hidden=16, progress=False)
    plain = run_protocol(labelled, cfg, log=lambda *a: None)
    seen = []
    real = protocol.finetune

    def recording(enc, batch, y, train_idx, val_idx, **kw):
        seen.append((np.asarray(train_idx).copy(), np.asarray(val_idx).copy(), kw["seed"]))
        return real(enc, batch, y, train_idx, val_idx, **kw)

    monkeypatch.setattr(protocol, "finetune", recording)
    logs = []
    res = run_protocol(labelled, cfg.replace(ensemble=2, folds=3), log=logs.append)
    assert res["folds"] == 3 and plain["folds"] == 1
    assert sum("pre-training gin (seed" in line for line in logs) == 2
    assert any("(seed 8, fold 2)" in line for line in logs)
    split, _ = split_labelled(acc, 40, 0.5, 7, 20, target="acc")
    folds = cross_fit_folds(split["train"], split["val"], 3, 7)
    assert len(seen) == 12      # 2 methods x 2 seeds x 3 folds
    for i, (tr, va, seed) in enumerate(seen):
        want_tr, want_va = folds[i % 3]
        assert np.array_equal(tr, want_tr) and np.array_equal(va, want_va)
        assert seed == (7, 8)[(i // 3) % 2]
    for method in ("fgp", "supervised"):
        run, base = res["runs"][0][method], plain["runs"][0][method]
        assert len(run["member_taus"]) == 6 and len(set(run["member_taus"])) == 6
        assert run["single_kendall_tau"] == base["kendall_tau"] == run["member_taus"][0]
        assert run["kendall_tau"] not in run["member_taus"]
    # reshuffle_folds: member 1 fine-tunes on partition 1's folds, member 0 on the same as before
    seen.clear()
    shuffled = run_protocol(labelled, cfg.replace(ensemble=2, folds=3, reshuffle_folds=True), log=lambda *a: None)
    assert shuffled["reshuffle_folds"] is True and res["reshuffle_folds"] is False
    other = cross_fit_folds(split["train"], split["val"], 3, 7, partition=1)
    assert len(seen) == 12
    for i, (tr, va, seed) in enumerate(seen):
        want_tr, want_va = (folds if (i // 3) % 2 == 0 else other)[i % 3]
        assert np.array_equal(tr, want_tr) and np.array_equal(va, want_va)
    assert not np.array_equal(other[1][1], folds[1][1])
    for method in ("fgp", "supervised"):
        run, before = shuffled["runs"][0][method], res["runs"][0][method]
        assert run["member_taus"][:4] == before["member_taus"][:4]     # member 0, and member 1's fold 0
        assert run["member_taus"][4:] != before["member_taus"][4:]
    # a training set too small for the folds is refused before any pre-training
    logs.clear()
    with pytest.raises(ValueError, match="21 folds need at least 40 training architectures"):
        run_protocol(labelled, cfg.replace(folds=21), log=logs.append)
    assert not any("pre-training" in line for line in logs)


def test_ensemble_aux_targets_are_the_separate_jobs_models_together():
    """ensemble_aux_targets=["c2"] beside aux_target "c1": every member is pre-trained on both
    targets with its seed, and the FGP rows are those of a c1 job and a c2 job, interleaved member
    by member (seed 7: c1 folds, c2 folds; seed 8: c1 folds, c2 folds), bit for bit; the supervised
    baseline is the c1 job's; the score combines all rows; self-training trains one student per
    pre-training; repeated or unknown targets and multi-output targets with finetune_aux_head are
    clear errors before any training."""
    from fgp_ext.data.spaces import sample_nb101
    from fgp_ext.train import ProtocolConfig, combine_scores, run_protocol

    ds = sample_nb101(120, seed=3)
    rng = np.random.RandomState(1)
    acc = np.array([float((g.ops == 3).sum()) + 0.5 * g.num_nodes for g in ds.graphs]) + rng.rand(len(ds)) * 0.5
    cols = {"acc": acc, "c1": acc + rng.randn(len(ds)), "c2": np.array([float(g.num_nodes) for g in ds.graphs])
            + rng.rand(len(ds))}
    labelled = type(ds)(ds.graphs, ds.space, cols)
    cfg = ProtocolConfig(encoder="gin", target="acc", runs=[(7, 7)], ratio=0.5, n_train=40, n_val=20,
                         epochs_pretrain=2, epochs_finetune=3, hidden=16, progress=False, aux_target="c1",
                         ensemble=2, folds=2)
    quiet = lambda *a: None     # noqa: E731
    one, two = (run_protocol(labelled, cfg.replace(aux_target=t), log=quiet) for t in ("c1", "c2"))
    logs = []
    both = run_protocol(labelled, cfg.replace(ensemble_aux_targets=["c2"]), log=logs.append)
    assert both["ensemble_aux_targets"] == ["c2"] and one["ensemble_aux_targets"] == []
    assert sum("pre-training gin (seed" in line for line in logs) == 4
    assert sum("auxiliary target c2)" in line for line in logs) == 2
    rows = {name: job["_artifacts"]["model_scores"][0]["scores"] for name, job in
            (("one", one), ("two", two), ("both", both))}
    a, b = rows["one"]["fgp"], rows["two"]["fgp"]
    want = np.concatenate([a[0:2], b[0:2], a[2:4], b[2:4]])
    np.testing.assert_array_equal(rows["both"]["fgp"], want)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(rows["both"]["supervised"], rows["one"]["supervised"])
    run = both["runs"][0]["fgp"]
    assert len(run["member_taus"]) == 8 and run["single_kendall_tau"] == one["runs"][0]["fgp"]["single_kendall_tau"]
    y_test = both["_artifacts"]["model_scores"][0]["true"]
    from fgp_ext.metrics import kendall_tau
    assert run["kendall_tau"] == pytest.approx(kendall_tau(combine_scores(want), y_test))
    assert both["runs"][0]["supervised"]["kendall_tau"] == one["runs"][0]["supervised"]["kendall_tau"]
    # self-training: one student per pre-training (2 seeds x 2 targets)
    st = run_protocol(labelled, cfg.replace(ensemble_aux_targets=["c2"], self_train=10, baseline=False), log=quiet)
    assert st["_artifacts"]["model_scores"][0]["scores"]["fgp_self_train"].shape[0] == 4
    # errors
    with pytest.raises(ValueError, match="ensemble_aux_targets repeats 'c1'"):
        cfg.replace(ensemble_aux_targets=["c1"])
    with pytest.raises(ValueError, match="ensemble_aux_targets repeats 'c2'"):
        cfg.replace(ensemble_aux_targets=["c2", "c2"])
    with pytest.raises(ValueError, match="takes a list of target names"):
        cfg.replace(ensemble_aux_targets="c2")
    logs.clear()
    with pytest.raises(ValueError, match="nosuch"):
        run_protocol(labelled, cfg.replace(ensemble_aux_targets=["nosuch"]), log=logs.append)
    with pytest.raises(ValueError, match=r"one-column ensemble_aux_targets"):
        run_protocol(labelled, cfg.replace(ensemble_aux_targets=["c2,c1"], finetune_aux_head=True),
                     log=logs.append)
    assert not any("pre-training" in line for line in logs)


def test_merge_runs_script_joins_seed_processes(tmp_path, capsys):
    """scripts/merge_runs.py: the summaries of `fgp run --seeds` processes give the mean over all
    their runs and the ensemble's paired gain; other settings or a repeated run are refused."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "merge_runs", Path(__file__).resolve().parents[1] / "scripts" / "merge_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def summary(seed, taus, singles, epochs=5):
        runs = [{"run": i, "seed": seed, "perm_seed": p, "fgp": {"kendall_tau": t, "single_kendall_tau": s,
                                                                  "p@1%": 0.5, "member_taus": [s, 0.0]}}
                for i, (p, t, s) in enumerate(zip((21, 2021, 202121), taus, singles))]
        return {"encoder": "gin", "dataset": "nb201", "epochs_pretrain": epochs, "ensemble": 2, "runs": runs,
                "wall_s": 60.0}

    a, b = summary(21, [0.8, 0.9, 0.7], [0.8, 0.85, 0.72]), summary(2021, [0.6, 0.6, 0.6], [0.5, 0.5, 0.5])
    m = mod.merge([a, b])
    assert m["mean"]["fgp"]["kendall_tau"] == pytest.approx(np.mean([0.8, 0.9, 0.7, 0.6, 0.6, 0.6]))
    assert m["std"]["fgp"]["kendall_tau"] == pytest.approx(np.std([0.8, 0.9, 0.7, 0.6, 0.6, 0.6]))
    assert m["paired"]["fgp"] == {"mean_gain": pytest.approx(0.33 / 6), "better": 4, "runs": 6}
    assert m["wall_s"] == 120.0 and len(m["runs"]) == 6
    assert m["member_means"]["fgp"] == pytest.approx([np.mean([0.8, 0.85, 0.72, 0.5, 0.5, 0.5]), 0.0])
    with pytest.raises(ValueError, match="other settings.*epochs_pretrain"):
        mod.merge([a, summary(2021, [0.6] * 3, [0.5] * 3, epochs=20)])
    with pytest.raises(ValueError, match="appears twice"):
        mod.merge([a, a])
    paths = []
    for name, s in (("a", a), ("b", b)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(s))
    assert mod.main([*map(str, paths), "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "6 runs of gin" in out and "better in 4 of 6" in out
    assert "seed+0 fold 0 0.6450  seed+1 fold 0 0.0000" in out  # ensemble 2, folds 1
    assert json.loads((tmp_path / "m.json").read_text())["paired"]["fgp"]["better"] == 4
    assert mod.main([str(paths[0]), str(tmp_path / "missing.json")]) == 2
    assert "merge_runs: error" in capsys.readouterr().err
    # a test set under 100 architectures has no P@1% (null in the summary): said, not a crash
    for s in (a, b):
        for r in s["runs"]:
            r["fgp"]["p@1%"] = None
        (tmp_path / f"small_{s['runs'][0]['seed']}.json").write_text(json.dumps(s))
    assert mod.main([str(tmp_path / "small_21.json"), str(tmp_path / "small_2021.json")]) == 0
    assert "P@1% n/a (test set under 100)" in capsys.readouterr().out
    # --ensemble-aux-target: the second model of member 0 is the other target's, not seed+1's
    for s in (a, b):
        s.update(ensemble=1, aux_target="meco", ensemble_aux_targets=["meco,synflow"])
        (tmp_path / f"aux_{s['runs'][0]['seed']}.json").write_text(json.dumps(s))
    assert mod.main([str(tmp_path / "aux_21.json"), str(tmp_path / "aux_2021.json")]) == 0
    assert "seed+0 meco fold 0 0.6450  seed+0 meco,synflow fold 0 0.0000" in capsys.readouterr().out


def _predictions_runs(rng, methods=("fgp", "supervised"), models=(3, 1), n=40, seeds=((21, 21), (21, None))):
    true = rng.normal(size=n)
    return [{"seed": s, "perm_seed": p, "test_index": rng.permutation(100)[:n], "true": true,
             "train_index": np.arange(100, 110), "val_index": np.arange(110, 114),
             "scores": {m: true + rng.normal(scale=1.0, size=(k, n)) for m, k in zip(methods, models)}}
            for s, p in seeds]


def test_predictions_file_round_trip_and_damaged_files(tmp_path):
    """save_predictions / load_predictions: every array and seed comes back exactly (a missing
    permutation as None); a file that is truncated, of another format or version, incomplete,
    with score rows of the wrong length or non-finite scores is refused with a ValueError naming
    the file, and so are runs with different methods on saving."""
    from fgp_ext.train import load_predictions, save_predictions
    from fgp_ext.train.predictions import PREDICTIONS_VERSION

    runs = _predictions_runs(np.random.default_rng(0))
    path = save_predictions(tmp_path / "p.npz", runs)
    back = load_predictions(path)
    assert [(r["seed"], r["perm_seed"]) for r in back] == [(21, 21), (21, None)]
    for a, b in zip(runs, back):
        assert np.array_equal(a["test_index"], b["test_index"]) and np.array_equal(a["true"], b["true"])
        assert np.array_equal(a["train_index"], b["train_index"]) and np.array_equal(a["val_index"], b["val_index"])
        assert list(b["scores"]) == ["fgp", "supervised"]
        assert all(np.array_equal(a["scores"][m], b["scores"][m]) for m in a["scores"])
    assert back[0]["scores"]["supervised"].shape == (1, 40)

    def rewrite(name, **changes):
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        for k, v in changes.items():
            if v is None:
                del arrays[k]
            else:
                arrays[k] = v
        np.savez(tmp_path / name, **arrays)
        return tmp_path / name

    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.npz").write_text("not a zip")
    cases = {
        tmp_path / "cut.npz": "not a readable predictions file",
        tmp_path / "text.npz": "not a readable predictions file",
        rewrite("fmt.npz", format=np.array("fgp_ext.checkpoint")): "format 'fgp_ext.checkpoint'",
        rewrite("ver.npz", version=np.array(PREDICTIONS_VERSION + 1)): "layout version",
        rewrite("gone.npz", **{"run1.supervised": None}): "no 'run1.supervised' entry",
        rewrite("short.npz", **{"run0.fgp": np.zeros((3, 39))}): r"fgp scores have shape \[3, 39\]",
        rewrite("nan.npz", **{"run1.fgp": np.full((3, 40), np.nan)}): "not all finite",
        rewrite("dup.npz", **{"run0.test_index": np.zeros(40, dtype=np.int64)}): "repeated",
        rewrite("seeds.npz", perm_seeds=np.zeros(3, dtype=np.int64)): "one seed and permutation per run",
    }
    for bad, message in cases.items():
        with pytest.raises(ValueError, match=message) as err:
            load_predictions(bad)
        assert bad.name in str(err.value)
    np.save(tmp_path / "one.npy", np.zeros(3))
    more = {
        tmp_path / "one.npy": "one array, not an .npz archive",
        rewrite("ver2.npz", version=np.array("x")): "layout version 'x'",
        rewrite("fseeds.npz", seeds=np.array([21.0, 21.0])): "perm_seeds",
        rewrite("empty.npz", seeds=np.zeros(0, dtype=np.int64), perm_seeds=np.zeros(0, dtype=np.int64)): "no runs",
        rewrite("nantrue.npz", **{"run0.true": np.full(40, np.nan)}): "labels .true. are not all finite",
        rewrite("strtrue.npz", **{"run0.true": np.array(["a"] * 40)}): r"true \[40\] \(floats\)",
        rewrite("notrain.npz", **{"run1.train_index": None}): "no 'run1.train_index' entry",
        rewrite("negval.npz", **{"run0.val_index": -np.ones(4, dtype=np.int64)}): "val_index must be a vector",
    }
    for bad, message in more.items():
        with pytest.raises(ValueError, match=message):
            load_predictions(bad)
    # layout 1 (before the training and validation indices) still loads, without them
    old = load_predictions(rewrite("v1.npz", version=np.array(1), **{f"run{r}.{part}_index": None
                                                                     for r in (0, 1) for part in ("train", "val")}))
    assert old[0]["train_index"] is None and old[1]["val_index"] is None
    assert np.array_equal(old[1]["scores"]["fgp"], runs[1]["scores"]["fgp"])
    with pytest.raises(ValueError, match="perm_seed -3 is negative"):
        save_predictions(tmp_path / "neg.npz", [dict(runs[0], perm_seed=-3)])
    other = _predictions_runs(np.random.default_rng(1), methods=("fgp",), models=(2,))
    with pytest.raises(ValueError, match="run 1 has methods"):
        save_predictions(tmp_path / "mixed.npz", [runs[0], other[1]])
    with pytest.raises(FileNotFoundError):
        load_predictions(tmp_path / "missing.npz")


def test_combine_predictions_script_combines_recorded_models_run_by_run(tmp_path, capsys):
    """scripts/combine_predictions.py: a source's rows (methods, then a slice) are combined per run
    with combine_scores, across files; --against pairs two combinations by run; runs missing from
    a file are left out; another test set, an unknown method or an empty slice is an error."""
    import importlib.util
    from pathlib import Path

    from fgp_ext.metrics import kendall_tau
    from fgp_ext.train import combine_scores, save_predictions

    spec = importlib.util.spec_from_file_location(
        "combine_predictions", Path(__file__).resolve().parents[1] / "scripts" / "combine_predictions.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from fgp_ext.train.predictions import parse_models_spec
    assert parse_models_spec("a/p.npz:fgp,supervised[1:3]") == ("a/p.npz", ["fgp", "supervised"], slice(1, 3))
    assert parse_models_spec("p.npz") == ("p.npz", None, slice(None))
    assert parse_models_spec("p.npz:[2:]") == ("p.npz", None, slice(2, None))
    assert parse_models_spec("x.npz/p*.npz:fgp[-5:]") == ("x.npz/p*.npz", ["fgp"], slice(-5, None))
    for bad in ("p.npz:", "p.npz:fgp[1]", "p.npz:fgp_aux-head", "p.npz:fgp[-:]", "p.npy:fgp"):
        with pytest.raises(ValueError, match="cannot read"):
            parse_models_spec(bad)

    rng = np.random.default_rng(3)
    a = _predictions_runs(rng, seeds=((21, 21), (21, 2021), (2021, 21)))
    b = [dict(r, scores={"fgp": r["true"] + rng.normal(scale=0.5, size=(2, 40))}) for r in a[:2]]
    pa, pb = save_predictions(tmp_path / "a.npz", a), save_predictions(tmp_path / "b.npz", b)
    notes = []
    got = mod.combined_runs([f"{pa}:fgp[0:2]", f"{pb}:fgp"], log=notes.append)
    assert list(got) == [(21, 21), (21, 2021)]          # run (2021, 21) is not in b
    assert len(notes) == 1 and "1 run(s) are not in every source" in notes[0]
    for run_a, run_b, key in zip(a, b, got):
        score = combine_scores([*run_a["scores"]["fgp"][:2], *run_b["scores"]["fgp"]])
        assert got[key]["tau"] == pytest.approx(kendall_tau(score, run_a["true"])) and got[key]["models"] == 4
    everything = mod.combined_runs([str(pa)])
    assert all(r["models"] == 4 for r in everything.values()) and len(everything) == 3
    across = mod.combined_runs([f"{pa}:fgp,supervised[2:4]"])    # the slice runs over both methods' rows
    for run, key in zip(a, across):
        score = combine_scores([run["scores"]["fgp"][2], run["scores"]["supervised"][0]])
        assert across[key]["tau"] == pytest.approx(kendall_tau(score, run["true"])) and across[key]["models"] == 2
    assert mod.main([f"{pa}:fgp", f"{pb}:fgp", "--against", f"{pa}:fgp[0:1]"]) == 0
    out = capsys.readouterr().out
    first = mod.combined_runs([f"{pa}:fgp", f"{pb}:fgp"])
    alone = mod.combined_runs([f"{pa}:fgp[0:1]"])
    diff = [first[k]["tau"] - alone[k]["tau"] for k in first]
    better = sum(d > 0 for d in diff)
    assert f"paired over 2 runs (1 unpaired left out): {np.mean(diff):+.4f} tau, better in {better} of 2" in out
    assert "2 runs, 5 models per run" in out and "3 runs, 1 models per run" in out

    # a glob pattern takes the files of one job's seed processes together; a run twice is refused
    (tmp_path / "job").mkdir()
    save_predictions(tmp_path / "job" / "s21.npz", a[:2])
    save_predictions(tmp_path / "job" / "s2021.npz", a[2:])
    joined = mod.combined_runs([f"{tmp_path}/job/s*.npz:fgp"])
    assert joined == mod.combined_runs([f"{pa}:fgp"])
    save_predictions(tmp_path / "job" / "s9.npz", a[2:])
    with pytest.raises(ValueError, match="appears twice"):
        mod.combined_runs([f"{tmp_path}/job/s*.npz"])
    save_predictions(tmp_path / "job" / "s9.npz", _predictions_runs(rng, ("fgp",), (1,), seeds=((9, 9),)))
    with pytest.raises(ValueError, match=r"s9.npz has methods \['fgp'\]"):
        mod.combined_runs([f"{tmp_path}/job/s*.npz"])
    with pytest.raises(ValueError, match="no file matches"):
        mod.combined_runs([f"{tmp_path}/nothing*.npz"])
    shifted = [dict(r, test_index=np.roll(r["test_index"], 1)) for r in b]
    ps = save_predictions(tmp_path / "s.npz", shifted)
    relabelled = save_predictions(tmp_path / "r.npz", [dict(r, true=-r["true"]) for r in b])
    for sources, message in (([str(pa), str(ps)], "another test set"), ([str(pa), str(relabelled)], "other labels"),
                             ([f"{pa}:gin"], "no method"), ([f"{pa}:fgp[5:]"], "keeps no model")):
        with pytest.raises(ValueError, match=message):
            mod.combined_runs(sources)
    assert mod.main([f"{pa}:gin"]) == 2
    assert "combine_predictions: error" in capsys.readouterr().err


def test_finetune_learns_the_pseudo_ranking(nb201):
    """With 6 labels, pseudo-targets on 200 other cells decide what the model learns: the true
    accuracies as pseudo-targets lift the test tau far above the 6 labels alone, the reversed
    accuracies push it below zero (so the pseudo term is really trained on, and it outweighs the
    labels at weight 1). Same call, same numbers. Bad pseudo inputs are refused."""
    from fgp_ext.metrics import kendall_tau

    ds, batch = nb201
    y = ds.targets("cifar10_test_200ep")
    idx = np.random.default_rng(0).permutation(len(y))[:500]
    lab, pool, test = idx[:6], idx[6:206], idx[206:]

    def run(**kw):
        set_seed(3)
        ft = finetune(build_encoder("gin", 7, hidden=16), batch, y, lab, None, epochs=15, lr=1e-2, seed=3,
                      progress=False, **kw)
        return kendall_tau(predict(ft.model, batch, test), y[test])

    alone = run()
    oracle = run(pseudo_targets=y, pseudo_idx=pool)
    reversed_ = run(pseudo_targets=-y, pseudo_idx=pool)
    assert oracle > alone + 0.15 and oracle > 0.45
    assert reversed_ < -0.1 < alone
    assert run(pseudo_targets=y, pseudo_idx=pool) == oracle
    partial = np.full(len(y), np.nan)
    partial[pool] = y[pool]
    assert run(pseudo_targets=partial, pseudo_idx=pool) == oracle      # only the pool's values are read
    for kw, msg in [(dict(pseudo_targets=y), "both"), (dict(pseudo_idx=pool), "both"),
                    (dict(pseudo_targets=y, pseudo_idx=pool, pseudo_weight=0), "pseudo_weight"),
                    (dict(pseudo_targets=y, pseudo_idx=pool, pseudo_weight=float("nan")), "pseudo_weight"),
                    (dict(pseudo_targets=y[:10], pseudo_idx=pool), "values for"),
                    (dict(pseudo_targets=y, pseudo_idx=pool[:1]), "at least 2"),
                    (dict(pseudo_targets=y, pseudo_idx=[0, len(y)]), "outside"),
                    (dict(pseudo_targets=np.where(np.arange(len(y)) == pool[3], np.nan, y), pseudo_idx=pool),
                     "not all finite")]:
        with pytest.raises(ValueError, match=msg):
            finetune(build_encoder("gin", 7, hidden=16), batch, y, lab, None, epochs=1, progress=False, **kw)


def test_self_training_students_learn_the_teachers_ranking_of_the_pool(monkeypatch):
    """``self_train=N``: the teacher's rows are those of the run without it; then one student per
    member and FGP head fine-tunes on every label of the run (training + validation, no validation
    set) with pseudo-targets on exactly the run's pool, N cells outside the labelled split, whose
    values are the combined score of all the teacher's models; the new methods are reported, and
    a pool larger than the unlabelled cells or a bad setting is refused before pre-training."""
    import fgp_ext.train.protocol as protocol
    from fgp_ext.metrics import kendall_tau
    from fgp_ext.train import ProtocolConfig, run_protocol, split_labelled

    labelled, acc = _small_labelled()
    cfg = ProtocolConfig(encoder="gin", target="acc", runs=[(7, 7)], ratio=0.5, n_train=40, n_val=20,
                         epochs_pretrain=2, epochs_finetune=3, hidden=16, progress=False, baseline=False,
                         aux_target="acc", finetune_aux_head=True, ensemble=2)
    teacher_only = run_protocol(labelled, cfg, log=lambda *a: None)
    calls = []
    real = protocol.finetune

    def recording(enc, batch, y, train_idx, val_idx, **kw):
        ft = real(enc, batch, y, train_idx, val_idx, **kw)
        calls.append((np.asarray(train_idx).copy(), val_idx, kw.get("pseudo_targets"), kw.get("pseudo_idx"),
                      kw.get("pseudo_weight"), ft.model))
        return ft

    monkeypatch.setattr(protocol, "finetune", recording)
    res = run_protocol(labelled, cfg.replace(self_train=30, self_train_weight=0.5), log=lambda *a: None)
    row, base = res["runs"][0], teacher_only["runs"][0]
    for method in ("fgp", "fgp_aux_head", "fgp_both_heads"):
        assert row[method]["kendall_tau"] == base[method]["kendall_tau"]
    assert res["self_train"] == 30 and res["self_train_weight"] == 0.5
    assert set(protocol.SELF_TRAIN_METHODS) <= set(res["mean"])
    teachers, students = calls[:4], calls[4:]
    assert all(c[2] is None for c in teachers) and len(students) == 4     # 2 heads x 2 members
    split, _ = split_labelled(acc, 40, 0.5, 7, 20, target="acc")
    pool = protocol.self_train_pool(len(acc), split, 30, 7)
    assert pool.size == 30 and not np.isin(pool, np.concatenate([split["train"], split["val"]])).any()
    assert np.array_equal(pool, protocol.self_train_pool(len(acc), split, 30, 7))
    batch = fgp_ext.collate(labelled.graphs)
    teacher_score = protocol.combine_scores([predict(c[5], batch, pool) for c in teachers])
    for tr, va, pseudo, p_idx, w, _ in students:
        assert va is None and w == 0.5 and np.array_equal(p_idx, pool)
        assert np.array_equal(np.sort(tr), np.sort(np.concatenate([split["train"], split["val"]])))
        assert np.allclose(pseudo[pool], teacher_score) and np.isnan(np.delete(pseudo, pool)).all()
    assert len(row["fgp_self_train"]["member_taus"]) == 4
    assert row["fgp_self_train"]["single_kendall_tau"] == row["fgp_self_train"]["member_taus"][0]
    # the predictions record: every model's test scores, from which each reported tau follows
    (rec,) = res["_artifacts"]["model_scores"]
    assert np.array_equal(rec["test_index"], split["test"]) and np.array_equal(rec["true"], acc[split["test"]])
    assert {m: s.shape[0] for m, s in rec["scores"].items()} == {"fgp": 2, "fgp_aux_head": 2, "fgp_self_train": 4}
    scores = rec["scores"]
    for method, rows in (("fgp", scores["fgp"]), ("fgp_self_train", scores["fgp_self_train"]),
                         ("fgp_both_heads", [*scores["fgp"], *scores["fgp_aux_head"]]),
                         ("fgp_teacher_students", [*scores["fgp"], *scores["fgp_aux_head"], *scores["fgp_self_train"]])):
        assert kendall_tau(protocol.combine_scores(rows), rec["true"]) == pytest.approx(row[method]["kendall_tau"])
    assert [kendall_tau(s, rec["true"]) for s in scores["fgp_self_train"]] == pytest.approx(
        row["fgp_self_train"]["member_taus"])
    logs = []
    outside = len(acc) - split["train"].size - split["val"].size
    with pytest.raises(ValueError, match=f"only {outside} exist"):
        run_protocol(labelled, cfg.replace(self_train=outside + 1), log=logs.append)
    assert not any("pre-training" in line for line in logs)
    for bad in (1, -2, True, 2.5):
        with pytest.raises(ValueError, match="self_train must be"):
            cfg.replace(self_train=bad)
    for bad in (0, -1, float("inf")):
        with pytest.raises(ValueError, match="self_train_weight"):
            cfg.replace(self_train_weight=bad)
    for bad in (-0.5, 1, float("nan")):
        with pytest.raises(ValueError, match="finetune_ema"):
            cfg.replace(finetune_ema=bad)


def test_proxy_input_ablation_script_feeds_the_proxies_to_the_head(nb201):
    """scripts/ablation_proxy_input.py (results/ensemble.md): features are the normal scores of the
    proxies' ranks; the fresh head reads them for the graphs of each sub-batch (by dataset index),
    the proxy-head variant starts as the plain proxy head, and the protocol's finetune gets them."""
    import importlib.util
    from pathlib import Path

    from fgp_ext import proxies
    from fgp_ext.metrics import kendall_tau as tau
    from fgp_ext.train import protocol

    spec = importlib.util.spec_from_file_location(
        "ablation_proxy_input", Path(__file__).resolve().parents[1] / "scripts" / "ablation_proxy_input.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ds, batch = nb201
    feats = mod.proxy_features(["meco", "params"])
    assert feats.shape == (len(ds), 2) and torch.isfinite(feats).all()
    assert abs(float(feats[:, 0].mean())) < 1e-3 and abs(float(feats[:, 0].std()) - 1) < 0.01
    sub = np.arange(0, len(ds), 97)
    assert tau(feats[sub, 0].numpy(), proxies.nb201_proxy("meco")[sub]) > 0.999

    ids = torch.tensor([5, 0, 77, 3000])
    undo = mod.install(feats)
    try:
        assert protocol.finetune is not finetune
        sel = batch.select(ids)
        assert torch.equal(sel.dataset_ids, ids)
        torch.manual_seed(0)
        model = mod.ConcatHeadPredictor(build_encoder("gin", ds.space.num_ops, hidden=16), feats).eval()
        out = model(sel)
        swapped = mod.ConcatHeadPredictor(model.encoder, feats.flip(0))
        swapped.head.load_state_dict(model.head.state_dict())
        assert out.shape == (4,) and not torch.allclose(out, swapped.eval()(sel))   # the features are read
        plain = Predictor(model.encoder, MLPHead(model.encoder.out_dim, 8, 1)).eval()
        lin = mod.LinearTermPredictor(plain, feats).eval()
        assert torch.equal(lin(sel), plain(sel)) and float(lin.w.detach().abs().sum()) == 0   # starts as the plain head
        with pytest.raises(RuntimeError, match="without dataset indices"):
            model(fgp_ext.collate(ds.graphs[:2]))
        ft = protocol.finetune(build_encoder("gin", ds.space.num_ops, hidden=16), batch, ds.targets(ds.target_names[0]),
                               np.arange(8), epochs=1, batch_size=8)
        assert isinstance(ft.model, mod.ConcatHeadPredictor)
    finally:
        undo()
    assert protocol.finetune is finetune and not hasattr(batch.select(ids), "dataset_ids")


def test_proxy_anchor_ablation_script_ranks_the_unlabelled_cells_by_the_proxy(nb201, monkeypatch):
    """scripts/ablation_proxy_anchor.py (results/ensemble.md): the protocol's finetune gets the proxy
    as pseudo targets on every cell outside the labelled and validation sets, with the weight given;
    a real fine-tuning then trains on both; self-training on top is refused; undo restores."""
    import importlib.util
    from pathlib import Path

    from fgp_ext.train import protocol

    spec = importlib.util.spec_from_file_location(
        "ablation_proxy_anchor", Path(__file__).resolve().parents[1] / "scripts" / "ablation_proxy_anchor.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ds, batch = nb201
    y = ds.targets(ds.target_names[0])
    proxy = np.arange(len(ds), dtype=np.float64)[::-1].copy()
    seen = []
    monkeypatch.setattr(protocol, "finetune", lambda *a, **k: seen.append((a, k)) or finetune(*a, **k))
    before = protocol.finetune
    undo = mod.install(proxy, 0.25)
    try:
        assert protocol.finetune is not before
        train, val = np.arange(0, 16), np.arange(100, 110)
        set_seed(0)
        ft = protocol.finetune(build_encoder("gin", ds.space.num_ops, hidden=16), batch, y, train, val, epochs=2,
                               batch_size=8, seed=3, progress=False)
        (args, kw), = seen
        assert kw["pseudo_targets"] is not None and np.array_equal(kw["pseudo_targets"], proxy)
        assert kw["pseudo_weight"] == 0.25
        pool = kw["pseudo_idx"]
        assert pool.size == len(ds) - 26 and not np.isin(pool, np.r_[train, val]).any()
        set_seed(0)
        plain = finetune(build_encoder("gin", ds.space.num_ops, hidden=16), batch, y, train, val, epochs=2,
                         batch_size=8, seed=3, progress=False)
        assert [h["loss"] for h in ft.history] != [h["loss"] for h in plain.history]   # the proxy term is trained
        with pytest.raises(RuntimeError, match="self-training"):
            protocol.finetune(None, batch, y, train, val, pseudo_targets=y, pseudo_idx=np.arange(5))
    finally:
        undo()
    assert protocol.finetune is before and len(seen) == 1


def test_finetune_loss_option_trains_with_the_named_loss(nb201, monkeypatch):
    """``finetune(loss=...)``: the named loss is the one trained on (each loss a different model,
    the default exactly ``"hinge"``); the pseudo-labelled batch uses it too; an unknown name is
    refused before any training, by ``finetune`` and by ``ProtocolConfig``."""
    from fgp_ext.train import ProtocolConfig, finetuning

    ds, batch = nb201
    y = ds.targets("cifar10_test_200ep")
    lab, val = np.arange(16), np.arange(16, 40)

    def run(**kw):
        set_seed(5)
        return finetune(build_encoder("gin", 7, hidden=16), batch, y, lab, val, epochs=3, batch_size=8,
                        lr=1e-2, seed=5, progress=False, **kw)

    plain = run()
    assert [h["loss"] for h in run(loss="hinge").history] == [h["loss"] for h in plain.history]
    losses = {name: [h["loss"] for h in run(loss=name).history] for name in ("logistic", "listmle", "hinge+mse")}
    assert len({tuple(v) for v in losses.values()} | {tuple(h["loss"] for h in plain.history)}) == 4
    calls = []
    real = finetuning.finetune_loss
    monkeypatch.setattr(finetuning, "finetune_loss", lambda name, *a, **k: calls.append(name) or real(name, *a, **k))
    run(loss="listmle", pseudo_targets=y, pseudo_idx=np.arange(100, 140))
    assert calls and set(calls) == {"listmle"} and len(calls) == 2 * 3 * 2   # 2 batches x 3 epochs, labels + pseudo
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"loss must be one of \['hinge', 'logistic', 'listmle', 'hinge\+mse'\]"):
        run(loss="mse")
    with pytest.raises(ValueError, match="finetune_loss must be one of"):
        ProtocolConfig(finetune_loss="ranknet")


def test_finetune_ema_keeps_the_moving_average_of_the_weights(nb201):
    """``ema_decay``: training is unchanged and the returned weights are the moving average of the
    weights after every step (recomputed here from runs of 0..4 epochs with one step each), with
    the ramp ``min(decay, (1 + t) / (10 + t))``; buffers are the last step's. With a validation set
    the kept model is the averaged one that was validated. 0 is the plain run; bad decays are refused."""
    from fgp_ext.metrics import kendall_tau

    ds, batch = nb201
    y = ds.targets("cifar10_test_200ep")
    lab, val = np.arange(12), np.arange(12, 40)

    def run(epochs, val_idx=None, **kw):
        set_seed(4)
        return finetune(build_encoder("gin", 7, hidden=16), batch, y, lab, val_idx, epochs=epochs, batch_size=16,
                        lr=5e-2, seed=4, progress=False, **kw)

    states = [run(e).model.state_dict() for e in range(5)]   # one step per epoch: weights after step e
    decay = 0.5
    avg = {k: v.clone() for k, v in states[0].items()}
    for t, state in enumerate(states[1:]):
        d = min(decay, (1 + t) / (10 + t))
        for k, v in state.items():
            avg[k] = avg[k] + (1 - d) * (v - avg[k]) if v.is_floating_point() and "running" not in k else v
    got = run(4, ema_decay=decay)
    assert got.best_epoch == 4 and math.isnan(got.best_val_tau)
    params = dict(got.model.named_parameters())
    for k, v in got.model.state_dict().items():
        torch.testing.assert_close(v, avg[k], rtol=1e-5, atol=1e-6)
        if k in params:       # a real average, not the last weights
            assert not torch.allclose(v, states[4][k])
    assert [h["loss"] for h in got.history] == [h["loss"] for h in run(4).history]   # training unchanged

    kept = run(6, val, ema_decay=0.8)
    assert kendall_tau(predict(kept.model, batch, val), y[val]) == pytest.approx(kept.best_val_tau)
    assert [h["val_tau"] for h in kept.history] != [h["val_tau"] for h in run(6, val).history]
    np.testing.assert_array_equal(predict(run(3, val, ema_decay=0.0).model, batch, val),
                                  predict(run(3, val).model, batch, val))
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="ema_decay"):
            run(1, ema_decay=bad)
