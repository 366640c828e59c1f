"""Argument types for the command lines: range checks at parse time.

Each validator is a callable for ``argparse``'s ``type=``: it turns the option's text into a value
or raises :class:`argparse.ArgumentTypeError`, which argparse prints as one line naming the option,
e.g. ``fgp run: error: argument --ratio: must be a number in (0, 1], got '1.5'`` (exit status 2),
before any data is read or any model is built. Torch-free, so that parsing stays cheap.
"""
from __future__ import annotations

import argparse
import math
import os
from typing import Callable

__all__ = ["int_range", "float_range", "positive_int", "non_negative_int", "seed", "threads", "runs",
           "ratio", "dropout", "unit_interval", "positive_float", "non_negative_float", "surrogate_dim",
           "limit", "ema_decay"]

#: Seeds go to numpy's legacy generator as well as torch's: both take 0 .. 2**32 - 1.
MAX_SEED = 2 ** 32 - 1
#: The largest surrogate dimension accepted (the surrogate is [N, k] floats; FGP uses k <= 16).
MAX_SURROGATE_DIM = 4096


def _bounds(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    lo, hi = (f"{x:g}" if isinstance(x, float) else x for x in (lo, hi))
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi}"
    return "finite"


def int_range(lo: int | None = None, hi: int | None = None, *, name: str = "int") -> Callable[[str], int]:
    """An integer in ``[lo, hi]`` (either bound may be None). ``hi`` may be a callable evaluated
    at parse time (e.g. the CPU count)."""
    def parse(text: str) -> int:
        top = hi() if callable(hi) else hi
        try:
            v = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be an integer {_bounds(lo, top)}, got {text!r}") from None
        if (lo is not None and v < lo) or (top is not None and v > top):
            raise argparse.ArgumentTypeError(f"must be an integer {_bounds(lo, top)}, got {text!r}")
        return v

    parse.__name__ = name
    parse.lo, parse.hi = lo, hi
    return parse


def float_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                hi_open: bool = False, name: str = "float") -> Callable[[str], float]:
    """A finite number between ``lo`` and ``hi`` (open or closed ends; None = unbounded).
    NaN and infinities are refused."""
    def parse(text: str) -> float:
        what = f"must be a number {_bounds(lo, hi, lo_open, hi_open)}, got {text!r}"
        try:
            v = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(what) from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(what)
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise argparse.ArgumentTypeError(what)
        if hi is not None and (v > hi or (hi_open and v == hi)):
            raise argparse.ArgumentTypeError(what)
        return v

    parse.__name__ = name
    parse.lo, parse.hi = lo, hi
    return parse


def _cpu_count() -> int:
    return os.cpu_count() or 1


#: Sizes and counts that must be at least one (batch size, width, layers, heads, n-train, ...).
positive_int = int_range(1, name="positive_int")
#: Counts that may be zero (epochs, warm-up epochs, validation architectures).
non_negative_int = int_range(0, name="non_negative_int")
#: Random seeds: 0 .. 2**32 - 1.
seed = int_range(0, MAX_SEED, name="seed")
#: Intra-op CPU threads: 1 .. the CPUs of this machine (more only oversubscribes the cores).
threads = int_range(1, _cpu_count, name="threads")
#: ``fgp run --runs``: the protocol's nine (seed, permutation) pairs.
runs = int_range(1, 9, name="runs")
#: ``--limit``: a sample of at least 50 architectures (fewer leave no test set).
limit = int_range(50, name="limit")
#: The surrogate dimension ``k``.
surrogate_dim = int_range(1, MAX_SURROGATE_DIM, name="surrogate_dim")
#: A share of a set: in (0, 1].
ratio = float_range(0.0, 1.0, lo_open=True, name="ratio")
#: A dropout probability: in [0, 1).
dropout = float_range(0.0, 1.0, hi_open=True, name="dropout")
#: The decay of a moving average of weights: in [0, 1) (0: none).
ema_decay = float_range(0.0, 1.0, hi_open=True, name="ema_decay")
#: A weight in [0, 1] (the surrogate's alpha).
unit_interval = float_range(0.0, 1.0, name="unit_interval")
#: Learning rates, standard deviations: finite and > 0.
positive_float = float_range(0.0, lo_open=True, name="positive_float")
#: Weight decay, margins: finite and >= 0.
non_negative_float = float_range(0.0, name="non_negative_float")
