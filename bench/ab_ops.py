"""A/B timing of every compiled op between two builds of fgp_ext (two Python environments).

    python bench/ab_ops.py --a /work/venv_before/bin/python --b .venv/bin/python --rounds 3

Each round runs one process per build, alternately (A B A B ...), and each process times every op
on the same inputs (all 15,625 NAS-Bench-201 cells collated, F = 64; best of --repeats calls, one
thread). The result per op is the best time over all rounds of each build: interference from the
rest of a shared machine only ever adds time, so the minimum is the most repeatable estimate, and
alternating the builds spreads slow phases of the machine over both. The ops are called through
``torch.ops.fgp`` under the names of either build (the internal ops were renamed by the stable-ABI
port), so the two builds run the same kernels on the same data.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

WORKER = r'''
import json, sys, time
import torch
import fgp_ext
from fgp_ext.sparse import CSR
from fgp_ext.encoders.flowerformer import FlowStep
from fgp_ext.levels import LevelPlan
torch.set_num_threads(1)
torch.manual_seed(0)
repeats = int(sys.argv[1])
ops = torch.ops.fgp
def op(*names):
    for n in names:
        if hasattr(ops, n):
            return getattr(ops, n)
    raise AttributeError(names)
ds = fgp_ext.load("nb201")
b = fgp_ext.collate(ds.graphs)
n, F, H, D = b.num_nodes, 64, 4, 16
ip, ix = b.in_csr.indptr, b.in_csr.index
ti, tx, tp = b.out_csr.indptr, b.out_csr.index, b.out_csr.perm
x = torch.randn(n, F); w = torch.randn(ix.numel()); src = x.index_select(0, ix)
q, k, v = (torch.randn(n, H, D) for _ in range(3)); logit = torch.randn(ix.numel(), H)
pairs = b.flow_pairs
step = FlowStep(F)
g = step.gru
weights = [t.detach() for t in (step.att_dst.weight.reshape(-1), step.att_src.weight.reshape(-1),
           step.att_src.bias.reshape(1), g.weight_ih, g.weight_hh, g.bias_ih, g.bias_hh)]
plan = LevelPlan(b.schedule())
fp_args = (x, plan.level_ptr, plan.indptr, plan.index, plan.group_level_ptr, plan.group_perm, plan.group_ptr,
           plan.group_src, *weights)
fwd = op("_flow_pass_forward", "flow_pass_train")
def flow_forward():
    return fwd(*fp_args) if fwd._qualified_op_name.endswith("_flow_pass_forward") else fwd(list(fp_args))
saved = list(flow_forward())
bwd = op("_flow_pass_backward", "flow_pass_backward")
def flow_backward():
    grad = torch.ones_like(x)
    if "_flow_pass_backward" in bwd._qualified_op_name:
        return bwd(grad, *saved, *fp_args)
    return bwd(grad, saved, list(fp_args))
sel = op("select_graphs")
ids = torch.randperm(b.num_graphs)[:1024]
sel_args = [b.node_ptr, ids, b.op, b.level, b.is_source, *b.in_csr[:3], *b.out_csr[:3]]
def select():
    try:
        return sel(*sel_args)
    except (TypeError, RuntimeError):
        return sel(sel_args)
r, P, W = torch.randn(7), torch.randn(ds.space.num_ops, 7), torch.randn(14, 7)
out_att = ops.gather_attention(v, logit, CSR(ip, ix), ti, tx, tp)
out_dot = ops.dot_attention(q, k, v, pairs.index, pairs.indptr, 0.25, pairs.indptr, pairs.index, pairs.perm, 0.0, 0)
gd, gs, gv = (torch.randn(n, F) for _ in range(3))
und = b.undirected_csr
out_gated = ops.gated_aggregate(gd, gs, gv, und.index, und.indptr, 1e-6)
calls = {
    "segment_sum_csr": lambda: ops.segment_sum_csr(src, ip),
    "gather_segment_sum": lambda: ops.gather_segment_sum(x, CSR(ip, ix)),
    "gather_segment_sum (weighted)": lambda: ops.gather_segment_sum(x, CSR(ip, ix), w),
    "edge_dot": lambda: ops.edge_dot(x, x, CSR(ip, ix)),
    "csr_transpose": lambda: ops.csr_transpose(CSR(ip, ix), n),
    "topo_levels": lambda: ops.topo_levels(CSR(ip, ix), b.node_ptr),
    "flow_surrogate (graph)": lambda: ops.flow_surrogate(b.op, CSR(ip, ix), b.node_ptr, b.is_source, r, P, W, 0.5, "graph", ti, tx),
    "flow_surrogate (level)": lambda: ops.flow_surrogate(b.op, CSR(ip, ix), b.node_ptr, b.is_source, r, P, W, 0.5, "level", ti, tx),
    "select_graphs (1024 of 15625)": select,
    "level_schedule": lambda: ops.level_schedule(CSR(ip, ix), b.level),
    "flow_pairs": lambda: ops.flow_pairs(CSR(ip, ix), b.node_ptr, torch.arange(n)),
    "gather_attention": lambda: ops.gather_attention(v, logit, CSR(ip, ix), ti, tx, tp),
    "gather_attention backward": lambda: op("_gather_attention_backward", "gather_attention_backward")(
        out_att, v, logit, ix, ip, out_att, ti, tx, tp),
    "dot_attention": lambda: ops.dot_attention(q, k, v, pairs.index, pairs.indptr, 0.25, pairs.indptr, pairs.index,
                                               pairs.perm, 0.0, 0),
    "dot_attention (dropout 0.5)": lambda: ops.dot_attention(q, k, v, pairs.index, pairs.indptr, 0.25, pairs.indptr,
                                                             pairs.index, pairs.perm, 0.5, 7),
    "dot_attention backward": lambda: op("_dot_attention_backward", "dot_attention_backward")(
        out_dot, q, k, v, pairs.index, pairs.indptr, out_dot, 0.25, pairs.indptr, pairs.index, pairs.perm, 0.0, 0),
    "gated_aggregate": lambda: ops.gated_aggregate(gd, gs, gv, und.index, und.indptr, 1e-6),
    "gated_aggregate backward": lambda: op("_gated_aggregate_backward", "gated_aggregate_backward")(
        out_gated, gd, gs, gv, und.index, und.indptr, out_gated, 1e-6, und.indptr, und.index),
    "dropout": lambda: ops.dropout(x, 0.5, 3),
    "flow_pass forward": flow_forward,
    "flow_pass backward": flow_backward,
}
result = {}
for name, f in calls.items():
    f()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter(); f(); best = min(best, time.perf_counter() - t0)
    result[name] = best
print(json.dumps(result))
'''


def run(python: str, repeats: int) -> dict:
    python = os.path.abspath(python) if os.sep in python else python
    out = subprocess.run([python, "-P", "-c", WORKER, str(repeats)], capture_output=True, text=True, cwd="/tmp")
    if out.returncode != 0:
        raise SystemExit(f"{python} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, help="python of build A (before)")
    ap.add_argument("--b", required=True, help="python of build B (after)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", help="write the markdown table here")
    args = ap.parse_args()
    best = {"a": {}, "b": {}}
    for r in range(args.rounds):
        for side in ("a", "b"):
            for name, t in run(getattr(args, side), args.repeats).items():
                best[side][name] = min(t, best[side].get(name, float("inf")))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    lines = ["| op (NB201, 125k nodes, F=64, 1 thread) | A: before | B: after | B / A |", "|---|---:|---:|---:|"]
    ratios = []
    for name in best["a"]:
        a, b = best["a"][name], best["b"][name]
        ratios.append(b / a)
        flag = " **(> 1.05)**" if b / a > 1.05 else ""
        lines.append(f"| {name} | {a * 1e3:.3f} ms | {b * 1e3:.3f} ms | {b / a:.3f}{flag} |")
    ratios.sort()
    lines.append(f"\n{len(ratios)} ops; B / A median {ratios[len(ratios) // 2]:.3f}, min {ratios[0]:.3f}, "
                 f"max {ratios[-1]:.3f}; {sum(r > 1.05 for r in ratios)} above 1.05.")
    text = "\n".join(lines)
    print(text)
    if args.out:
        from fgp_ext import _io

        _io.write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
