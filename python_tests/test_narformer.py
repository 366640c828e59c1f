"""NAR-Former: the tokenizer on hand-worked cells, the information-flow-consistency augmentation,
the shared encoder interface (pre-training, fine-tuning, checkpoints, the CLI) and a short run."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from fgp_ext import collate
from fgp_ext.cli import main
from fgp_ext.data import formats, spaces
from fgp_ext.encoders import ENCODERS, NARFormer, build_encoder
from fgp_ext.encoders.narformer_tokens import random_topological_rank, sinusoidal, tokenize, topological_rank
from fgp_ext.metrics import kendall_tau
from fgp_ext.train import finetune, load_checkpoint, predict, pretrain, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

S = sinusoidal          # the code of a number, as the tokenizer uses it
D = 8                   # code widths of the hand-worked tokens


def _t(x) -> torch.Tensor:
    return torch.tensor(float(x))


def expected_tokens(ops, positions, preds) -> torch.Tensor:
    """Tokens written out from the definition: op code, own position code, sum of the predecessors'
    position codes (code of -1 for a node without predecessors)."""
    rows = []
    for v, op in enumerate(ops):
        src = sum((S(_t(positions[u]), D) for u in preds[v]), torch.zeros(D)) if preds[v] else S(_t(-1), D)
        rows.append(torch.cat([S(_t(op), D), S(_t(positions[v]), D), src]))
    return torch.stack(rows)


@pytest.fixture(scope="module")
def nb201():
    return formats.load("nb201")


# ---------------------------------------------------------------------------------------------
# the tokenizer
# ---------------------------------------------------------------------------------------------
def test_sinusoidal_code_by_hand():
    # dim 4: frequencies 1 and 10000 ** (-1/2) = 0.01
    torch.testing.assert_close(S(_t(1), 4), torch.tensor([np.sin(1.0), np.sin(0.01), np.cos(1.0), np.cos(0.01)],
                                                         dtype=torch.float32))
    torch.testing.assert_close(S(_t(0), 6), torch.tensor([0.0, 0, 0, 1, 1, 1]))
    # integer positions get distinct codes (sin(pi 2^k x), say, would be constant on them)
    codes = S(torch.arange(32.0), 32)
    assert torch.cdist(codes, codes).add(torch.eye(32) * 10).min() > 0.1
    with pytest.raises(ValueError, match="even"):
        S(_t(1), 5)


def test_tokens_of_an_nb201_string():
    arch = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
    g = spaces.nb201_from_string(arch)
    # vocabulary: input 0, output 1, none 2, skip 3, conv1x1 4, conv3x3 5, avg_pool 6; nodes: input,
    # the six edge-ops in string order (1<-0 | 2<-0 2<-1 | 3<-0 3<-1 3<-2), output
    ops = [0, 5, 4, 3, 6, 2, 5, 1]
    assert g.ops.tolist() == ops
    # edge-op (a->b) feeds every edge-op (b->c): 1<-0 feeds 2<-1 and 3<-1; 2<-0 and 2<-1 feed 3<-2
    preds = {0: [], 1: [0], 2: [0], 3: [1], 4: [0], 5: [1], 6: [2, 3], 7: [4, 5, 6]}
    batch = collate([g])
    rank = topological_rank(batch)
    assert rank.tolist() == list(range(8))          # the string order is already topological
    got = tokenize(batch, op_dim=D, pos_dim=D, src_dim=D)
    torch.testing.assert_close(got, expected_tokens(ops, list(range(8)), preds))


def test_tokens_of_an_nb101_matrix():
    matrix = [[0, 1, 1, 0, 1],
              [0, 0, 0, 1, 0],
              [0, 0, 0, 1, 0],
              [0, 0, 0, 0, 1],
              [0, 0, 0, 0, 0]]
    g = spaces.nb101_from_matrix(matrix, ["input", "conv3x3-bn-relu", "maxpool3x3", "conv1x1-bn-relu", "output"])
    ops = [0, 3, 4, 2, 1]      # input, conv3x3, maxpool, conv1x1, output in the NB101 vocabulary
    assert g.ops.tolist() == ops
    preds = {0: [], 1: [0], 2: [0], 3: [1, 2], 4: [0, 3]}
    batch = collate([g])
    assert topological_rank(batch).tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(tokenize(batch, op_dim=D, pos_dim=D, src_dim=D),
                               expected_tokens(ops, [0, 1, 2, 3, 4], preds))


def test_tokens_of_a_darts_genotype():
    """Our DARTS layout numbers the intermediate sums (10-13) after the edge-ops (2-9) that may read
    them, so the node order is not topological and the canonical sequence differs from it."""
    cell = [["sep_conv_3x3", 0], ["sep_conv_3x3", 1],      # node 2 <- input 0, node 3 <- input 1
            ["skip_connect", 2], ["max_pool_3x3", 0],      # node 4 <- sum 10, node 5 <- input 0
            ["dil_conv_3x3", 1], ["sep_conv_5x5", 0],      # node 6 <- input 1, node 7 <- input 0
            ["avg_pool_3x3", 4], ["dil_conv_5x5", 1]]      # node 8 <- sum 12, node 9 <- input 1
    g = spaces.darts_from_genotype({"normal": cell, "reduce": cell})
    batch = collate([g])
    # Kahn's algorithm, lowest-numbered ready node first, worked by hand: 0 1 2 3, then 5 6 7 9
    # (4 waits for sum 10 = 2 + 3), 10, 4, 11 (= 4 + 5), 12 (= 6 + 7), 8 (reads 12), 13, output 14;
    # the reduce cell (nodes 15-29) follows with the same pattern
    normal = [0, 1, 2, 3, 5, 6, 7, 9, 10, 4, 11, 12, 8, 13, 14]
    order = normal + [15 + v for v in normal]
    pos = [0] * 30
    for p, v in enumerate(order):
        pos[v] = p
    assert topological_rank(batch).tolist() == pos
    tok = tokenize(batch, op_dim=D, pos_dim=D, src_dim=D)
    src = slice(2 * D, 3 * D)
    torch.testing.assert_close(tok[4, src], S(_t(8), D))                     # node 4 reads sum 10 (position 8)
    torch.testing.assert_close(tok[8, src], S(_t(11), D))                    # node 8 reads sum 12 (position 11)
    torch.testing.assert_close(tok[14, src], S(_t(8), D) + S(_t(10), D) + S(_t(11), D) + S(_t(13), D))
    for v in (0, 1, 15, 16):                                                 # the cell inputs
        torch.testing.assert_close(tok[v, src], S(_t(-1), D))
    torch.testing.assert_close(tok[29, D:2 * D], S(_t(29), D))
    torch.testing.assert_close(tok[19, :D], S(_t(spaces.DARTS_VOCAB.index("skip_connect")), D))


def test_bad_keys_are_refused(nb201):
    with pytest.raises(ValueError, match="one value per node"):
        topological_rank(collate(nb201.graphs[:2]), torch.zeros(3))


# ---------------------------------------------------------------------------------------------
# the information-flow-consistency augmentation
# ---------------------------------------------------------------------------------------------
def _decode(tokens: torch.Tensor, n: int) -> np.ndarray:
    """The DAG a graph's tokens describe, read back from the tokens alone: each token's position from
    its position code, its inputs as the one set of positions whose codes sum to its source code.
    Returns the adjacency by sequence position."""
    pos_code, src_code = tokens[:, D:2 * D].double(), tokens[:, 2 * D:].double()
    table = S(torch.arange(n, dtype=torch.float64), D).double()                # [n, D]
    own = torch.cdist(pos_code, table).argmin(1)
    assert sorted(own.tolist()) == list(range(n))
    subsets = torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)   # [2^n, n]
    sums = subsets @ table
    sums[0] = S(_t(-1), D).double()                                             # no inputs: the code of -1
    dist = torch.cdist(src_code, sums)                                          # [n, 2^n]
    best = dist.topk(2, largest=False)
    assert (best.values[:, 0] < 1e-4).all() and (best.values[:, 1] > 1e-2).all()   # exact and unambiguous
    adj = np.zeros((n, n), dtype=bool)
    for t in range(n):
        adj[subsets[best.indices[t, 0]].numpy() > 0.5, int(own[t])] = True
    return adj


def _reach(adj: np.ndarray) -> np.ndarray:
    r = adj.copy()
    for k in range(len(r)):
        r |= r[:, [k]] & r[[k], :]
    return r


def test_augmentation_keeps_the_information_flow(nb201):
    graphs = [nb201.graphs[i] for i in (0, 1, 77, 1234, 9999)]
    batch = collate(graphs)
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        rank = random_topological_rank(batch, gen)
        tok = tokenize(batch, rank, op_dim=D, pos_dim=D, src_dim=D)
        for gi, g in enumerate(graphs):
            a, b = int(batch.node_ptr[gi]), int(batch.node_ptr[gi + 1])
            r = rank[a:b].numpy()
            assert sorted(r.tolist()) == list(range(g.num_nodes))           # a permutation of the positions
            assert (r[g.edges[0]] < r[g.edges[1]]).all()                      # a valid topological order
            adj = _decode(tok[a:b], g.num_nodes)                              # the DAG the tokens describe ...
            true = np.zeros((g.num_nodes, g.num_nodes), dtype=bool)
            true[r[g.edges[0]], r[g.edges[1]]] = True
            assert (adj == true).all()                                        # ... is the cell, relabelled
            reach = np.zeros_like(true)
            reach[np.ix_(r, r)] = _reach(_orig_adj(g))                   # the cell's, by position
            assert (_reach(adj) == reach).all()                               # same reachability
            ops_by_pos = np.empty(g.num_nodes, dtype=np.int64)
            ops_by_pos[r] = g.ops
            torch.testing.assert_close(tok[a:b, :D][np.argsort(r)], S(torch.as_tensor(ops_by_pos).float(), D))


def _orig_adj(g) -> np.ndarray:
    adj = np.zeros((g.num_nodes, g.num_nodes), dtype=bool)
    adj[g.edges[0], g.edges[1]] = True
    return adj


def test_augmentation_really_reorders(nb201):
    g = nb201.graphs[0]
    # every topological order of the cell, by brute force (input first, output last)
    valid = set()
    for middle in itertools.permutations(range(1, 7)):
        order = (0, *middle, 7)
        pos = np.argsort(order)
        if (pos[g.edges[0]] < pos[g.edges[1]]).all():
            valid.add(tuple(pos.tolist()))
    assert len(valid) > 10
    batch = collate([g] * 2000)
    rank = random_topological_rank(batch, torch.Generator().manual_seed(0)).view(2000, 8)
    seen = {tuple(r) for r in rank.tolist()}
    assert seen <= valid                               # only valid orders are drawn ...
    assert len(seen) >= 0.8 * len(valid)               # ... and most of them appear
    canonical = tuple(topological_rank(collate([g])).tolist())
    assert sum(tuple(r) != canonical for r in rank.tolist()) > 1500


def test_consistency_loss_in_training_only(nb201):
    batch = collate(nb201.graphs[:32])
    enc = build_encoder("narformer", 7, hidden=16, heads=2)
    assert enc.extra_loss() is None
    enc.train()
    z = enc(batch)
    loss = enc.extra_loss()
    assert loss is not None and float(loss.detach()) > 0 and loss.requires_grad
    assert enc.extra_loss() is None                    # read once
    enc.eval()
    with torch.no_grad():
        z1, z2 = enc(batch), enc(batch)
    assert enc.extra_loss() is None
    torch.testing.assert_close(z1, z2)                 # eval: the canonical order only, deterministic
    assert z.shape == z1.shape == (32, 16)
    off = build_encoder("narformer", 7, hidden=16, heads=2, consistency=0.0).train()
    off(batch)
    assert off.extra_loss() is None


def _order_gap(enc, batch, draws: int = 4) -> float:
    """Mean squared gap between the embeddings of the canonical and random other orders, relative
    to the spread of the embeddings over the architectures."""
    enc.eval()
    with torch.no_grad():
        z = enc._embed(batch, topological_rank(batch))
        gen = torch.Generator().manual_seed(11)
        gap = np.mean([float((z - enc._embed(batch, random_topological_rank(batch, gen))).pow(2).mean())
                       for _ in range(draws)])
        return gap / float((z - z.mean(0)).pow(2).mean())


def test_consistency_training_makes_the_embedding_order_invariant(nb201):
    """The same fine-tuning with the consistency loss leaves the embeddings of reordered sequences
    much closer to the canonical ones (relative to how far apart architectures lie) than without."""
    batch = collate(nb201.graphs)
    y = nb201.targets("cifar10_test_200ep")
    perm = np.random.default_rng(0).permutation(len(nb201))
    held_out = batch.select(torch.as_tensor(perm[1000:1400]))
    gaps = {}
    for w in (0.0, 10.0):
        torch.manual_seed(0)
        enc = build_encoder("narformer", 7, hidden=32, heads=4, layers=2, consistency=w)
        finetune(enc, batch, y, perm[:150], None, epochs=10, batch_size=16, seed=0, progress=False)
        gaps[w] = _order_gap(enc, held_out)
    assert gaps[10.0] < 0.5 * gaps[0.0], gaps


# ---------------------------------------------------------------------------------------------
# the shared encoder interface
# ---------------------------------------------------------------------------------------------
def test_registered_and_configurable():
    assert ENCODERS["narformer"] is NARFormer
    enc = build_encoder("NAR-Former", 7, hidden=32, heads=4, fusion=[2, 1], consistency=0.5, augment=2)
    again = build_encoder(enc.name, **enc.config)
    assert again.config == enc.config and again.config["fusion"] == [2, 1]
    for bad in (dict(heads=5), dict(layers=0), dict(fusion=[0]), dict(op_dim=3), dict(consistency=-1.0),
                dict(augment=-1)):
        with pytest.raises(ValueError):
            build_encoder("narformer", 7, hidden=32, **bad)


def test_node_features_instead_of_op_ids(nb201):
    from fgp_ext.graph import ArchBatch

    batch = collate(nb201.graphs[:6])

    feat = ArchBatch(op=batch.op, node_ptr=batch.node_ptr, graph=batch.graph, in_csr=batch.in_csr,
                     out_csr=batch.out_csr, level=batch.level, is_source=batch.is_source,
                     x=torch.nn.functional.one_hot(batch.op, 7).float())
    enc = build_encoder("narformer", 7, hidden=16, heads=2, node_features=7).eval()
    assert enc.token_proj.in_features == 64               # topology codes only: position + sources
    z = enc(feat)
    assert z.shape == (6, 16) and torch.isfinite(z).all()
    assert enc.token_states(feat).shape == (feat.num_nodes, 16)


def test_pretrain_finetune_checkpoint_round_trip(nb201, tmp_path):
    idx = np.arange(0, 15625, 53)[:240]
    ds = nb201
    batch = collate([ds.graphs[i] for i in idx])
    y = ds.targets("cifar10_test_200ep")[idx]
    torch.manual_seed(0)
    enc = build_encoder("narformer", 7, hidden=32, heads=4, layers=2)
    sur = torch.randn(len(idx), 7) * 0.1
    pre = pretrain(enc, batch, sur, epochs=2, batch_size=64, seed=1, progress=False,
                   aux_target=ds.targets("cifar10_val_12ep")[idx])
    assert len(pre.history) == 2 and all(np.isfinite(h["loss"]) for h in pre.history)
    space = spaces.get_space("nb201")
    path = save_checkpoint(tmp_path / "pre.pt", enc, {"flow": pre.flow_head, "aux": pre.aux_head}, space=space)
    ck = load_checkpoint(path)
    assert isinstance(ck.encoder, NARFormer) and ck.encoder.config == enc.config
    enc.eval()
    with torch.no_grad():
        torch.testing.assert_close(ck.encoder(batch), enc(batch), rtol=0, atol=0)
        torch.testing.assert_close(ck.heads["flow"](ck.encoder(batch)), pre.flow_head(enc(batch)), rtol=0, atol=0)
    ft = finetune(ck.encoder, batch, y, np.arange(40), np.arange(40, 60), epochs=2, batch_size=16, seed=2,
                  progress=False)
    path = save_checkpoint(tmp_path / "ft.pt", ft.model.encoder, {"score": ft.model.head}, space=space)
    again = load_checkpoint(path).predictor()
    assert np.array_equal(predict(again, batch), predict(ft.model, batch))


def test_cli_pretrain_finetune_run(tmp_path, capsys):
    common = ["--limit", "200", "--hidden", "16", "--threads", "1", "--no-progress"]
    pre = tmp_path / "pre.pt"
    assert main(["pretrain", "--encoder", "narformer", "--epochs", "1", "--out", str(pre), *common]) == 0
    assert load_checkpoint(pre).encoder.name == "narformer"
    ft = tmp_path / "ft.pt"
    assert main(["finetune", "--checkpoint", str(pre), "--ratio", "0.2", "--epochs", "1", "--out", str(ft),
                 *common]) == 0
    assert main(["run", "--encoder", "narformer", "--consistency", "0", "--ratio", "0.2", "--runs", "1",
                 "--epochs-pretrain", "1", "--epochs-finetune", "1", "--no-plots", "--out", str(tmp_path / "r"),
                 *common]) == 0
    import json

    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["encoder"] == "narformer" and summary["encoder_config"]["consistency"] == 0.0
    with pytest.raises(SystemExit):
        main(["run", "--encoder", "gin", "--augment", "2", *common])


def test_a_short_run_ranks_nb201(nb201):
    """Supervised from 150 labels, a few epochs: the test ranking of 2,000 unseen cells is far from
    random (Kendall tau of a random ranking: 0 +- 0.015)."""
    perm = np.random.default_rng(0).permutation(len(nb201))
    train, val, test = perm[:150], perm[150:190], perm[190:2190]
    batch = collate(nb201.graphs)
    y = nb201.targets("cifar10_test_200ep")
    torch.manual_seed(0)
    enc = build_encoder("narformer", 7, hidden=32, heads=4, layers=2)
    ft = finetune(enc, batch, y, train, val, epochs=20, batch_size=16, seed=0, progress=False)
    tau = kendall_tau(predict(ft.model, batch, test), y[test])
    assert tau > 0.3, tau
