"""Write a development file of a generic search space with several latency columns: chains of
MBConv blocks (a MobileNetV3 / once-for-all-like space), as JSON Lines for ``fgp latency-train`` /
``fgp latency-adapt``.

**The ``lat_*`` columns are synthetic** except ``lat_thiscpu_torch`` (``--measure``): they come from
the analytic per-device cost model below, not from hardware. Each architecture is::

    {"name": "mb-0001", "ops": ["stem", "mbconv_e4_k5", ..., "head"], "edges": [[0, 1], [1, 2], ...],
     "resolution": 128, "flops": 93.1, "params": 3.21, "lat_gpu_b1": 1.93, ...}

Space: input resolution 96/112/128; a 3x3 stride-2 stem (16 channels) and a fixed MBConv(e1, k3);
five stages of widths 24, 40, 80, 112, 160 (strides 2, 2, 2, 1, 2), each of 2-4 blocks, each block
an inverted bottleneck with kernel 3/5/7 and expansion 3/4/6 (op name ``mbconv_e<e>_k<k>``; the
first block of a stage strides, the others have a residual); a head (1x1 conv to 960, pooling, FC
960 -> 1280 -> 1000). ``flops`` is the number of multiply-accumulates x 2, in millions; ``params``
in millions. The op names do not say which stage a block is in: the graph position does.

Cost model (per layer: stem conv, 1x1 expand, depthwise kxk, 1x1 project, head convs / FCs)::

    t_layer = max(MACs * batch / (peak * eff[kind] * keff[k]), bytes / bandwidth) + overhead
    latency = (sum of t_layer + fixed) * lognormal(noise), optionally rounded (a phone timer)

with ``bytes`` = (input + output activations) * batch + weights, at the device's bytes per value.
The eight synthetic devices differ in the way that makes latency hard to predict from FLOPs:

* ``gpu_b1``: a server GPU at batch 1: launch-bound (30 us per layer), so the depth counts more
  than the FLOPs; depthwise convolutions run at 4% of peak.
* ``gpu_b64``: the same GPU at batch 64: compute- and memory-bound, depthwise layers memory-bound.
* ``cpu_server``: a multi-core x86 CPU at batch 1 (larger kernels lose efficiency).
* ``cpu_arm``: a single-board ARM CPU: compute-bound, slow memory.
* ``phone_cpu``: a phone CPU, timed in whole milliseconds (HELP's phone columns are) and noisy (8%).
* ``phone_npu``: a phone NPU (int8): fast 1x1 convolutions, but 7x7 depthwise layers are not
  supported and fall back to the CPU (the layer's CPU time plus 0.4 ms of transfer each).
* ``edge_tpu``: an int8 accelerator with 2.5 MB of on-chip weight memory: the weights past it are
  streamed from off-chip memory for every inference (a cliff in params, not in FLOPs).
* ``fpga``: a dataflow design whose depthwise engine handles k x k windows in ceil(k*k/9) passes
  and whose layers each cost a pipeline fill.

``--measure`` adds ``lat_thiscpu_torch``: the real latency of each network, built in torch and run
on this machine's CPU (one thread, batch 1, fgp_ext.latency.measure_latency; the network at 10% of
the width of the cost model's, FC head included, so that a run is a few milliseconds). The machine
is shared with other jobs, which made medians bimodal (a run sharing its core takes twice as long),
so the value is the minimum over ``--repeats`` timed runs in each of ``--passes`` passes over all
architectures: the run least disturbed by other processes.

    OMP_NUM_THREADS=1 nice -n 5 python scripts/make_mbconv_latency.py --n 1200 --measure \\
        --out python_tests/data/mbconv_latency.jsonl.gz
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

RESOLUTIONS = (96, 112, 128)
WIDTHS = (24, 40, 80, 112, 160)
STRIDES = (2, 2, 2, 1, 2)
DEPTHS = (2, 3, 4)
KERNELS = (3, 5, 7)
EXPANDS = (3, 4, 6)
STEM_CH = 16
HEAD_CH, FC_CH, CLASSES = 960, 1280, 1000


@dataclass
class Layer:
    """One layer of the network: its kind, kernel, MACs, parameters and activation sizes."""

    kind: str            # stem | pw | dw | head_pw | fc
    k: int
    macs: float
    params: float
    act_in: float
    act_out: float


@dataclass
class Arch:
    """One architecture: resolution and the (kernel, expansion) of every block per stage."""

    resolution: int
    blocks: list[list[tuple[int, int]]] = field(default_factory=list)

    def ops(self) -> list[str]:
        return ["stem"] + [f"mbconv_e{e}_k{k}" for st in self.blocks for k, e in st] + ["head"]


def sample_arch(rng: np.random.Generator) -> Arch:
    a = Arch(int(rng.choice(RESOLUTIONS)))
    for _ in WIDTHS:
        d = int(rng.choice(DEPTHS))
        a.blocks.append([(int(rng.choice(KERNELS)), int(rng.choice(EXPANDS))) for _ in range(d)])
    return a


def layers(a: Arch, width_mult: float = 1.0) -> list[Layer]:
    """Every layer of ``a`` with its cost figures (channels scaled by ``width_mult``)."""
    def ch(c):
        return max(4, int(round(c * width_mult)))

    out: list[Layer] = []
    h = a.resolution // 2
    c_in = ch(STEM_CH)
    out.append(Layer("stem", 3, h * h * 3 * c_in * 9, 3 * c_in * 9, a.resolution ** 2 * 3, h * h * c_in))
    # the fixed first block: depthwise 3x3 + 1x1 project (expansion 1)
    out.append(Layer("dw", 3, h * h * c_in * 9, c_in * 9, h * h * c_in, h * h * c_in))
    out.append(Layer("pw", 1, h * h * c_in * c_in, c_in * c_in, h * h * c_in, h * h * c_in))
    for width, stride, stage in zip(WIDTHS, STRIDES, a.blocks):
        c_out = ch(width)
        for b, (k, e) in enumerate(stage):
            s = stride if b == 0 else 1
            mid = c_in * e
            ho = h // s
            out.append(Layer("pw", 1, h * h * c_in * mid, c_in * mid, h * h * c_in, h * h * mid))
            out.append(Layer("dw", k, ho * ho * mid * k * k, mid * k * k, h * h * mid, ho * ho * mid))
            out.append(Layer("pw", 1, ho * ho * mid * c_out, mid * c_out, ho * ho * mid, ho * ho * c_out))
            h, c_in = ho, c_out
    hc, fc = ch(HEAD_CH), ch(FC_CH)
    out.append(Layer("head_pw", 1, h * h * c_in * hc, c_in * hc, h * h * c_in, h * h * hc))
    out.append(Layer("fc", 1, hc * fc, hc * fc, hc, fc))
    out.append(Layer("fc", 1, fc * CLASSES, fc * CLASSES, fc, CLASSES))
    return out


# ----------------------------------------------------------------------------------------------
# the synthetic devices

@dataclass(frozen=True)
class Device:
    """Analytic cost model of one device (see the module docstring). ``peak`` in MACs/s,
    ``bw`` in bytes/s, ``overhead`` and ``fixed`` in seconds."""

    peak: float
    bw: float
    overhead: float
    eff: dict
    keff: dict = field(default_factory=lambda: {1: 1.0, 3: 1.0, 5: 1.0, 7: 1.0})
    batch: int = 1
    bytes_per: int = 4
    fixed: float = 0.0
    noise: float = 0.03
    round_ms: float = 0.0


DEVICES: dict[str, Device] = {
    "gpu_b1": Device(peak=7e12, bw=450e9, overhead=30e-6, eff={"stem": .3, "pw": .4, "dw": .04, "head_pw": .4, "fc": .2},
                     fixed=0.3e-3, noise=0.03),
    "gpu_b64": Device(peak=7e12, bw=450e9, overhead=30e-6, eff={"stem": .5, "pw": .7, "dw": .06, "head_pw": .7, "fc": .6},
                      batch=64, fixed=0.3e-3, noise=0.03),
    "cpu_server": Device(peak=150e9, bw=25e9, overhead=12e-6, eff={"stem": .3, "pw": .6, "dw": .25, "head_pw": .6, "fc": .3},
                         keff={1: 1.0, 3: 1.0, 5: .8, 7: .65}, fixed=0.2e-3, noise=0.04),
    "cpu_arm": Device(peak=8e9, bw=3e9, overhead=40e-6, eff={"stem": .4, "pw": .7, "dw": .45, "head_pw": .7, "fc": .5},
                      keff={1: 1.0, 3: 1.0, 5: .9, 7: .85}, fixed=1e-3, noise=0.05),
    "phone_cpu": Device(peak=20e9, bw=8e9, overhead=25e-6, eff={"stem": .4, "pw": .6, "dw": .3, "head_pw": .6, "fc": .4},
                        keff={1: 1.0, 3: 1.0, 5: .75, 7: .6}, fixed=0.5e-3, noise=0.08, round_ms=1.0),
    "phone_npu": Device(peak=400e9, bw=15e9, overhead=20e-6, eff={"stem": .2, "pw": .8, "dw": .15, "head_pw": .8, "fc": .3},
                        bytes_per=1, fixed=1.5e-3, noise=0.05),
    "edge_tpu": Device(peak=2e12, bw=8e9, overhead=15e-6, eff={"stem": .3, "pw": .7, "dw": .2, "head_pw": .7, "fc": .5},
                       bytes_per=1, fixed=0.8e-3, noise=0.03),
    "fpga": Device(peak=250e9, bw=10e9, overhead=60e-6, eff={"stem": .5, "pw": .8, "dw": .8, "head_pw": .8, "fc": .6},
                   bytes_per=1, fixed=0.2e-3, noise=0.02),
}
#: phone_npu: a 7x7 depthwise layer falls back to this device plus a transfer
NPU_FALLBACK, NPU_TRANSFER = "phone_cpu", 0.4e-3
#: edge_tpu: on-chip weight memory (bytes) and the off-chip bandwidth weights past it stream at
TPU_SRAM, TPU_STREAM_BW = 2.5e6, 1.5e9


def _layer_time(d: Device, L: Layer) -> float:
    compute = L.macs * d.batch / (d.peak * d.eff[L.kind] * d.keff.get(L.k, 1.0))
    memory = ((L.act_in + L.act_out) * d.batch + L.params) * d.bytes_per / d.bw
    return max(compute, memory) + d.overhead


def device_latency_ms(name: str, ls: list[Layer], rng: np.random.Generator) -> float:
    """Synthetic latency (ms) of a network given by its layers on device ``name``."""
    d = DEVICES[name]
    t = d.fixed
    for L in ls:
        if name == "phone_npu" and L.kind == "dw" and L.k == 7:
            t += _layer_time(DEVICES[NPU_FALLBACK], L) + NPU_TRANSFER
        elif name == "fpga" and L.kind == "dw":
            passes = math.ceil(L.k * L.k / 9)
            t += passes * L.macs / (L.k * L.k) * 9 / (d.peak * d.eff["dw"]) + d.overhead
        else:
            t += _layer_time(d, L)
    if name == "edge_tpu":
        w = sum(L.params for L in ls) * d.bytes_per
        t += max(0.0, w - TPU_SRAM) / TPU_STREAM_BW
    ms = 1e3 * t * math.exp(d.noise * rng.standard_normal())
    if d.round_ms:
        ms = max(d.round_ms, d.round_ms * round(ms / d.round_ms))
    return ms


# ----------------------------------------------------------------------------------------------
# real networks (--measure)

def build_torch(a: Arch, width_mult: float):
    """The architecture as a torch module (MBConv blocks with BN and ReLU6, residual where the
    shape allows), channels scaled by ``width_mult``."""
    import torch.nn as nn

    def ch(c):
        return max(4, int(round(c * width_mult)))

    def cbr(ci, co, k, s, groups=1, act=True):
        mods = [nn.Conv2d(ci, co, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(co)]
        return mods + ([nn.ReLU6(inplace=True)] if act else [])

    class Block(nn.Module):
        def __init__(self, ci, co, k, e, s):
            super().__init__()
            mid = ci * e
            mods = (cbr(ci, mid, 1, 1) if e != 1 else []) + cbr(mid, mid, k, s, groups=mid) + cbr(mid, co, 1, 1, act=False)
            self.body = nn.Sequential(*mods)
            self.res = s == 1 and ci == co

        def forward(self, x):
            y = self.body(x)
            return x + y if self.res else y

    c = ch(STEM_CH)
    mods = [*cbr(3, c, 3, 2), Block(c, c, 3, 1, 1)]
    for width, stride, stage in zip(WIDTHS, STRIDES, a.blocks):
        for b, (k, e) in enumerate(stage):
            mods.append(Block(c, ch(width), k, e, stride if b == 0 else 1))
            c = ch(width)
    mods += [*cbr(c, ch(HEAD_CH), 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
             nn.Linear(ch(HEAD_CH), ch(FC_CH)), nn.ReLU6(inplace=True), nn.Linear(ch(FC_CH), CLASSES)]
    return nn.Sequential(*mods)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1200, help="architectures (distinct)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--measure", action="store_true", help="add lat_thiscpu_torch, measured on this CPU")
    ap.add_argument("--measure-width", type=float, default=0.1, help="width multiplier of the measured networks")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--passes", type=int, default=2, help="passes over all architectures (minimum taken)")
    ap.add_argument("--out", required=True, help="JSON Lines file to write (.jsonl or .jsonl.gz)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    noise_rng = np.random.default_rng(args.seed + 1)
    seen, archs = set(), []
    while len(archs) < args.n:
        a = sample_arch(rng)
        key = (a.resolution, tuple(map(tuple, a.blocks)))
        if key not in seen:
            seen.add(key)
            archs.append(a)
    if args.measure:
        import torch

        from fgp_ext.latency import measure_latency

        torch.set_num_threads(1)
        torch.manual_seed(args.seed)
    recs = []
    t0 = time.perf_counter()
    measured = np.full(len(archs), np.inf)
    if args.measure:
        nets = [build_torch(a, args.measure_width) for a in archs]
        for p in range(args.passes):
            for i, (a, net) in enumerate(zip(archs, nets)):
                r = measure_latency(net, input_shape=(3, a.resolution, a.resolution), warmup=args.warmup,
                                    repeats=args.repeats, threads=1)
                measured[i] = min(measured[i], r.min_ms)
                if (i + 1) % 200 == 0:
                    print(f"  pass {p + 1}: measured {i + 1}/{len(archs)} ({time.perf_counter() - t0:.0f} s)",
                          file=sys.stderr, flush=True)
    for i, a in enumerate(archs):
        ops = a.ops()
        ls = layers(a)
        rec = {"name": f"mb-{i:04d}", "ops": ops, "edges": [[j, j + 1] for j in range(len(ops) - 1)],
               "resolution": a.resolution,
               "flops": round(2 * sum(L.macs for L in ls) / 1e6, 3),
               "params": round(sum(L.params for L in ls) / 1e6, 4)}
        for name in DEVICES:
            rec[f"lat_{name}"] = float(f"{device_latency_ms(name, ls, noise_rng):.4g}")
        if args.measure:
            rec["lat_thiscpu_torch"] = float(f"{measured[i]:.4g}")
        recs.append(rec)
    text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in recs).encode()
    if args.out.endswith(".gz"):
        text = gzip.compress(text, mtime=0)
    from fgp_ext import _io   # the project's one atomic writer (a kill never leaves half a file)

    _io.write_bytes(args.out, text)
    print(f"wrote {len(recs)} architectures to {args.out} ({len(text) / 1e3:.0f} kB, "
          f"{time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
