#!/usr/bin/env python
"""How well a pre-training learned its proxy: the Kendall tau, over all 15,625 NB201 cells, of a
cached pre-training's auxiliary head (before any fine-tuning) with CIFAR-10 accuracy and with the
proxy it was trained to rank.

Usage: python experiments/aux_head_tau.py CHECKPOINT [CHECKPOINT ...] [--proxy meco] [--threads 1]
CHECKPOINT: a file written by ``fgp run --pretrained-dir DIR`` (``DIR/<encoder>_seed<seed>-<key>.pt``) or
``fgp pretrain`` with an auxiliary target. Prints one line per file.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from fgp_ext.data.formats import load_nb201
from fgp_ext.metrics import kendall_tau
from fgp_ext.train import Predictor, load_checkpoint, predict, resolve_aux_target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--proxy", default="meco", help="the proxy to compare with (default meco)")
    ap.add_argument("--target", default="cifar10_test_200ep")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_nb201()
    acc = np.asarray(ds.targets(args.target), dtype=np.float64)
    proxy = np.asarray(resolve_aux_target(args.proxy, ds), dtype=np.float64)
    print(f"{args.proxy} vs accuracy: Kendall {kendall_tau(proxy, acc):.4f}")
    for path in args.checkpoints:
        ck = load_checkpoint(path)
        if "aux" not in ck.heads:
            raise SystemExit(f"{path}: no auxiliary head (pre-trained without an auxiliary target)")
        model = Predictor(ck.encoder, ck.heads["aux"]).eval()
        with torch.no_grad():
            score = predict(model, ds)
        print(f"{path}: {ck.meta.get('epochs', '?')} epochs, aux head vs accuracy "
              f"{kendall_tau(score, acc):.4f}, vs {args.proxy} {kendall_tau(score, proxy):.4f}", flush=True)


if __name__ == "__main__":
    main()
