"""Flow-aware encoder benchmarks: FlowerFormer on the level schedule vs the same model written the
usual way (per-generation masks over all edges, dense padded attention), and vs our GatedGCN and
NAR-Former (with and without its consistency augmentation) in the training-epoch workload.

* Training epoch on all NB201 cells (batch 128 and 1024, 3 layers, hidden 64, Adam step, the
  batch built per step from a pre-collated dataset as in training: ``select`` + schedule + pairs).
* The same epoch (batch 128) with the original's layer options (``ORIGINAL_LAYER``), fused vs
  masked.
* Collate cost per epoch (our schedule/pairs/plans vs the masked peer's dense masks).
* Scaling: forward+backward of the flow passes (no global attention, whose flow-pair relation is
  quadratic) on random DAGs of 10^3-10^5 nodes, depth 10-1000, and a ResNet-like chain; the
  median is reported per node so flat scaling shows as a constant.

Run: ``FGP_BENCH_THREADS=1,2 .venv/bin/python -m pytest bench/test_bench_flow_encoder.py --benchmark-only -q``
"""
from __future__ import annotations

import pytest
import torch
from benchutil import record, run_bench, training_epoch
from test_bench_surrogate import random_dag_batch

from fgp_ext import batch_from_arrays
from fgp_ext.encoders import FlowerFormer, GatedGCN, NARFormer, segment_mean
from fgp_ext.encoders.flowerformer import LevelBackend
from fgp_ext.encoders.flowerformer import MaskedFlowBackend

HIDDEN, LAYERS, HEADS = 64, 3, 4


def _group(what, threads):
    return f"{what} | cpu {threads} thread(s)"


def _model(name):
    torch.manual_seed(0)
    if name == "gatedgcn":
        return GatedGCN(7, hidden=HIDDEN, layers=LAYERS)
    if name == "narformer":
        return NARFormer(7, hidden=HIDDEN, layers=LAYERS, heads=HEADS)
    if name == "narformer-noaug":
        return NARFormer(7, hidden=HIDDEN, layers=LAYERS, heads=HEADS, consistency=0.0)
    return FlowerFormer(7, hidden=HIDDEN, layers=LAYERS, heads=HEADS)


EPOCH_CONTENDERS = {
    "FlowerFormer, level schedule + fused ops": ("ours", "flowerformer", "fused"),
    "FlowerFormer, level schedule, Python step per generation": ("ours-alt", "flowerformer", "generic"),
    "FlowerFormer, masked (per-generation masks, dense attention)": ("builtin", "flowerformer", "masked"),
    "GatedGCN (ours, same depth and width)": ("baseline", "gatedgcn", None),
    # NAR-Former: same width and heads, LAYERS stage-1 blocks + fusion stages 4, 2, 1; with its
    # consistency loss (one augmented order per graph and step: two passes) and without
    "NAR-Former (consistency loss, 1 augmented order)": ("baseline", "narformer", None),
    "NAR-Former (no augmentation)": ("baseline", "narformer-noaug", None),
}


def _backend(kind, batch):
    if kind == "fused":
        return LevelBackend(batch)
    if kind == "generic":
        return LevelBackend(batch, fused=False)
    return MaskedFlowBackend(batch)


@pytest.mark.parametrize("batch_size", [128, 1024])
@pytest.mark.parametrize("contender", list(EPOCH_CONTENDERS))
def test_training_epoch_nb201(benchmark, cpu_threads, nb201_batch, batch_size, contender):
    role, name, kind = EPOCH_CONTENDERS[contender]
    if kind == "generic" and batch_size == 1024:
        pytest.skip("the generic path is measured at batch 128 only")
    benchmark.group = _group(f"training epoch | NB201 all {nb201_batch.num_graphs} cells, batch {batch_size}, "
                             f"{LAYERS} layers, hidden {HIDDEN}", cpu_threads)
    model = _model(name)
    if kind is None:
        forward = model
    else:
        def forward(b):
            return segment_mean(model.node_embeddings(b, backend=_backend(kind, b)), b.node_ptr)
    epoch = training_epoch(nb201_batch, model, batch_size, HIDDEN, forward)

    first = epoch()
    assert first == first and first > 0  # finite
    run_bench(benchmark, epoch, min_rounds=1, max_rounds=2, target=1.0)
    record(benchmark, role=role, contender=contender)


ORIGINAL_LAYER = dict(layout="parallel", norm="batch", flow_relu=True, attention_dropout=0.5)
ORIGINAL_CONTENDERS = {
    "FlowerFormer, original's layer, level schedule + fused ops": ("ours", "fused"),
    "FlowerFormer, original's layer, masked (dense attention, dropout on [B, H, n, n])": ("builtin", "masked"),
}


@pytest.mark.parametrize("contender", list(ORIGINAL_CONTENDERS))
def test_training_epoch_nb201_original_layer(benchmark, cpu_threads, nb201_batch, contender):
    """The original's layer (flow and attention side by side, batch norm, flow ReLU, attention
    dropout 0.5 fused into ``dot_attention``), batch 128: what the quality runs train."""
    role, kind = ORIGINAL_CONTENDERS[contender]
    benchmark.group = _group(f"training epoch | NB201 all {nb201_batch.num_graphs} cells, batch 128, {LAYERS} "
                             f"layers, hidden {HIDDEN}, original's layer", cpu_threads)
    torch.manual_seed(0)
    model = FlowerFormer(7, hidden=HIDDEN, layers=LAYERS, heads=HEADS, dropout=0.0, **ORIGINAL_LAYER)

    def forward(b):
        return segment_mean(model.node_embeddings(b, backend=_backend(kind, b)), b.node_ptr)

    epoch = training_epoch(nb201_batch, model, 128, HIDDEN, forward)
    first = epoch()
    assert first == first and first > 0  # finite
    run_bench(benchmark, epoch, min_rounds=1, max_rounds=2, target=1.0)
    record(benchmark, role=role, contender=contender)


COLLATE_CONTENDERS = {
    "ours: select + level schedules + flow pairs + plans": ("ours", "fused"),
    "masked peer: select + dense [depth, E] masks + reachability": ("builtin", "masked"),
    "select only (shared by both)": ("baseline", None),
}


@pytest.mark.parametrize("contender", list(COLLATE_CONTENDERS))
def test_collate_per_epoch_nb201(benchmark, nb201_batch, contender):
    role, kind = COLLATE_CONTENDERS[contender]
    benchmark.group = "collate per training epoch | NB201 all cells, batch 128 | cpu 1 thread(s)"
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    chunks = list(torch.randperm(nb201_batch.num_graphs, generator=torch.Generator().manual_seed(0)).split(128))

    def epoch():
        for ids in chunks:
            b = nb201_batch.select(ids)
            if kind is not None:
                _backend(kind, b)

    try:
        run_bench(benchmark, epoch, min_rounds=3, max_rounds=10, target=1.0)
    finally:
        torch.set_num_threads(old)
    record(benchmark, role=role, contender=contender)


# ----------------------------------------------------------------------------------------------
# Scaling on large DAGs (flow passes + feed-forward, no global attention)
# ----------------------------------------------------------------------------------------------
def resnet_chain(blocks: int):
    """A ResNet-like chain: per block conv -> conv -> add, with the skip edge block input -> add."""
    n = 3 * blocks + 1
    src, dst = [], []
    for b in range(blocks):
        i = 3 * b
        src += [i, i + 1, i + 2, i]
        dst += [i + 1, i + 2, i + 3, i + 3]
    op = torch.arange(n) % 7
    return batch_from_arrays(op, torch.tensor([src, dst]), torch.tensor([0, n]))


SCALING = {  # name: builder
    "random DAGs 1e3 nodes, depth 10": lambda: random_dag_batch(1_000, 10, 4, 3),
    "random DAGs 1e4 nodes, depth 100": lambda: random_dag_batch(10_000, 100, 4, 3),
    "random DAGs 1e5 nodes, depth 10": lambda: random_dag_batch(100_000, 10, 4, 3),
    "random DAGs 1e5 nodes, depth 1000": lambda: random_dag_batch(100_000, 1000, 4, 3),
    "ResNet-like chain, 3334 blocks (1e4 nodes, depth 1e4)": lambda: resnet_chain(3334),
}
_GRAPHS: dict = {}


def _scaling_batch(name):
    if name not in _GRAPHS:
        b = SCALING[name]()
        _GRAPHS[name] = b
    return _GRAPHS[name]


@pytest.mark.parametrize("workload", list(SCALING))
@pytest.mark.parametrize("contender", ["FlowerFormer-noattn, level schedule + fused ops",
                                       "FlowerFormer-noattn, masked"])
def test_flow_scaling(benchmark, cpu_threads, workload, contender):
    masked = contender.endswith("masked")
    b = _scaling_batch(workload)
    if masked and (b.num_nodes > 10_000 or int(b.level.max()) > 100):
        pytest.skip("the masked peer is O(depth x batch): measured on the small workloads only")
    if cpu_threads != 1 and "1e3" not in workload and "1e5 nodes, depth 10" not in workload:
        pytest.skip("scaling measured on 1 thread (plus two workloads on 2)")
    benchmark.group = _group(f"flow passes fwd+bwd | {workload} ({b.num_nodes} nodes, {b.num_edges} edges, "
                             f"depth {int(b.level.max()) + 1})", cpu_threads)
    torch.manual_seed(0)
    model = FlowerFormer(7, hidden=HIDDEN, layers=1, heads=HEADS, attention=False, dropout=0.0)

    def step():
        backend = MaskedFlowBackend(b) if masked else LevelBackend(b)
        out = model.node_embeddings(b, backend=backend)
        out.pow(2).mean().backward()
        return out

    out = step()
    assert torch.isfinite(out).all()
    run_bench(benchmark, step, min_rounds=1, max_rounds=5, target=2.0)
    record(benchmark, role="ours" if not masked else "builtin", contender=contender, per=b.num_nodes, unit="node")
