"""Inference latency of real networks on the machine at hand (build your own latency dataset).

:func:`measure_latency` times ``model(x)`` (eval mode, ``torch.inference_mode``) on a random input of
``batch_size`` images: ``warmup`` untimed runs, then ``repeats`` timed runs with
``time.perf_counter_ns``; reports the median (and mean/min/max/all times) in milliseconds, with
``threads`` intra-op threads (restored afterwards). :func:`measure_arch_latency` builds the
network of an architecture spec first (:func:`fgp_ext.networks.build_network`).

Command line (``fgp latency ...`` once hooked into :mod:`fgp_ext.cli`, or
``python -m fgp_ext.latency ...``)::

    fgp latency --space nb201 --arch '|nor_conv_3x3~0|+|...|' --batch-size 1 --repeats 30
    fgp latency --space nb201 --file nb201 --limit 100 --out lat.jsonl      # embedded table
    fgp latency --space nb101 --file cells.json --out lat.jsonl

``--file``: a JSON array or JSON Lines of records (``arch_str`` / ``matrix`` + ``ops`` /
``genotype``), a text file with one NB201 cell string per line, or ``nb201`` (the embedded
table). ``--out`` writes JSON Lines records = the input structure + ``latency_ms`` (median) +
``latency_batch`` and ``latency_threads``: a file :func:`fgp_ext.data.formats.load` reads as a
dataset with a ``latency_ms`` target.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from fgp_ext import _args

__all__ = ["LatencyResult", "measure_latency", "measure_arch_latency", "add_latency_parser",
           "run_latency", "main"]


@dataclass
class LatencyResult:
    """Latency of one network: ``median_ms`` is the headline number."""

    median_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    times_ms: list[float] = field(repr=False)
    batch_size: int
    threads: int
    warmup: int
    repeats: int
    input_shape: tuple[int, ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d


def _int_arg(v, what: str, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{what} must be an integer, got {v!r}")
    if v < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {v}")
    return int(v)


def _check_args(batch_size, warmup, repeats, threads, input_shape) -> tuple[int, ...]:
    _int_arg(batch_size, "batch_size", 1)
    _int_arg(warmup, "warmup", 0)
    _int_arg(repeats, "repeats", 1)
    _int_arg(threads, "threads", 1)
    ncpu = os.cpu_count() or 1
    if threads > ncpu:
        raise ValueError(f"threads={threads} exceeds the {ncpu} CPU(s) of this machine; the "
                         f"measurement would time oversubscription, not the network")
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence) \
            or len(input_shape) == 0:
        raise ValueError(f"input_shape must be a sequence of positive integers (C, H, W), got "
                         f"{input_shape!r}")
    for s in input_shape:
        _int_arg(s, "input_shape entries", 1)
    return tuple(int(s) for s in input_shape)


def measure_latency(model: nn.Module, *, batch_size: int = 1,
                    input_shape: Sequence[int] = (3, 32, 32), warmup: int = 5,
                    repeats: int = 20, threads: int = 1, seed: int = 0) -> LatencyResult:
    """Median inference latency (ms) of ``model`` on CPU; see the module docstring.

    ``ValueError`` for nonsense arguments: ``batch_size < 1``, ``repeats < 1``, ``warmup < 0``,
    ``threads < 1`` or more threads than CPUs, non-integer values, a bad ``input_shape``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    shape = _check_args(batch_size, warmup, repeats, threads, input_shape)
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None else torch.float32
    g = torch.Generator().manual_seed(int(seed))
    x = torch.randn((batch_size, *shape), generator=g).to(dtype)
    old_threads = torch.get_num_threads()
    was_training = model.training
    times: list[float] = []
    try:
        torch.set_num_threads(threads)
        model.eval()
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            for _ in range(repeats):
                t0 = time.perf_counter_ns()
                model(x)
                times.append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        torch.set_num_threads(old_threads)
        model.train(was_training)
    return LatencyResult(median_ms=statistics.median(times), mean_ms=statistics.fmean(times),
                         min_ms=min(times), max_ms=max(times), times_ms=times,
                         batch_size=batch_size, threads=threads, warmup=warmup, repeats=repeats,
                         input_shape=shape)


def measure_arch_latency(space: str, spec, *, network_kwargs: dict | None = None,
                         **kwargs) -> LatencyResult:
    """Build the network of ``spec`` in ``space`` (``nb201``/``nb101``/``nb301``) and time it;
    ``kwargs`` go to :func:`measure_latency`. ``ValueError`` for a bad spec or bad arguments
    (arguments are checked before the network is built)."""
    from fgp_ext.networks import build_network

    _check_args(kwargs.get("batch_size", 1), kwargs.get("warmup", 5), kwargs.get("repeats", 20),
                kwargs.get("threads", 1), kwargs.get("input_shape", (3, 32, 32)))
    torch.manual_seed(0)
    model = build_network(space, spec, **(network_kwargs or {}))
    return measure_latency(model, **kwargs)


# ----------------------------------------------------------------------------------------------
# command line


def add_latency_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``latency`` subcommand to an ``argparse`` subparsers object (sets ``func``)."""
    p = subparsers.add_parser("latency", help="measure real inference latency of built networks",
                              description="Measure the inference latency (median over repeats, "
                              "ms) of the networks of architectures on this machine.")
    _fill_parser(p)
    return p


def _fill_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", required=True, help="nb201, nb101 or nb301 (darts)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--arch", action="append", default=None,
                     help="an architecture (NB201 cell string, or a JSON record/genotype); "
                          "repeatable")
    src.add_argument("--file", default=None,
                     help="JSON / JSON Lines records, a text file of NB201 cell strings, or "
                          "'nb201' (the embedded table)")
    p.add_argument("--limit", type=_args.positive_int, default=None, help="only the first N architectures")
    p.add_argument("--batch-size", type=_args.positive_int, default=1)
    p.add_argument("--warmup", type=_args.non_negative_int, default=5)
    p.add_argument("--repeats", type=_args.positive_int, default=20)
    # dest differs from "threads" on purpose: fgp_ext.cli.main applies a generic args.threads
    # before dispatching, which must not happen before this command validates the value
    p.add_argument("--threads", type=_args.threads, default=1, dest="latency_threads",
                   help="intra-op threads during the measurement (1)")
    p.add_argument("--resolution", type=_args.positive_int, default=32, help="input height = width (32)")
    p.add_argument("--num-classes", type=_args.positive_int, default=10)
    p.add_argument("--out", default=None, help="write JSON Lines records with latency_ms")
    p.set_defaults(func=run_latency)


def _space_key(space: str) -> str:
    from fgp_ext.networks import _space

    return _space(space)


def _parse_arch(key: str, text: str):
    t = text.strip()
    if key == "nb201" and t.startswith("|"):
        return {"arch_str": t}
    try:
        rec = json.loads(t)
    except json.JSONDecodeError:
        raise ValueError(f"cannot parse architecture {text!r}: expected an NB201 cell string or "
                         f"a JSON record") from None
    if key == "nb301" and isinstance(rec, dict) and "genotype" not in rec:
        rec = {"genotype": rec}
    if key == "nb201" and isinstance(rec, str):
        rec = {"arch_str": rec}
    if not isinstance(rec, dict):
        raise ValueError(f"architecture must be a JSON object, got {type(rec).__name__}")
    return rec


def _read_file(key: str, path: str) -> list[dict]:
    if path.strip().lower() == "nb201" and not os.path.exists(path):
        if key != "nb201":
            raise ValueError("the embedded 'nb201' table holds NAS-Bench-201 cells; use "
                             "--space nb201")
        from fgp_ext.data.formats import load
        from fgp_ext.data.spaces import nb201_to_string

        ds = load("nb201")
        return [{"index": int(i), "arch_str": nb201_to_string(g.ops)}
                for i, g in zip(ds.index.tolist(), ds.graphs)]
    fp = Path(path)
    if not fp.exists():
        raise FileNotFoundError(f"no such file: {path!r}")
    from fgp_ext.data.formats import DataFormatError, read_text

    text = read_text(fp)  # one-line errors for folders, binary files, broken gzip; BOM removed
    s = text.lstrip()
    if s.startswith("["):
        try:
            recs = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"invalid JSON ({e.msg} at line {e.lineno} column {e.colno})", path) from None
        except RecursionError:
            raise DataFormatError("JSON nested too deeply", path) from None
    else:
        recs = [_parse_arch(key, line) for line in text.splitlines() if line.strip()]
    out = []
    for i, r in enumerate(recs):
        if isinstance(r, str) and key == "nb201":
            r = {"arch_str": r}
        if not isinstance(r, dict):
            raise ValueError(f"{path}: record {i} is not a JSON object")
        out.append(r)
    return out


def _structure(key: str, rec: dict) -> dict:
    fields = {"nb201": ("index", "arch_str"), "nb101": ("matrix", "ops"),
              "nb301": ("genotype",)}[key]
    return {k: rec[k] for k in fields if k in rec}


def run_latency(args) -> int:
    """Run the ``latency`` subcommand for parsed ``args``; prints one line per architecture."""
    key = _space_key(args.space)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.resolution < 1:
        raise ValueError(f"--resolution must be >= 1, got {args.resolution}")
    if args.num_classes < 1:
        raise ValueError(f"--num-classes must be >= 1, got {args.num_classes}")
    _check_args(args.batch_size, args.warmup, args.repeats, args.latency_threads,
                (3, args.resolution, args.resolution))
    recs = [_parse_arch(key, a) for a in args.arch] if args.arch else _read_file(key, args.file)
    if args.limit is not None:
        recs = recs[: args.limit]
    if not recs:
        raise ValueError(f"{args.file} holds no architectures" if args.file else "no architectures to measure")
    from fgp_ext import _io

    # rows stream into a temporary file beside --out, renamed over it once all are measured: a
    # failed or killed run leaves the previous --out as it was
    with (_io.atomic_write(args.out, "w") if args.out else contextlib.nullcontext()) as out_f:
        for i, rec in enumerate(recs):
            try:
                res = measure_arch_latency(
                    key, rec, network_kwargs={"num_classes": args.num_classes},
                    batch_size=args.batch_size, warmup=args.warmup, repeats=args.repeats,
                    threads=args.latency_threads,
                    input_shape=(3, args.resolution, args.resolution))
            except ValueError as e:
                raise ValueError(f"architecture {i}: {e}") from None
            name = rec.get("arch_str") or rec.get("name") or f"#{i}"
            print(f"{name}\tmedian {res.median_ms:.3f} ms\t(min {res.min_ms:.3f}, "
                  f"max {res.max_ms:.3f}; batch {res.batch_size}, threads {res.threads}, "
                  f"{res.repeats} repeats)", flush=True)
            if out_f is not None:
                row = _structure(key, rec)
                row.update(latency_ms=res.median_ms, latency_batch=res.batch_size,
                           latency_threads=res.threads)
                out_f.write(json.dumps(row) + "\n")
                out_f.flush()
    return 0


def main(argv=None) -> int:
    """``python -m fgp_ext.latency ...`` (same options as ``fgp latency``)."""
    ap = argparse.ArgumentParser(prog="fgp latency", description="Measure the inference latency "
                                 "of built networks on this machine.")
    _fill_parser(ap)
    args = ap.parse_args(argv)
    from fgp_ext import _io

    _io.ignore_sigxfsz()
    try:
        return run_latency(args)
    except _io.WriteError as e:
        print(f"fgp latency: error: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as e:
        print(f"fgp latency: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
