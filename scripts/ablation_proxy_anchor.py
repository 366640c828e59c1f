"""Ablation: keep ranking by the zero-cost proxy during fine-tuning, inside `fgp run`.

FGP's auxiliary loss teaches the encoder (and, with ``--finetune-aux-head``, the score head) to rank
architectures by a zero-cost proxy, and fine-tuning then trains on the labels alone, free to forget
what the proxy taught. This script measures the multi-task alternative: every fine-tuning step
also ranks ``batch_size`` unlabelled cells by the proxy, with weight ``--weight``. It reuses
:func:`fgp_ext.train.finetune`'s pseudo-label path (``pseudo_targets`` = the proxy of every cell,
``pseudo_idx`` = every cell outside the labelled and validation sets), so the proxy batch rides in
the same forward pass and the labelled batches are the ones of the plain run.

It is a script, not a package option, because it measured no gain (``results/ensemble.md``,
"Ranking by the proxy during fine-tuning").

    python scripts/ablation_proxy_anchor.py --proxy meco --weight 0.1 -- run --encoder flowerformer ... --out DIR

Everything after ``--`` is an `fgp` command line (NB201 only: the shipped proxies). A command line
that already self-trains (``--self-train``) is refused: both would use the pseudo-label path.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import fgp_ext.train.protocol as protocol
from fgp_ext import _args, proxies
from fgp_ext.cli import main as fgp_main


def install(proxy: np.ndarray, weight: float):
    """Make the protocol's fine-tuning also rank the unlabelled cells by ``proxy`` (a value per
    cell) with ``weight``; returns a function that undoes it."""
    finetune = protocol.finetune
    proxy = np.asarray(proxy, dtype=np.float64)

    def finetune_anchored(encoder, data, targets, train_idx, val_idx=None, *args, **kwargs):
        if kwargs.get("pseudo_targets") is not None:
            raise RuntimeError("the proxy anchor and self-training both use the pseudo-label path")
        seen = np.zeros(proxy.size, dtype=bool)
        seen[np.asarray(train_idx)] = True
        if val_idx is not None:
            seen[np.asarray(val_idx)] = True
        kwargs.update(pseudo_targets=proxy, pseudo_idx=np.flatnonzero(~seen), pseudo_weight=weight)
        return finetune(encoder, data, targets, train_idx, val_idx, *args, **kwargs)

    protocol.finetune = finetune_anchored

    def uninstall():
        protocol.finetune = finetune

    return uninstall


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--" not in argv:
        raise SystemExit("usage: ablation_proxy_anchor.py --proxy meco --weight W -- run ...")
    cut = argv.index("--")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proxy", default="meco", choices=list(proxies.PROXIES), help="a shipped NB201 proxy")
    ap.add_argument("--weight", type=_args.positive_float, default=0.1, help="weight of the proxy ranking loss (> 0)")
    args = ap.parse_args(argv[:cut])
    values = np.asarray(proxies.nb201_proxy(args.proxy), dtype=np.float64)
    if not np.isfinite(values).all():
        raise SystemExit(f"proxy {args.proxy!r} has non-finite values")
    install(values, args.weight)
    print(f"proxy anchor: {args.proxy}, weight {args.weight}", flush=True)
    return fgp_main(argv[cut + 1:])


if __name__ == "__main__":
    sys.exit(main())
