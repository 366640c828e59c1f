"""Flow-aware encoder: level schedule, flow-related pairs, fused attention and flow-pass ops, the
generic level propagation, and FlowerFormer against its masked implementation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import batch_tensors, dag_batches
from hypothesis import given, settings

from fgp_ext.sparse import CSR
from fgp_ext import ArchGraph, collate, ops
from fgp_ext import reference as ref
from fgp_ext.encoders import FlowerFormer, build_encoder
from fgp_ext.encoders.flowerformer import FlowStep, LevelBackend, MaskedFlowBackend
from fgp_ext.levels import LevelPlan, propagate

SETTINGS = settings(max_examples=25, deadline=None)


# ---------------------------------------------------------------------------------------------
# level_schedule
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(dag_batches())
def test_level_schedule_matches_reference_both_directions(graphs):
    b = batch_tensors(graphs)
    for reverse in (False, True):
        s = b.schedule(reverse=reverse)
        csr = b.out_csr if reverse else b.in_csr
        level = ops.topo_levels(csr, b.node_ptr) if reverse else b.level
        expect = ref.level_schedule(csr.indptr, csr.index, level)
        got = (s.order, s.rank, s.level_ptr, s.csr.indptr, s.csr.index, s.entry_perm, s.group_level_ptr,
               s.group_perm, s.group_ptr, s.group_src)
        assert len(got) == len(expect)
        for g, e in zip(got, expect):
            assert torch.equal(g, e)
        # every entry of level l reads a position before level l, and maps back to its original entry
        pos_level = torch.repeat_interleave(torch.arange(s.num_levels), s.level_ptr.diff())
        entry_start = torch.repeat_interleave(s.level_ptr[:-1].index_select(0, pos_level), s.csr.indptr.diff())
        assert bool((s.csr.index < entry_start).all())
        assert torch.equal(s.order.index_select(0, s.csr.index), csr.index.index_select(0, s.entry_perm))


def test_opcheck_schedule_pairs_and_select():
    b = collate([ArchGraph([0, 1, 2], [[0, 1], [1, 2]]), ArchGraph([0, 1], [[0], [1]]), ArchGraph([3], [])])
    torch.library.opcheck(torch.ops.fgp.level_schedule, (b.in_csr.indptr, b.in_csr.index, b.level))
    topo = torch.arange(b.num_nodes)
    torch.library.opcheck(torch.ops.fgp.flow_pairs, (b.in_csr.indptr, b.in_csr.index, b.node_ptr, topo))
    args = (b.node_ptr, torch.tensor([2, 0, 1, 0]), b.op, b.level, b.is_source, *b.in_csr[:3], *b.out_csr[:3])
    torch.library.opcheck(torch.ops.fgp.select_graphs, args)


def test_select_graphs_refuses_malformed_batches():
    b = collate([ArchGraph([0, 1, 2], [[0, 1], [1, 2]]), ArchGraph([0, 1], [[0], [1]])])
    good = [b.node_ptr, torch.tensor([1, 0]), b.op, b.level, b.is_source, *b.in_csr[:3], *b.out_csr[:3]]
    assert torch.equal(torch.ops.fgp.select_graphs(*good)[2], torch.tensor([0, 1, 0, 1, 2]))
    bad = list(good)
    bad[6] = b.in_csr.index.clone()
    bad[6][0] = 4  # an edge of graph 0 pointing into graph 1
    with pytest.raises(RuntimeError, match="graph 0 is malformed"):
        torch.ops.fgp.select_graphs(*bad)
    with pytest.raises(RuntimeError, match="ids out of range"):
        torch.ops.fgp.select_graphs(good[0], torch.tensor([2]), *good[2:])
    with pytest.raises(RuntimeError, match="one entry per node"):
        torch.ops.fgp.select_graphs(*good[:3], good[3][:-1], *good[4:])


def test_level_schedule_rejects_bad_levels():
    b = collate([ArchGraph([0, 1, 2], [[0, 1], [1, 2]])])
    indptr, index = b.in_csr.indptr, b.in_csr.index
    with pytest.raises(RuntimeError, match="not a topological levelling"):
        ops.level_schedule(CSR(indptr, index), torch.tensor([0, 1, 1]))
    with pytest.raises(RuntimeError, match="one entry per node"):
        ops.level_schedule(CSR(indptr, index), torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="non-negative"):
        ops.level_schedule(CSR(indptr, index), torch.tensor([-1, 1, 2]))
    with pytest.raises(RuntimeError, match="int64"):
        ops.level_schedule(CSR(indptr, index), torch.tensor([0.0, 1.0, 2.0]))


# ---------------------------------------------------------------------------------------------
# flow_pairs
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(dag_batches())
def test_flow_pairs_match_reachability(graphs):
    b = batch_tensors(graphs)
    got = b.flow_pairs
    expect = ref.flow_pairs(b.in_csr.indptr, b.in_csr.index, b.node_ptr)
    for g, e in zip(got, expect):
        assert torch.equal(g, e)
    # symmetric: perm maps each pair to its mirror, and is an involution
    rows = torch.repeat_interleave(torch.arange(b.num_nodes), got.indptr.diff())
    assert torch.equal(got.index.index_select(0, got.perm), rows)
    assert torch.equal(got.perm.index_select(0, got.perm), torch.arange(got.index.numel()))


def test_flow_pairs_rejects_bad_orders_and_huge_graphs():
    b = collate([ArchGraph([0, 1, 2], [[0, 1], [1, 2]])])
    indptr, index, node_ptr = b.in_csr.indptr, b.in_csr.index, b.node_ptr
    with pytest.raises(RuntimeError, match="not a topological order"):
        ops.flow_pairs(CSR(indptr, index), node_ptr, torch.tensor([2, 1, 0]))
    with pytest.raises(RuntimeError, match="not a topological order"):
        ops.flow_pairs(CSR(indptr, index), node_ptr, torch.tensor([0, 0, 1]))
    with pytest.raises(RuntimeError, match="every node once"):
        ops.flow_pairs(CSR(indptr, index), node_ptr, torch.tensor([0, 1]))
    # a self-loop is a cycle
    with pytest.raises(RuntimeError, match="cycle"):
        ops.flow_pairs(CSR(torch.tensor([0, 1]), torch.tensor([0])), torch.tensor([0, 1]), torch.tensor([0]))
    n = (1 << 14) + 1
    with pytest.raises(RuntimeError, match="limited to"):
        ops.flow_pairs(CSR(torch.zeros(n + 1, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)),
                       torch.tensor([0, n]), torch.arange(n))


# ---------------------------------------------------------------------------------------------
# gather_attention
# ---------------------------------------------------------------------------------------------
def _attention_problem(seed, dtype=torch.float64, heads=3, width=4):
    rng = np.random.default_rng(seed)
    rows, cols = int(rng.integers(0, 9)), int(rng.integers(1, 8))
    deg = rng.integers(0, 4, size=rows)
    indptr = torch.zeros(rows + 1, dtype=torch.int64)
    indptr[1:] = torch.from_numpy(np.cumsum(deg))
    index = torch.from_numpy(rng.integers(0, cols, size=int(indptr[-1])).astype(np.int64))
    x = torch.from_numpy(rng.standard_normal((cols, heads, width))).to(dtype)
    logit = torch.from_numpy(3 * rng.standard_normal((index.numel(), heads))).to(dtype)
    return x, logit, index, indptr


@pytest.mark.parametrize("seed", range(12))
def test_gather_attention_matches_reference_and_gradcheck(seed):
    x, logit, index, indptr = _attention_problem(seed)
    t = ops.csr_transpose(CSR(indptr, index), x.shape[0])
    got = ops.gather_attention(x, logit, CSR(indptr, index), transpose=t)
    torch.testing.assert_close(got, ref.gather_attention(x, logit, index, indptr), rtol=1e-12, atol=1e-12)
    empty = indptr.diff() == 0
    assert bool((got[empty] == 0).all())
    x.requires_grad_(True)
    logit.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: ops.gather_attention(a, b, CSR(indptr, index), transpose=t), (x, logit))
    assert torch.autograd.gradcheck(lambda a, b: ops.gather_attention(a, b, CSR(indptr, index)), (x, logit))


def test_gather_attention_single_head_and_opcheck():
    x, logit, index, indptr = _attention_problem(3, torch.float32, heads=1)
    one = ops.gather_attention(x[:, 0], logit[:, 0], CSR(indptr, index))
    torch.testing.assert_close(one, ops.gather_attention(x, logit, CSR(indptr, index))[:, 0])
    t = ops.csr_transpose(CSR(indptr, index), x.shape[0])
    torch.library.opcheck(torch.ops.fgp.gather_attention, (x, logit, index, indptr))
    torch.library.opcheck(torch.ops.fgp.gather_attention, (x, logit, index, indptr, t.indptr, t.index, t.perm))


def test_gather_attention_bad_input():
    x, logit, index, indptr = _attention_problem(5)
    with pytest.raises(RuntimeError, match=r"\[M, H, D\]"):
        torch.ops.fgp.gather_attention(x[:, 0], logit, index, indptr)
    with pytest.raises(RuntimeError, match="logit must have shape"):
        ops.gather_attention(x, logit[:, :1], CSR(indptr, index))
    with pytest.raises(RuntimeError, match="dtype"):
        ops.gather_attention(x, logit.float(), CSR(indptr, index))
    bad = index.clone()
    if bad.numel():
        bad[0] = x.shape[0]
        with pytest.raises(RuntimeError, match="out of range"):
            ops.gather_attention(x, logit, CSR(indptr, bad))


# ---------------------------------------------------------------------------------------------
# dot_attention
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(dag_batches())
def test_dot_attention_matches_reference_and_gradcheck(graphs):
    b = batch_tensors(graphs)
    pairs = b.flow_pairs
    torch.manual_seed(0)
    q, k, v = (torch.randn(b.num_nodes, 2, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    got = ops.dot_attention(q, k, v, pairs)
    torch.testing.assert_close(got, ref.dot_attention(q, k, v, pairs.index, pairs.indptr, 3 ** -0.5),
                               rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *t: ops.dot_attention(*t, pairs), (q, k, v))
    # without the symmetric transpose the backward builds its own
    assert torch.autograd.gradcheck(lambda *t: ops.dot_attention(*t, ops.CSR(pairs.indptr, pairs.index), 0.7),
                                    (q, k, v))


def test_dot_attention_opcheck_and_bad_input():
    x, logit, index, indptr = _attention_problem(4, torch.float32)
    rows = indptr.numel() - 1
    q = torch.randn(rows, 3, 4)
    k, v = x, torch.randn_like(x)
    torch.library.opcheck(torch.ops.fgp.dot_attention, (q, k, v, index, indptr, 0.5))
    with pytest.raises(RuntimeError, match="shape of k"):
        ops.dot_attention(q, k, v[:, :1], ops.CSR(indptr, index))
    with pytest.raises(RuntimeError, match="one row per query"):
        ops.dot_attention(q[:0], k, v, ops.CSR(indptr, index))
    with pytest.raises(RuntimeError, match="share a dtype"):
        ops.dot_attention(q.double(), k, v, ops.CSR(indptr, index))


# ---------------------------------------------------------------------------------------------
# flow_pass (fused) and propagate (generic)
# ---------------------------------------------------------------------------------------------
def _flow_weights(step):
    g = step.gru
    return (step.att_dst.weight, step.att_src.weight, step.att_src.bias, g.weight_ih, g.weight_hh, g.bias_ih, g.bias_hh)


@SETTINGS
@given(dag_batches())
def test_flow_pass_matches_reference_and_propagate(graphs):
    b = batch_tensors(graphs)
    torch.manual_seed(0)
    step = FlowStep(5).double()
    for reverse in (False, True):
        plan = LevelPlan(b.schedule(reverse=reverse))
        h = torch.randn(b.num_nodes, 5, dtype=torch.float64, requires_grad=True)
        hp = h.index_select(0, plan.order)
        fused = ops.flow_pass(hp, plan, *_flow_weights(step))
        w = [t.reshape(-1) if i < 2 else t for i, t in enumerate(_flow_weights(step))]
        plain = ref.flow_pass(hp, plan.level_ptr, plan.indptr, plan.index, plan.group_level_ptr, plan.group_perm,
                              plan.group_ptr, plan.group_src, w[0], w[1], w[2].reshape(1), *w[3:])
        generic = propagate(step, h, plan).index_select(0, plan.order)
        torch.testing.assert_close(fused, plain, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(fused, generic, rtol=1e-10, atol=1e-10)
        up = torch.randn_like(fused)
        params = [h, *step.parameters()]
        for other in (plain, generic):
            g1 = torch.autograd.grad((fused * up).sum(), params, retain_graph=True, allow_unused=True)
            g2 = torch.autograd.grad((other * up).sum(), params, retain_graph=True, allow_unused=True)
            for p, a, e in zip(params, g1, g2):  # no edges: a weight is unused (None) or gets zeros
                a = torch.zeros_like(p) if a is None else a
                e = torch.zeros_like(p) if e is None else e
                torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("width", [3, 40])
def test_flow_pass_follows_flowerformers_gru_wiring(width):
    """Worked by hand with torch.nn.GRUCell: a source goes through the cell with a zero message,
    and a node with one predecessor u (softmax weight 1) gets GRUCell(input=h0[v], hidden=h[u]).
    Width 40 with 20 graphs puts every level on the GEMM path, width 3 on the loop path."""
    torch.manual_seed(width)
    step = FlowStep(width).double()
    b = collate([ArchGraph([0, 1, 2], [[0, 1], [1, 2]]) for _ in range(20)] + [ArchGraph([3], [])])
    plan = LevelPlan(b.schedule())
    h0 = torch.randn(b.num_nodes, width, dtype=torch.float64)
    out = ops.flow_pass(h0.index_select(0, plan.order), plan, *_flow_weights(step)).index_select(0, plan.rank)
    cell = step.gru
    with torch.no_grad():
        a = cell(h0[0::3][:20], torch.zeros(20, width, dtype=torch.float64))   # sources (node 0 of each chain)
        bb = cell(h0[1::3][:20], a)
        c = cell(h0[2::3][:20], bb)
        lone = cell(h0[-1:], torch.zeros(1, width, dtype=torch.float64))
    expect = torch.stack([a, bb, c], 1).reshape(60, width)
    torch.testing.assert_close(out[:60], expect, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out[60:], lone, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("width", [4, 16, 48])
def test_flow_pass_large_and_small_levels_match_reference(width):
    """Wide batches take the ATen (GEMM) path for big levels and the loop path for small ones
    (rows x width <= 512): both must agree with the reference, values and gradients."""
    rng = np.random.default_rng(width)
    from conftest import random_dag
    graphs = []
    for i in range(60):
        n = int(rng.integers(2, 12))
        graphs.append((rng.integers(0, 5, size=n).tolist(), random_dag(rng, n, 0.4), None))
    b = collate([ArchGraph(o, np.array(e, dtype=np.int64).T.reshape(2, -1)) for o, e, _ in graphs])
    torch.manual_seed(width)
    step = FlowStep(width).double()
    for reverse in (False, True):
        plan = LevelPlan(b.schedule(reverse=reverse))
        sizes = plan.level_ptr.diff()[1:] * width
        assert bool((sizes > 512).any()) or width == 4
        h = torch.randn(b.num_nodes, width, dtype=torch.float64, requires_grad=True)
        fused = ops.flow_pass(h, plan, *_flow_weights(step))
        w = _flow_weights(step)
        plain = ref.flow_pass(h, plan.level_ptr, plan.indptr, plan.index, plan.group_level_ptr, plan.group_perm,
                              plan.group_ptr, plan.group_src, w[0].reshape(-1), w[1].reshape(-1), w[2].reshape(1),
                              *w[3:])
        torch.testing.assert_close(fused, plain, rtol=1e-10, atol=1e-10)
        up = torch.randn_like(fused)
        params = [h, *step.parameters()]
        for a, e in zip(torch.autograd.grad((fused * up).sum(), params), torch.autograd.grad((plain * up).sum(), params)):
            torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9)


def test_fast_exp_matches_torch_exp():
    """The softmax's exp is our own polynomial (same on CPU and CUDA): ~1 ulp against torch.exp."""
    for dtype, rtol in ((torch.float32, 3e-7), (torch.float64, 5e-16)):
        x = torch.cat([torch.linspace(-80, 80, 20001, dtype=dtype), torch.tensor([0.0, -1e-8, 1e-8], dtype=dtype)])
        # exp through gather_attention: one entry per row, value x, logit 0 -> weight 1 ... use two entries
        # per row with logits (x, 0): weight of the first = exp(x) / (exp(x) + 1) = sigmoid(x)
        n = x.numel()
        index = torch.arange(2 * n) % 2
        indptr = torch.arange(0, 2 * n + 1, 2)
        vals = torch.tensor([[[1.0]], [[0.0]]], dtype=dtype)
        logit = torch.stack([x, torch.zeros_like(x)], 1).reshape(-1, 1)
        got = ops.gather_attention(vals, logit, CSR(indptr, index))[:, 0, 0]
        torch.testing.assert_close(got, torch.sigmoid(x), rtol=rtol * 4, atol=1e-300)


def test_flow_pass_gradcheck_and_opcheck():
    b = collate([ArchGraph([0, 1, 2, 3], [[0, 0, 1, 2], [1, 2, 3, 3]]), ArchGraph([1], []),
                 ArchGraph([0, 1, 2], [[0, 1], [2, 2]])])
    torch.manual_seed(1)
    step = FlowStep(3).double()
    plan = LevelPlan(b.schedule())
    h = torch.randn(b.num_nodes, 3, dtype=torch.float64, requires_grad=True)
    weights = [t.detach().clone().requires_grad_(True) for t in _flow_weights(step)]
    assert torch.autograd.gradcheck(lambda x, *w: ops.flow_pass(x, plan, *w), (h, *weights))
    args = (h.detach(), plan.level_ptr, plan.indptr, plan.index, plan.group_level_ptr, plan.group_perm,
            plan.group_ptr, plan.group_src, weights[0].detach().reshape(-1), weights[1].detach().reshape(-1),
            weights[2].detach().reshape(1), *(w.detach() for w in weights[3:]))
    torch.library.opcheck(torch.ops.fgp._flow_pass_forward, args)
    # the public op is a composite of the forward: the same numbers, with autograd through it
    torch.testing.assert_close(torch.ops.fgp.flow_pass(*args), torch.ops.fgp._flow_pass_forward(*args)[0],
                               rtol=0, atol=0)
    torch.library.opcheck(torch.ops.fgp.flow_pass, args, test_utils=("test_schema", "test_faketensor"))


def test_flow_pass_rejects_a_schedule_that_reads_ahead():
    b = collate([ArchGraph([0, 1, 2], [[0, 1], [1, 2]])])
    plan = LevelPlan(b.schedule())
    step = FlowStep(2)
    bad_ptr = torch.tensor([0, 2, 3])  # merges levels 0 and 1: node 1 would read itself's level
    with pytest.raises(RuntimeError, match="reads a position of its own or a later level"):
        torch.ops.fgp.flow_pass(torch.zeros(3, 2), bad_ptr, plan.indptr, plan.index, torch.tensor([0, 1, 2]),
                                plan.group_perm, plan.group_ptr, plan.group_src, step.att_dst.weight.reshape(-1),
                                step.att_src.weight.reshape(-1), step.att_src.bias.reshape(1),
                                *(t.detach() for t in _flow_weights(step)[3:]))
    with pytest.raises(RuntimeError, match="shape"):
        ops.flow_pass(torch.zeros(3, 4), plan, *(t.detach() for t in _flow_weights(step)))


# ---------------------------------------------------------------------------------------------
# FlowerFormer: level schedule == masked implementation
# ---------------------------------------------------------------------------------------------
def _assert_same_parameter_grads(model, level, masked, rtol, atol):
    """The gradients of ``sum(out^2)`` w.r.t. every parameter agree for the two outputs. Without
    edges the flow weights are unused: autograd gives None or zeros, both read as zeros."""
    params = list(model.parameters())
    g1 = torch.autograd.grad(level.pow(2).sum(), params, allow_unused=True)
    g2 = torch.autograd.grad(masked.pow(2).sum(), params, allow_unused=True)
    for p, a, e in zip(params, g1, g2):
        a = torch.zeros_like(p) if a is None else a
        e = torch.zeros_like(p) if e is None else e
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol)


@settings(max_examples=10, deadline=None)
@given(dag_batches(max_graphs=5, max_nodes=9))
def test_flowerformer_equals_masked_implementation(graphs):
    b = batch_tensors(graphs)
    torch.manual_seed(0)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        model = FlowerFormer(num_ops=5, hidden=8, layers=2, heads=2, dropout=0.1).to(dtype).eval()
        level = model.node_embeddings(b)
        masked = model.node_embeddings(b, backend=MaskedFlowBackend(b))
        torch.testing.assert_close(level, masked, rtol=tol, atol=tol)
        _assert_same_parameter_grads(model, level, masked, rtol=tol, atol=tol * 10)


VARIANTS = [dict(layout="parallel"), dict(norm="batch"), dict(flow_relu=True),
            dict(layout="parallel", norm="batch", flow_relu=True, attention_dropout=0.5)]


@settings(max_examples=8, deadline=None)
@given(dag_batches(max_graphs=5, max_nodes=9))
@pytest.mark.parametrize("variant", VARIANTS, ids=["parallel", "batchnorm", "flow_relu", "original"])
def test_flowerformer_variants_equal_masked_implementation(variant, graphs):
    """Every layer variant computes the same function on the level schedule as on the masked
    implementation, in eval mode and (batch statistics, no attention dropout) in train mode."""
    b = batch_tensors(graphs)
    torch.manual_seed(0)
    model = FlowerFormer(num_ops=5, hidden=8, layers=2, heads=2, dropout=0.0, **variant).double()
    modes = [False] if (variant.get("attention_dropout") or b.num_nodes < 2) else [False, True]
    for training in modes:  # batch norm in training needs two nodes
        model.train(training)
        level = model.node_embeddings(b)
        masked = model.node_embeddings(b, backend=MaskedFlowBackend(b))
        torch.testing.assert_close(level, masked, rtol=1e-10, atol=1e-10)
        _assert_same_parameter_grads(model, level, masked, rtol=1e-9, atol=1e-9)


def test_parallel_layout_attends_to_the_layer_input():
    """``layout="parallel"``: ``norm(h + flow(h)) + norm(h + attention(h))`` then the feed-forward
    block; ``"sequential"`` attends to the flow block's output. Checked against the layer's parts."""
    b = batch_tensors([([0, 1, 2, 3], [(0, 1), (0, 2), (1, 3), (2, 3)], [0]), ([1, 2], [(0, 1)], [0])])
    torch.manual_seed(3)
    seq = FlowerFormer(num_ops=5, hidden=8, layers=1, heads=2, dropout=0.0).double().eval()
    par = FlowerFormer(num_ops=5, hidden=8, layers=1, heads=2, dropout=0.0, layout="parallel").double().eval()
    par.load_state_dict(seq.state_dict())
    layer, backend = seq.blocks[0], LevelBackend(b)
    h = seq.node_encoder(b.op)

    def attention(x):
        q, k, v = layer.qkv(x).view(x.shape[0], 3, 2, 4).unbind(1)
        return layer.norm_attention(x + layer.proj(backend.attend(q, k, v).reshape(x.shape[0], 8)))

    flow = backend.flow(layer.backward_step, backend.flow(layer.forward_step, h, reverse=False), reverse=True)
    local = layer.norm_flow(h + flow)
    for model, mixed in ((seq, attention(local)), (par, local + attention(h))):
        want = layer.norm_ffn(mixed + layer.ffn(mixed))
        torch.testing.assert_close(model.node_embeddings(b), want, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(seq.node_embeddings(b), par.node_embeddings(b))


def test_dot_attention_dropout_matches_reference_gradcheck_and_opcheck():
    """Attention dropout inside the fused op: the reference's mask (``reference.dropout`` on the
    ``[E, H]`` weights, same seed), values and gradients; gradcheck and opcheck with ``p > 0``."""
    graphs = [([0] * 6, [(i, j) for i in range(6) for j in range(i + 1, 6)], [0])] * 3 + [
        ([1, 2], [(0, 1)], [0]), ([1], [], [0])]
    b = batch_tensors(graphs)
    pairs = b.flow_pairs
    torch.manual_seed(0)
    q, k, v = (torch.randn(b.num_nodes, 2, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    for p in (0.0, 0.4):
        got = ops.dot_attention(q, k, v, pairs, dropout=p, seed=123)
        want = ref.dot_attention(q, k, v, pairs.index, pairs.indptr, 3 ** -0.5, p, 123)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        for a, e in zip(torch.autograd.grad(got.pow(2).sum(), (q, k, v)),
                        torch.autograd.grad(want.pow(2).sum(), (q, k, v))):
            torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
        assert torch.autograd.gradcheck(lambda *t: ops.dot_attention(*t, pairs, dropout=p, seed=7), (q, k, v))
        assert torch.autograd.gradcheck(  # the backward's own transpose
            lambda *t: ops.dot_attention(*t, ops.CSR(pairs.indptr, pairs.index), 0.7, dropout=p, seed=7), (q, k, v))
    assert not torch.equal(ops.dot_attention(q, k, v, pairs, dropout=0.4, seed=1),
                           ops.dot_attention(q, k, v, pairs, dropout=0.4, seed=2))
    torch.library.opcheck(torch.ops.fgp.dot_attention, tuple(t.detach().float() for t in (q, k, v)) + (
        pairs.index, pairs.indptr, 0.5, None, None, None, 0.3, 11))
    with pytest.raises(ValueError, match="attention dropout"):
        ops.dot_attention(q, k, v, pairs, dropout=1.0)
    with pytest.raises(RuntimeError, match="attention dropout"):
        torch.ops.fgp.dot_attention(q, k, v, pairs.index, pairs.indptr, 0.5, None, None, None, -0.1, 0)


def test_attention_dropout_drops_weights_unbiasedly_and_repeats():
    """With ``dropout = p`` every attention weight is either 0 or scaled by ``1 / (1 - p)``, about
    ``p`` of them are 0, and the same torch seed gives the same output."""
    graphs = [([0] * 9, [(i, j) for i in range(9) for j in range(i + 1, 9)], [0])] * 40  # 40 cliques: 81 pairs each
    b = batch_tensors(graphs)
    pairs, n = b.flow_pairs, b.num_nodes
    torch.manual_seed(0)
    q, k = torch.randn(n, 2, 9), torch.randn(n, 2, 9)
    # one-hot values read the weights out: out[r, h, c] = weight of key c (within its clique)
    pos = torch.arange(n) - b.node_ptr[b.graph]
    onehot = torch.nn.functional.one_hot(pos, 9).float()[:, None, :].expand(n, 2, 9).contiguous()
    plain = ops.dot_attention(q, k, onehot, pairs)
    p = 0.3
    torch.manual_seed(5)
    dropped = ops.dot_attention(q, k, onehot, pairs, dropout=p)
    zero = dropped == 0
    torch.testing.assert_close(dropped[~zero], plain[~zero] / (1 - p), rtol=1e-6, atol=1e-7)
    frac = zero.double().mean().item()   # 6,480 weights: binomial sd 0.006
    assert abs(frac - p) < 0.03, frac
    torch.manual_seed(5)
    assert torch.equal(ops.dot_attention(q, k, onehot, pairs, dropout=p), dropped)


def test_flowerformer_variant_options_are_checked_and_round_trip():
    with pytest.raises(ValueError, match="layout"):
        FlowerFormer(num_ops=5, hidden=8, heads=2, layout="stacked")
    with pytest.raises(ValueError, match="norm"):
        FlowerFormer(num_ops=5, hidden=8, heads=2, norm="group")
    with pytest.raises(ValueError, match="attention_dropout"):
        FlowerFormer(num_ops=5, hidden=8, heads=2, attention_dropout=1.0)
    model = FlowerFormer(num_ops=5, hidden=8, heads=2, layout="parallel", norm="batch", flow_relu=True,
                         attention_dropout=0.5)
    again = build_encoder("flowerformer", **model.config)
    assert again.config == model.config
    assert isinstance(again.blocks[0].norm_flow, torch.nn.BatchNorm1d)
    assert isinstance(FlowerFormer(num_ops=5, hidden=8, heads=2).blocks[0].norm_flow, torch.nn.LayerNorm)


def test_flowerformer_generic_backend_and_interface():
    b = batch_tensors([([0, 1, 2, 3], [(0, 1), (0, 2), (1, 3), (2, 3)], [0]), ([1], [], [0])])
    torch.manual_seed(0)
    model = build_encoder("flowerformer", num_ops=5, hidden=8, layers=1, heads=2).eval()
    fused = model.node_embeddings(b)
    generic = model.node_embeddings(b, backend=LevelBackend(b, fused=False))
    torch.testing.assert_close(fused, generic, rtol=1e-5, atol=1e-6)
    assert model(b).shape == (2, 8)
    assert build_encoder("flowerformer", **model.config).config == model.config
    # deterministic: same weights, same batch, same numbers
    assert torch.equal(model.node_embeddings(b), fused)
    with pytest.raises(ValueError, match="divide hidden"):
        FlowerFormer(num_ops=5, hidden=10, heads=4)
    no_attention = FlowerFormer(num_ops=5, hidden=8, layers=1, heads=2, attention=False)
    assert no_attention(b).shape == (2, 8)


def test_cycle_is_a_clear_error():
    with pytest.raises(RuntimeError, match="cycle"):
        collate([ArchGraph([0, 1, 2], [[0, 1, 2], [1, 2, 1]])])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_flow_pass_saturating_gates_stay_finite_and_match_reference(dtype):
    """Pre-activations far beyond exp's range (states scaled by 1e3): our clamped sigmoid/tanh
    saturate exactly like torch's, values and gradients stay finite."""
    b = collate([ArchGraph([0, 1, 2, 3], [[0, 0, 1, 2], [1, 2, 3, 3]]) for _ in range(30)])
    torch.manual_seed(3)
    step = FlowStep(24).to(dtype)
    plan = LevelPlan(b.schedule())
    h = (1e3 * torch.randn(b.num_nodes, 24, dtype=dtype)).requires_grad_(True)
    fused = ops.flow_pass(h, plan, *_flow_weights(step))
    w = _flow_weights(step)
    plain = ref.flow_pass(h, plan.level_ptr, plan.indptr, plan.index, plan.group_level_ptr, plan.group_perm,
                          plan.group_ptr, plan.group_src, w[0].reshape(-1), w[1].reshape(-1), w[2].reshape(1), *w[3:])
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fused, plain, **tol)
    (g,) = torch.autograd.grad(fused.sum(), h)
    assert torch.isfinite(g).all()


def test_nb201_successors_lie_in_one_forward_generation():
    """The FlowerFormer docstring's claim: on NAS-Bench-201 the authors' reversed pass (a node keeps
    only its successors of the earliest forward generation) equals ours (all successors), because
    no node has successors in two generations; on NB101-like cells it does not hold."""
    from fgp_ext import load

    def spread_nodes(batch):
        csr = batch.out_csr
        rows = torch.repeat_interleave(torch.arange(batch.num_nodes), csr.indptr.diff())
        succ_level = batch.level.index_select(0, csr.index)
        lo = torch.full((batch.num_nodes,), 1 << 30, dtype=succ_level.dtype).scatter_reduce(
            0, rows, succ_level, "amin")
        return int((succ_level != lo.index_select(0, rows)).sum())

    nb201 = load("nb201")
    assert spread_nodes(collate([nb201[i] for i in range(len(nb201))])) == 0
    # input -> a -> b -> output plus input -> output: the input's successors are in generations 1 and 3
    g = ArchGraph([0, 1, 1, 2], [[0, 1, 2, 0], [1, 2, 3, 3]])
    assert spread_nodes(collate([g])) == 1


# ---------------------------------------------------------------------------------------------
# The original code's reversed pass: successors of the earliest forward generation only
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(dag_batches())
def test_earliest_successor_csr_matches_plain_python(graphs):
    b = batch_tensors(graphs)
    level = b.level.tolist()
    indptr, index = b.out_csr.indptr.tolist(), b.out_csr.index.tolist()
    expected_ptr, expected_index = [0], []
    for u in range(b.num_nodes):
        succ = index[indptr[u]:indptr[u + 1]]
        lowest = min((level[v] for v in succ), default=None)
        expected_index += [v for v in succ if level[v] == lowest]
        expected_ptr.append(len(expected_index))
    pruned = b.earliest_successor_csr()
    assert pruned.indptr.tolist() == expected_ptr
    assert pruned.index.tolist() == expected_index


@settings(max_examples=10, deadline=None)
@given(dag_batches(max_graphs=5, max_nodes=9))
def test_earliest_reverse_pass_equals_the_originals_loop(graphs):
    """Level schedule on the pruned successor CSR == the masked loop over forward generations in
    reverse with last-update-wins (values and gradients), fused and generic."""
    b = batch_tensors(graphs)
    torch.manual_seed(1)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        model = FlowerFormer(num_ops=5, hidden=8, layers=2, heads=2, reverse_successors="earliest").to(dtype).eval()
        level = model.node_embeddings(b)
        masked = model.node_embeddings(b, backend=MaskedFlowBackend(b, reverse_successors="earliest"))
        generic = model.node_embeddings(b, backend=LevelBackend(b, fused=False, reverse_successors="earliest"))
        torch.testing.assert_close(level, masked, rtol=tol, atol=tol)
        torch.testing.assert_close(generic, masked, rtol=tol, atol=tol)
        _assert_same_parameter_grads(model, level, masked, rtol=tol, atol=tol * 10)


def test_earliest_and_all_successors_differ_exactly_where_a_node_feeds_two_generations():
    torch.manual_seed(0)
    weights = FlowerFormer(num_ops=3, hidden=8, layers=1, heads=2).eval().state_dict()
    models = {}
    for mode in ("all", "earliest"):
        models[mode] = FlowerFormer(num_ops=3, hidden=8, layers=1, heads=2, reverse_successors=mode).eval()
        models[mode].load_state_dict(weights)
    # a chain 0 -> 1 -> 2 -> 3 with a skip 0 -> 3: node 0 feeds generations 1 and 3
    skip = collate([ArchGraph([0, 1, 1, 2], [[0, 1, 2, 0], [1, 2, 3, 3]])])
    assert not torch.allclose(models["all"](skip), models["earliest"](skip))
    # a diamond: every node's successors lie in one generation, so the two passes agree
    diamond = collate([ArchGraph([0, 1, 1, 2], [[0, 0, 1, 2], [1, 2, 3, 3]])])
    torch.testing.assert_close(models["all"](diamond), models["earliest"](diamond), rtol=0, atol=0)
    assert torch.equal(diamond.earliest_successor_csr().index, diamond.out_csr.index)
    assert build_encoder("flowerformer", **models["earliest"].config).reverse_successors == "earliest"


def test_reverse_successors_bad_values_and_mismatched_backend():
    b = collate([ArchGraph([0, 1], [[0], [1]])])
    with pytest.raises(ValueError, match="reverse_successors"):
        FlowerFormer(num_ops=3, hidden=8, heads=2, reverse_successors="latest")
    with pytest.raises(ValueError, match="reverse_successors"):
        MaskedFlowBackend(b, reverse_successors="first")
    with pytest.raises(ValueError, match="reverse=True"):
        b.schedule(successors="earliest")
    with pytest.raises(ValueError, match="'all' or 'earliest'"):
        b.schedule(reverse=True, successors="some")
    model = FlowerFormer(num_ops=3, hidden=8, layers=1, heads=2, reverse_successors="earliest")
    with pytest.raises(ValueError, match="backend aggregates"):
        model.node_embeddings(b, backend=MaskedFlowBackend(b))


@pytest.mark.parametrize("bad", [2**40, 5, -1, 3])
def test_flow_pairs_refuses_a_topo_value_outside_the_graph(bad):
    """A user report: an out-of-range topo value used to be read as an edge id on the error path
    (SIGSEGV for 2**40, heap contents in the message for small values)."""
    with pytest.raises(RuntimeError, match="lies outside the graph's node range"):
        torch.ops.fgp.flow_pairs(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1]), torch.tensor([0, 3]),
                                 torch.tensor([0, 1, bad]))


def test_flow_pairs_refuses_a_repeated_topo_value():
    with pytest.raises(RuntimeError, match="listed twice"):
        torch.ops.fgp.flow_pairs(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1]), torch.tensor([0, 3]),
                                 torch.tensor([0, 1, 1]))


def test_flow_pass_reference_fallback_matches_the_kernels():
    """The plain-PyTorch forward/backward registered as the CUDA fallback (fgp_ext/ops/flow.py)
    computes what the CPU kernels compute, in the same argument layout."""
    b = collate([ArchGraph([0, 1, 2, 3], [[0, 0, 1, 2], [1, 2, 3, 3]]), ArchGraph([0, 1, 2], [[0, 1], [2, 2]])])
    torch.manual_seed(3)
    step = FlowStep(4).double()
    plan = LevelPlan(b.schedule())
    w = [t.detach() for t in _flow_weights(step)]
    args = (torch.randn(b.num_nodes, 4, dtype=torch.float64), plan.level_ptr, plan.indptr, plan.index,
            plan.group_level_ptr, plan.group_perm, plan.group_ptr, plan.group_src, w[0].reshape(-1),
            w[1].reshape(-1), w[2].reshape(1), *w[3:])
    saved = torch.ops.fgp._flow_pass_forward(*args)
    ref_out = ref.flow_pass_forward(*args)
    torch.testing.assert_close(ref_out[0], saved[0])
    grad = torch.randn_like(saved[0])
    for got, want in zip(ref.flow_pass_backward(grad, *ref_out, *args), torch.ops.fgp._flow_pass_backward(grad, *saved,
                                                                                                         *args)):
        torch.testing.assert_close(got, want.reshape(got.shape))


def test_level_schedule_and_flow_pairs_refuse_outputs_above_the_limit(monkeypatch):
    b = collate([ArchGraph([0, 1, 2], [[0, 1], [1, 2]])])
    indptr, index = b.in_csr.indptr, b.in_csr.index
    # a gapped but valid levelling with a huge last level: its per-level pointers are refused
    with pytest.raises(RuntimeError, match="level_schedule: the per-level pointers .* would need"):
        ops.level_schedule(CSR(indptr, index), torch.tensor([0, 1, 2**40]))
    monkeypatch.setenv("FGP_MAX_OUTPUT_BYTES", "16")  # less than the 3 x 3 pairs' index and perm
    with pytest.raises(RuntimeError, match="flow_pairs: .* would need"):
        ops.flow_pairs(CSR(indptr, index), b.node_ptr, torch.arange(3))
