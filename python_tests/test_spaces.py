"""Search-space conversions (fgp_ext/data/spaces.py): hand-worked graphs and error paths."""
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from fgp_ext.data import spaces as S
from fgp_ext.graph import ArchGraph

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def edge_set(g: ArchGraph) -> set:
    return {(int(a), int(b)) for a, b in g.edges.T}


def assert_is_cycle(cycle, edges):
    es = {(int(a), int(b)) for a, b in np.asarray(edges).reshape(2, -1).T}
    assert cycle[0] == cycle[-1] and len(cycle) >= 2
    for a, b in zip(cycle[:-1], cycle[1:]):
        assert (a, b) in es


# ------------------------------------------------------------------------------------ NB201

def test_nb201_vocab_exact():
    sp = S.NB201Space()
    assert sp.vocab == ["input", "output", "none", "skip_connect", "nor_conv_1x1",
                        "nor_conv_3x3", "avg_pool_3x3"]
    assert sp.num_ops == 7 and sp.name == "nb201"
    assert sp.surrogate_params == {"k": 7, "std": 0.1, "alpha": 0.5}


def test_nb201_hand_worked_cell():
    s = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|"
    g = S.nb201_from_string(s)
    # node 0 input, 1..6 = edge-ops in string order, 7 output
    assert g.ops.tolist() == [0, 5, 2, 3, 6, 4, 5, 1]
    assert g.sources == (0,)
    # cell edges e1=0->1 e2=0->2 e3=1->2 e4=0->3 e5=1->3 e6=2->3 (nodes 1..6):
    # input -> e1,e2,e4; e1(->1) -> e3,e5 (leave 1); e2(->2), e3(->2) -> e6 (leaves 2);
    # e4, e5, e6 (enter 3) -> output.
    expected = {(0, 1), (0, 2), (0, 4), (1, 3), (1, 5), (2, 6), (3, 6), (4, 7), (5, 7), (6, 7)}
    assert edge_set(g) == expected
    assert g.num_edges == 10
    assert edge_set(ArchGraph(ops=g.ops, edges=S.NB201_EDGES)) == expected
    assert not S.NB201_EDGES.flags.writeable


def test_nb201_string_roundtrip_and_batch_agree():
    rng = np.random.default_rng(0)
    ids = rng.integers(2, 7, size=(300, 6))
    strs = [S.nb201_to_string(r) for r in ids]
    assert strs[0].count("~") == 6
    batch = S.nb201_batch_ops(strs + strs[:5])  # duplicates go through the unique path
    assert batch.shape == (305, 8) and batch.dtype == np.int64
    assert (batch[:, 0] == 0).all() and (batch[:, 7] == 1).all()
    np.testing.assert_array_equal(batch[:300, 1:7], ids)
    np.testing.assert_array_equal(batch[300:], batch[:5])
    for s, row in zip(strs[:20], batch):
        assert S.nb201_from_string(s).ops.tolist() == row.tolist()
    assert S.nb201_batch_ops([]).shape == (0, 8)


def test_nb201_to_graph_accepts_record():
    s = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    g = S.NB201Space().to_graph({"arch_str": s}, targets={"acc": 1.5}, name="x")
    assert g.ops.tolist() == [0, 2, 2, 2, 2, 2, 2, 1]  # none nodes are kept
    assert g.targets == {"acc": 1.5} and g.name == "x"


@pytest.mark.parametrize("bad, fragment", [
    ("|none~0|+|none~0|none~1|", "3 '+'-separated"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|+|none~0|", "3 '+'-separated"),
    ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "enclosed in '|'"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 must have 2"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none2|", "not 'op~input'"),
    ("|none~0|+|none~1|none~0|+|none~0|none~1|none~2|", "must come from node 0"),
    ("|conv_7x7~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv_7x7'"),
])
def test_nb201_malformed_strings(bad, fragment):
    with pytest.raises(ValueError, match="malformed NB201") as ei:
        S.nb201_from_string(bad)
    assert fragment in str(ei.value)


def test_nb201_non_string_and_batch_error_position():
    with pytest.raises(ValueError, match="string"):
        S.nb201_from_string(42)
    good = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    with pytest.raises(ValueError, match="position 2"):
        S.nb201_batch_ops([good, good, "|bad~0|"])
    with pytest.raises(ValueError, match="position 1"):
        S.nb201_batch_ops([good, None])


# ------------------------------------------------------------------------------------ NB101

NB101_DANGLING = dict(
    matrix=[
        [0, 1, 1, 0, 0, 0],  # input -> 1, 2
        [0, 0, 0, 0, 1, 0],  # conv3x3 -> 4
        [0, 0, 0, 0, 0, 0],  # conv1x1: dead end (does not reach the output)
        [0, 0, 0, 0, 1, 0],  # maxpool -> 4, but not reachable from the input
        [0, 0, 0, 0, 0, 1],  # conv1x1 -> output
        [0, 0, 0, 0, 0, 0],
    ],
    ops=["input", "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3", "conv1x1-bn-relu",
         "output"],
)


def test_nb101_vocab_and_params():
    sp = S.NB101Space()
    assert sp.vocab == ["input", "output", "conv1x1-bn-relu", "conv3x3-bn-relu", "maxpool3x3"]
    assert (sp.surrogate_k, sp.surrogate_std) == (4, 1.0)


def test_nb101_pruning_hand_worked():
    g = S.nb101_from_matrix(**NB101_DANGLING)
    # kept: 0 input, 1 conv3x3, 4 conv1x1, 5 output -> renumbered 0..3
    assert g.ops.tolist() == [0, 3, 2, 1]
    assert edge_set(g) == {(0, 1), (1, 2), (2, 3)}
    assert g.sources == (0,)


def test_nb101_no_prune_keeps_dangling_nodes():
    g = S.NB101Space(prune=False).to_graph(NB101_DANGLING)
    assert g.ops.tolist() == [0, 3, 2, 4, 2, 1]
    assert edge_set(g) == {(0, 1), (0, 2), (1, 4), (3, 4), (4, 5)}
    with pytest.raises(ValueError, match="not reachable"):
        S.nb101_from_matrix([[0, 0], [0, 0]], ["input", "output"], prune=False)


def test_nb101_full_cell_unchanged():
    m = np.triu(np.ones((5, 5), dtype=int), 1)
    ops = ["input", "conv1x1-bn-relu", "conv3x3-bn-relu", "maxpool3x3", "output"]
    g = S.NB101Space().to_graph({"matrix": m.tolist(), "ops": ops})
    assert g.ops.tolist() == [0, 2, 3, 4, 1]
    assert edge_set(g) == set(itertools.combinations(range(5), 2))


@pytest.mark.parametrize("matrix, ops, fragment", [
    ([[0, 1], [1, 0]], ["input", "output"], "upper-triangular: entry [1][0]"),
    ([[1, 1], [0, 0]], ["input", "output"], "upper-triangular: entry [0][0]"),
    ([[0, 1, 0], [0, 0]], ["input", "maxpool3x3", "output"], "ragged"),
    ([[0, 1, 0], [0, 0, 1]], ["input", "maxpool3x3", "output"], "square"),
    ([[0, 1], [0, 0]], ["input", "maxpool3x3", "output"], "3 entries for a 2x2"),
    ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "conv5x5", "output"], "unknown NB101 op"),
    ([[0, 1, 0], [0, 0, 0], [0, 0, 0]], ["input", "maxpool3x3", "output"], "not reachable"),
    ([[0, 1], [0, 0]], ["maxpool3x3", "output"], "start with 'input'"),
    (np.triu(np.ones((8, 8)), 1), ["input"] + ["maxpool3x3"] * 6 + ["output"], "at most 7"),
])
def test_nb101_errors(matrix, ops, fragment):
    with pytest.raises(ValueError) as ei:
        S.nb101_from_matrix(matrix, ops)
    assert fragment in str(ei.value)


def test_nb101_record_missing_fields():
    with pytest.raises(ValueError, match="missing"):
        S.NB101Space().to_graph({"matrix": [[0, 1], [0, 0]]})


# ------------------------------------------------------------------------------------ DARTS

# record 0 of nb301_725.json
GENOTYPE = {
    "normal": [["max_pool_3x3", 0], ["dil_conv_3x3", 1], ["avg_pool_3x3", 1],
               ["avg_pool_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0],
               ["sep_conv_3x3", 1], ["skip_connect", 3]],
    "reduce": [["max_pool_3x3", 1], ["skip_connect", 0], ["sep_conv_3x3", 1],
               ["sep_conv_3x3", 0], ["max_pool_3x3", 3], ["avg_pool_3x3", 0],
               ["max_pool_3x3", 2], ["dil_conv_5x5", 3]],
}


def test_darts_vocab():
    sp = S.DartsSpace()
    v = sp.vocab
    assert v[:8] == ["normal_input0", "normal_input1", "normal_add", "normal_output",
                     "reduce_input0", "reduce_input1", "reduce_add", "reduce_output"]
    assert set(v[8:]) == {"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                          "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"}
    assert sp.num_ops == 16 and (sp.surrogate_k, sp.surrogate_std) == (12, 0.1)


def test_darts_hand_worked_genotype():
    g = S.darts_from_genotype(GENOTYPE)
    v = S.DARTS_VOCAB
    assert g.num_nodes == 30 and g.num_edges == 40
    assert g.sources == (0, 1, 15, 16)
    names = [v[i] for i in g.ops]
    assert names[0:2] == ["normal_input0", "normal_input1"]
    assert names[2:10] == [op for op, _ in GENOTYPE["normal"]]
    assert names[10:14] == ["normal_add"] * 4 and names[14] == "normal_output"
    assert names[15:17] == ["reduce_input0", "reduce_input1"]
    assert names[17:25] == [op for op, _ in GENOTYPE["reduce"]]
    assert names[25:29] == ["reduce_add"] * 4 and names[29] == "reduce_output"
    es = edge_set(g)
    # normal: pair 0 (max_pool from c_{k-2}) = node 2; pair 7 (skip from intermediate 1) = node 9
    assert {(0, 2), (2, 10), (1, 3), (3, 10)} <= es
    assert (11, 9) in es and (9, 13) in es
    assert {(10, 14), (11, 14), (12, 14), (13, 14)} <= es
    # reduce (offset 15): pair 4 max_pool from intermediate 1 (add node 26) -> node 21;
    # pair 6 max_pool from intermediate 0 (add node 25) -> node 23; pair 0 from c_{k-1}
    assert {(26, 21), (21, 27), (25, 23), (23, 28), (16, 17)} <= es
    # two disconnected components
    assert all((a < 15) == (b < 15) for a, b in es)
    assert S.find_cycle(g.num_nodes, g.edges) is None
    # every pair node has exactly one predecessor; every add node exactly two
    indeg = np.bincount(g.edges[1], minlength=30)
    assert (indeg[2:10] == 1).all() and (indeg[10:14] == 2).all() and indeg[14] == 4


def test_darts_cells_are_distinguishable():
    g = S.darts_from_genotype(GENOTYPE)
    swapped = S.darts_from_genotype({"normal": GENOTYPE["reduce"], "reduce": GENOTYPE["normal"]})
    assert edge_set(g) != edge_set(swapped) or g.ops.tolist() != swapped.ops.tolist()
    # the same structure with the cells swapped differs only by the structural tokens
    assert sorted(g.ops[np.r_[2:10, 17:25]].tolist()) == sorted(
        swapped.ops[np.r_[2:10, 17:25]].tolist())
    assert g.ops[15] != g.ops[0]


def test_darts_to_graph_accepts_record_and_object():
    from collections import namedtuple
    Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")
    obj = Genotype(GENOTYPE["normal"], [2, 3, 4, 5], GENOTYPE["reduce"], [2, 3, 4, 5])
    a = S.DartsSpace().to_graph({"genotype": GENOTYPE})
    b = S.DartsSpace().to_graph(obj)
    assert a.ops.tolist() == b.ops.tolist() and edge_set(a) == edge_set(b)


def _geno(**changes):
    g = json.loads(json.dumps(GENOTYPE))
    g.update(changes)
    return g


@pytest.mark.parametrize("genotype, fragment", [
    (_geno(normal=GENOTYPE["normal"][:7]), "must have 8"),
    (_geno(reduce=[["conv_9x9", 0]] + GENOTYPE["reduce"][1:]), "unknown DARTS op 'conv_9x9'"),
    (_geno(normal=[["skip_connect", 2]] + GENOTYPE["normal"][1:]), "input 2 out of range 0..1"),
    (_geno(normal=GENOTYPE["normal"][:6] + [["skip_connect", 5], ["skip_connect", 0]]),
     "input 5 out of range 0..4"),
    (_geno(normal=[["skip_connect", "0"]] + GENOTYPE["normal"][1:]), "must be an integer"),
    ({"normal": GENOTYPE["normal"]}, "missing cell(s) ['reduce']"),
    (_geno(normal_concat=[2, 3]), "not supported"),
])
def test_darts_errors(genotype, fragment):
    with pytest.raises(ValueError) as ei:
        S.darts_from_genotype(genotype)
    assert fragment in str(ei.value)


@pytest.mark.skipif(not (SHARED / "nb301_725.json").exists(), reason="shared data absent")
def test_darts_all_shared_genotypes():
    recs = json.loads((SHARED / "nb301_725.json").read_text())
    assert recs[0]["genotype"] == GENOTYPE
    for r in recs:
        g = S.darts_from_genotype(r["genotype"])
        assert g.num_nodes == 30 and g.num_edges == 40


# ------------------------------------------------------------------------------------ generic

def test_generic_growing_vocab():
    sp = S.GenericSpace()
    g1 = sp.from_edges(["in", "conv", "out"], [[0, 1], [1, 2]])
    g2 = sp.from_edges(["in", "pool", "conv", "out"], [[0, 1], [0, 2], [1, 3], [2, 3]])
    assert sp.vocab == ["in", "conv", "out", "pool"]
    assert g1.ops.tolist() == [0, 1, 2] and g2.ops.tolist() == [0, 3, 1, 2]
    assert edge_set(g2) == {(0, 1), (0, 2), (1, 3), (2, 3)}
    assert g1.sources is None
    assert (sp.surrogate_k, sp.surrogate_std) == (8, 0.1)


def test_generic_frozen_vocab_rejects_unknown():
    sp = S.GenericSpace(["a", "b"])
    assert sp.from_edges(["b", "a"], [[0, 1]]).ops.tolist() == [1, 0]
    with pytest.raises(ValueError, match="unknown op 'c' at node 1"):
        sp.from_edges(["a", "c"], [[0, 1]])
    assert sp.vocab == ["a", "b"]


def test_generic_matrix_equals_edges_and_sources():
    sp = S.GenericSpace()
    m = [[0, 1, 1, 0], [0, 0, 0, 2], [0, 0, 0, 1], [0, 0, 0, 0]]
    ops = ["x", "y", "z", "w"]
    a = sp.from_matrix(ops, m, sources=[0])
    b = sp.from_edges(ops, [[0, 1], [0, 2], [1, 3], [2, 3]])
    assert edge_set(a) == edge_set(b) == {(0, 1), (0, 2), (1, 3), (2, 3)}
    assert a.sources == (0,)
    # a non-triangular (but acyclic) matrix is fine: edge 2 -> 0
    c = sp.from_matrix(["p", "q", "r"], [[0, 0, 0], [0, 0, 0], [1, 1, 0]])
    assert edge_set(c) == {(2, 0), (2, 1)}
    g = sp.to_graph({"ops": ["a", "b"], "edges": [[0, 1]], "sources": [0]})
    assert g.sources == (0,)


def test_generic_cycle_reported_with_nodes():
    sp = S.GenericSpace()
    edges = [[0, 1], [1, 2], [2, 3], [3, 1], [3, 4]]
    with pytest.raises(ValueError, match="cycle") as ei:
        sp.from_edges(["a", "b", "c", "d", "e"], edges)
    msg = str(ei.value)
    for node in ("1 (b)", "2 (c)", "3 (d)"):
        assert node in msg
    assert "0 (a)" not in msg and "4 (e)" not in msg
    cyc = S.find_cycle(5, np.array(edges).T)
    assert sorted(set(cyc)) == [1, 2, 3]
    assert_is_cycle(cyc, np.array(edges).T)
    with pytest.raises(ValueError, match="cycle"):
        sp.from_matrix(["a", "b"], [[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="self-loop on node 1"):
        sp.from_edges(["a", "b"], [[0, 1], [1, 1]])


def test_find_cycle_random_graphs():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(2, 9))
        e = rng.integers(0, n, size=(2, int(rng.integers(1, 15))))
        e = e[:, e[0] != e[1]]
        if e.shape[1] == 0:
            continue
        cyc = S.find_cycle(n, e)
        # acyclic iff a topological order exists: test against repeated sink removal
        alive = np.ones(n, bool)
        while True:
            has_out = np.zeros(n, bool)
            m = alive[e[0]] & alive[e[1]]
            has_out[e[0][m]] = True
            sinks = alive & ~has_out
            if not sinks.any():
                break
            alive &= ~sinks
        assert (cyc is None) == (not alive.any())
        if cyc is not None:
            assert_is_cycle(cyc, e)


@pytest.mark.parametrize("ops, edges, fragment", [
    (["a", "b"], [[0, 2]], "edge 0 [0, 2] is out of range for 2 nodes"),
    (["a", "b"], [[0, -1]], "out of range"),
    (["a", "b"], [[0, 1], [0, 1]], "duplicate edge [0, 1]"),
    (["a", "b"], [[0, 1, 2]], "must be a [src, dst] pair"),
    (["a", "b"], [[0, 1.5]], "must be integers"),
    ([], [], "at least one node"),
    (["a", 3], [], "ops[1] must be an op name"),
])
def test_generic_edge_errors(ops, edges, fragment):
    with pytest.raises(ValueError) as ei:
        S.GenericSpace().from_edges(ops, edges)
    assert fragment in str(ei.value)


@pytest.mark.parametrize("ops, matrix, fragment", [
    (["a", "b"], [[0, 1], [0]], "ragged"),
    (["a", "b"], [[0, 1, 0], [0, 0, 0]], "square"),
    (["a", "b", "c"], [[0, 1], [0, 0]], "2x2 but there are 3 ops"),
    (["a", "b"], [[0, "x"], [0, 0]], "non-numeric"),
])
def test_generic_matrix_errors(ops, matrix, fragment):
    with pytest.raises(ValueError) as ei:
        S.GenericSpace().from_matrix(ops, matrix)
    assert fragment in str(ei.value)


def test_generic_record_errors():
    sp = S.GenericSpace()
    with pytest.raises(ValueError, match="'ops'"):
        sp.to_graph({"edges": []})
    with pytest.raises(ValueError, match="exactly one of 'edges' or 'matrix'"):
        sp.to_graph({"ops": ["a"]})
    with pytest.raises(ValueError, match="got both"):
        sp.to_graph({"ops": ["a"], "edges": [], "matrix": [[0]]})
    with pytest.raises(ValueError, match=r"source node\(s\) \[5\]"):
        sp.to_graph({"ops": ["a"], "edges": [], "sources": [5]})


def test_get_space():
    assert isinstance(S.get_space("NB201"), S.NB201Space)
    assert isinstance(S.get_space("darts"), S.DartsSpace)
    assert isinstance(S.get_space("nas-bench-101"), S.NB101Space)
    sp = S.GenericSpace()
    assert S.get_space(sp) is sp
    with pytest.raises(ValueError, match="unknown search space"):
        S.get_space("nb999")


def test_sample_nb101_gives_distinct_valid_pruned_cells():
    ds = S.sample_nb101(300, seed=3)
    assert len(ds) == 300 and ds.space.name == "nb101" and ds.target_names == []
    keys = set()
    for g in ds.graphs:
        assert 2 <= g.num_nodes <= 7 and g.num_edges <= 9
        assert g.ops[0] == S.NB101_VOCAB.index("input") and g.ops[-1] == S.NB101_VOCAB.index("output")
        assert set(g.ops[1:-1].tolist()) <= {2, 3, 4}
        src, dst = g.edges
        assert (src < dst).all()
        # pruned: every node is on an input -> output path
        adj = np.zeros((g.num_nodes, g.num_nodes), dtype=bool)
        adj[src, dst] = True
        closure = np.eye(g.num_nodes, dtype=np.int64) + adj                 # (I + A)^n: reachability
        closure = np.linalg.matrix_power(closure, g.num_nodes) > 0
        assert (closure[0] & closure[:, g.num_nodes - 1]).all()
        keys.add((g.ops.tobytes(), g.edges.tobytes()))
    assert len(keys) == 300
    again = S.sample_nb101(300, seed=3)
    assert all(np.array_equal(a.ops, b.ops) and np.array_equal(a.edges, b.edges)
               for a, b in zip(ds.graphs, again.graphs))
    with pytest.raises(ValueError, match="edge_prob"):
        S.sample_nb101(3, edge_prob=0.0)
    with pytest.raises(ValueError, match="n must be >= 0"):
        S.sample_nb101(-1)
    with pytest.raises(RuntimeError, match="distinct cells after 10 draws"):
        S.sample_nb101(5, edge_prob=1e-9, max_tries=10)
