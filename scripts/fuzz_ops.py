"""Fuzz every op registered under ``torch.ops.fgp`` with random, partly valid calls.

The op list and each argument's type come from the dispatcher's schemas, so a new op is fuzzed
without editing this file. Each call starts from a valid random batch of DAGs (CSRs, node
pointers, levels, level schedules, features of fitting shapes, picked by argument name) and then
breaks one or two arguments: another dtype, a wrong length or rank, a non-contiguous view, an empty
tensor, an index or pointer set to an extreme value (-1, N, 2^31, 2^40, ...), a missing optional,
an extreme integer or float. An op may raise (that is the point); it may not crash, hang or ask for
an absurd amount of memory.

Calls run in worker subprocesses (a batch of calls each), so a dead process is seen and its seed
printed; the parent fails when any worker dies, hangs or reports an unexpected exception type.

    python scripts/fuzz_ops.py --calls 1000000 --workers 2          # a long run
    python scripts/fuzz_ops.py --worker --seed 17 --calls 5000 --trace   # replay one batch, printing each call
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field

# Exceptions an op may raise on bad input. Anything else (or a dead process) is a finding.
EXPECTED = (RuntimeError, ValueError, IndexError, TypeError, NotImplementedError)
EXTREME_INTS = [-1, -(2**31), 2**31, 2**31 - 1, 2**40, 2**62, -(2**62)]
EXTREME_FLOATS = [0.0, -1.0, 1.0, 1.5, 1e-300, 1e300, float("nan"), float("inf"), -float("inf")]
# Address-space cap of a worker: an op that asks for an absurd allocation gets an allocation error
# instead of taking the machine's memory (a finding only if it then crashes). Under AddressSanitizer
# (scripts/sanitize.sh) its max_allocation_size_mb plays that part.
WORKER_ADDRESS_SPACE = 12 * 2**30


@dataclass
class World:
    """A valid random batch and the tensors an op argument of a given name would plausibly take."""

    tensors: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)
    ints: dict = field(default_factory=dict)
    num_nodes: int = 0
    num_edges: int = 0


def make_world(rng, torch, fgp_ops):
    """A random valid batch of small DAGs with every derived structure the ops take."""
    from fgp_ext import ArchGraph, collate

    graphs = []
    for _ in range(int(rng.integers(1, 5))):
        n = int(rng.integers(1, 8))
        perm = rng.permutation(n)
        edges = [(int(perm[i]), int(perm[j])) for i in range(n) for j in range(i + 1, n) if rng.random() < 0.35]
        ops = rng.integers(0, 5, size=n).tolist()
        arr = (torch.tensor(edges, dtype=torch.int64).T.reshape(2, -1) if edges
               else torch.zeros(2, 0, dtype=torch.int64))
        graphs.append(ArchGraph(ops, arr.numpy()))
    b = collate(graphs)
    n, e = b.num_nodes, b.in_csr.index.numel()
    f = int(rng.choice([1, 2, 3, 4, 8]))
    heads, dim, k = int(rng.choice([1, 2])), int(rng.choice([1, 2, 3])), int(rng.choice([3, 4, 7]))
    dtype = torch.float64 if rng.random() < 0.3 else torch.float32
    randn = lambda *shape: torch.randn(*shape, dtype=dtype)  # noqa: E731
    sched = fgp_ops.level_schedule(b.in_csr, b.level)
    w = World(num_nodes=n, num_edges=e)
    t = w.tensors
    t.update(indptr=b.in_csr.indptr, index=b.in_csr.index, node_ptr=b.node_ptr, level=b.level, op=b.op,
             is_source=b.is_source, topo=torch.argsort(b.graph * (n + 1) + b.level, stable=True),
             ids=torch.from_numpy(rng.integers(0, b.num_graphs, size=int(rng.integers(0, 4)))).long(),
             in_indptr=b.in_csr.indptr, in_index=b.in_csr.index, in_perm=b.in_csr.perm,
             out_indptr=b.out_csr.indptr, out_index=b.out_csr.index, out_perm=b.out_csr.perm,
             t_indptr=b.out_csr.indptr, t_index=b.out_csr.index, t_perm=b.out_csr.perm,
             level_ptr=sched.level_ptr, group_level_ptr=sched.group_level_ptr, group_perm=sched.group_perm,
             group_ptr=sched.group_ptr, group_src=sched.group_src,
             # features, by the shapes the ops document
             x=randn(n, f), src=randn(e, f), weight=randn(e), a=randn(n, f), b=randn(n, f), logit=randn(e, heads),
             q=randn(n, heads, dim), k=randn(n, heads, dim), v=randn(n, heads, dim), out=randn(n, heads, dim),
             gate_dst=randn(n, f), gate_src=randn(n, f), value=randn(n, f), h0=randn(n, f), grad=randn(n, f),
             att_dst=randn(f), att_src=randn(f), att_bias=randn(1), w_ih=randn(3 * f, f), w_hh=randn(3 * f, f),
             b_ih=randn(3 * f), b_hh=randn(3 * f), h=randn(n, f), msg=randn(n, f), rz=randn(n, 2 * f),
             n=randn(n, f), gh_n=randn(n, f), r=randn(k), P=randn(5, k), W=randn(2 * k, k))
    # Arguments whose plausible shape depends on the op family (matched by substring of the name).
    w.overrides = {
        "attention": dict(x=randn(n, heads, dim), grad=randn(n, heads, dim), out=randn(n, heads, dim)),
        "gated": dict(out=randn(n, f)),
        "flow_pass": dict(indptr=sched.csr.indptr, index=sched.csr.index, logit=randn(e)),
    }
    w.ints.update(num_cols=n, seed=int(rng.integers(0, 2**62)))
    return w


def random_tensor(rng, torch, world):
    """A tensor unrelated to the batch: any dtype, rank 0-3, small, sometimes extreme values."""
    rank = int(rng.integers(0, 4))
    shape = [int(rng.integers(0, 6)) for _ in range(rank)]
    dtype = [torch.int64, torch.float32, torch.float64, torch.int32, torch.bool][int(rng.integers(0, 5))]
    if dtype.is_floating_point:
        return torch.randn(shape, dtype=dtype)
    hi = max(world.num_nodes, 1) + 2
    return torch.randint(-2, hi, shape).to(dtype)


def mutate_tensor(rng, torch, t, world):
    """One way of breaking a tensor argument."""
    choice = int(rng.integers(0, 9))
    if choice == 0:  # another dtype
        return t.to([torch.int64, torch.float32, torch.float64, torch.int32, torch.bool][int(rng.integers(0, 5))])
    if choice == 1 and t.dim() > 0 and t.shape[0] > 0:  # one row short
        return t[:-1]
    if choice == 2:  # one row long
        return torch.cat([t, t[:1]]) if t.dim() > 0 and t.shape[0] > 0 else t.reshape(-1)[:0]
    if choice == 3:  # another rank
        return t.unsqueeze(-1) if rng.random() < 0.5 or t.dim() == 0 else t.reshape(-1)
    if choice == 4 and t.dim() > 0:  # a non-contiguous view of the same values
        return torch.repeat_interleave(t, 2, dim=0)[::2]
    if choice == 5:  # empty
        return t[:0] if t.dim() > 0 else t.reshape(1)[:0]
    if t.numel() == 0:
        return t
    flat = t.clone().reshape(-1)
    pos = int(rng.integers(0, flat.numel()))
    if flat.dtype.is_floating_point:
        value = float(rng.choice(EXTREME_FLOATS))
        if flat.dtype == torch.float32 and abs(value) > 3e38 and value == value and abs(value) != float("inf"):
            value = 3e38 if value > 0 else -3e38  # the largest finite float32 magnitude we use
        flat[pos] = value
    elif flat.dtype == torch.bool:
        flat[pos] = not bool(flat[pos])
    else:  # an index, pointer or id set to an extreme value, or shuffled
        values = EXTREME_INTS + [world.num_nodes, world.num_edges, world.num_nodes + 1, -2]
        if choice == 6 and flat.numel() > 1:
            flat = flat[torch.randperm(flat.numel())]
        else:
            v = int(values[int(rng.integers(0, len(values)))])
            info = torch.iinfo(flat.dtype)
            flat[pos] = max(info.min, min(info.max, v))
    return flat.reshape(t.shape)


def build_call(rng, torch, schema, world):
    """Arguments for one call of ``schema``: valid by name where the world has them, then broken."""
    args = []
    tensors = dict(world.tensors)
    for family, values in world.overrides.items():
        if family in schema.name:
            tensors.update(values)
    for a in schema.arguments:
        kind = str(a.type)
        name = a.name
        if "Tensor" in kind:
            value = tensors.get(name)
            if value is None or rng.random() < 0.05:
                value = random_tensor(rng, torch, world)
            if kind.endswith("?") and rng.random() < 0.3:
                value = None
        elif kind == "int":
            value = world.ints.get(name, int(rng.integers(0, 5)))
        elif kind == "float":
            value = {"alpha": 0.5, "scale": 0.7, "p": 0.2, "eps": 1e-6}.get(name, 0.5)
        elif kind == "str":
            value = ["auto", "graph", "level"][int(rng.integers(0, 3))]
        elif kind == "bool":
            value = bool(rng.random() < 0.5)
        else:
            raise SystemExit(f"fuzz_ops: no generator for argument type {kind} of {schema.name}")
        args.append(value)
    # break one or two arguments (sometimes none: valid calls must succeed too)
    for _ in range(int(rng.choice([0, 1, 1, 2]))):
        i = int(rng.integers(0, len(args)))
        kind = str(schema.arguments[i].type)
        if isinstance(args[i], torch.Tensor):
            args[i] = mutate_tensor(rng, torch, args[i], world)
        elif kind == "int":
            args[i] = int(rng.choice(EXTREME_INTS + [0, world.num_nodes - 1]))
        elif kind == "float":
            args[i] = float(rng.choice(EXTREME_FLOATS))
        elif kind == "str":
            args[i] = "bogus"
        elif args[i] is None and "Tensor" in kind:
            args[i] = random_tensor(rng, torch, world)
    return args


def describe(args, torch) -> str:
    parts = []
    for a in args:
        if isinstance(a, torch.Tensor):
            parts.append(f"tensor({a.tolist() if a.numel() <= 24 else '...'}, dtype={a.dtype}, shape={tuple(a.shape)}, "
                         f"stride={a.stride()})")
        else:
            parts.append(repr(a))
    return ", ".join(parts)


def op_schemas(torch):
    """Every op of the fgp namespace with its schema, read from the dispatcher."""
    names = sorted(n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("fgp::"))
    return [(name, getattr(torch.ops.fgp, name).default._schema) for name in names]


def run_worker(seed: int, calls: int, trace: bool) -> dict:
    """Run ``calls`` random calls in this process; return counts per op and outcome."""
    if "asan" not in os.environ.get("LD_PRELOAD", ""):  # ASan reserves terabytes of shadow address space
        resource.setrlimit(resource.RLIMIT_AS, (WORKER_ADDRESS_SPACE, WORKER_ADDRESS_SPACE))
    import numpy as np
    import torch

    import fgp_ext  # noqa: F401  (registers the ops)
    from fgp_ext import ops as fgp_ops

    torch.set_num_threads(int(os.environ.get("FGP_FUZZ_THREADS", "2")))
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    schemas = op_schemas(torch)
    stats = {"calls": 0, "ok": 0, "raised": 0, "unexpected": [], "per_op": {name: [0, 0] for name, _ in schemas}}
    world = None
    for i in range(calls):
        if world is None or i % 50 == 0:
            world = make_world(rng, torch, fgp_ops)
        name, schema = schemas[int(rng.integers(0, len(schemas)))]
        args = build_call(rng, torch, schema, world)
        if trace:
            print(f"[{seed}:{i}] fgp::{name}({describe(args, torch)})", file=sys.stderr, flush=True)
        stats["calls"] += 1
        try:
            getattr(torch.ops.fgp, name)(*args)
            stats["ok"] += 1
            stats["per_op"][name][0] += 1
        except EXPECTED:
            stats["raised"] += 1
            stats["per_op"][name][1] += 1
        except Exception as err:  # noqa: BLE001 - any other type is a finding
            stats["unexpected"].append(f"fgp::{name}: {type(err).__name__}: {str(err)[:200]}")
    return stats


def run_parallel(calls: int, workers: int, batch: int, seed: int, timeout: float, log=print,
                 worker_script: str | None = None) -> dict:
    """Split ``calls`` into worker subprocesses of ``batch`` calls, ``workers`` at a time
    (``worker_script``: the file the workers run, this one by default)."""
    script = worker_script or os.path.abspath(__file__)
    seeds = list(range(seed, seed + max(1, -(-calls // batch))))
    total = {"calls": 0, "ok": 0, "raised": 0, "unexpected": [], "dead": [], "workers": len(seeds), "per_op": {}}
    pending, running = list(seeds), []
    start = time.time()
    while pending or running:
        while pending and len(running) < workers:
            s = pending.pop(0)
            n = min(batch, calls - (s - seed) * batch)
            cmd = [sys.executable, script, "--worker", "--seed", str(s), "--calls", str(n)]
            running.append((s, n, time.time(), subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                                text=True)))
        for item in list(running):
            s, n, t0, proc = item
            if proc.poll() is None and time.time() - t0 < timeout:
                continue
            if proc.poll() is None:
                proc.kill()
            out, err = proc.communicate()
            running.remove(item)
            replay = f"python scripts/fuzz_ops.py --worker --seed {s} --calls {n} --trace"
            if proc.returncode != 0:
                why = (f"killed after {timeout:.0f} s (hang?)" if time.time() - t0 >= timeout
                       else f"exit code {proc.returncode}")
                total["dead"].append(f"worker seed {s}: {why}; replay: {replay}\n{err[-2000:]}")
                log(f"fuzz_ops: DEAD worker seed {s} ({why}); replay: {replay}")
                continue
            stats = json.loads(out.strip().splitlines()[-1])
            for key in ("calls", "ok", "raised"):
                total[key] += stats[key]
            for name, (ok, raised) in stats["per_op"].items():
                counts = total["per_op"].setdefault(name, [0, 0])
                counts[0] += ok
                counts[1] += raised
            total["unexpected"] += [f"seed {s}: {u}" for u in stats["unexpected"]]
        time.sleep(0.05)
    total["seconds"] = round(time.time() - start, 1)
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=10_000, help="calls per worker subprocess")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds before a worker counts as hung")
    ap.add_argument("--worker", action="store_true", help="run one batch in this process (internal)")
    ap.add_argument("--trace", action="store_true", help="with --worker: print every call before making it")
    args = ap.parse_args()
    if args.calls < 1 or args.workers < 1 or args.batch < 1:
        ap.error("--calls, --workers and --batch must be >= 1")
    if args.worker:
        print(json.dumps(run_worker(args.seed, args.calls, args.trace)), flush=True)
        return 0
    total = run_parallel(args.calls, args.workers, args.batch, args.seed, args.timeout)
    print(f"fuzz_ops: {total['calls']} calls in {total['workers']} workers, {total['seconds']} s: "
          f"{total['ok']} succeeded, {total['raised']} raised a clear error, {len(total['unexpected'])} unexpected "
          f"exception types, {len(total['dead'])} dead processes")
    for name, (ok, raised) in sorted(total["per_op"].items()):
        print(f"  fgp::{name}: {ok} succeeded, {raised} raised")
    for line in total["unexpected"][:20] + total["dead"]:
        print("  " + line)
    return 1 if total["dead"] or total["unexpected"] else 0


if __name__ == "__main__":
    sys.exit(main())
