#!/usr/bin/env python
"""How well a pre-training learned its proxy: the Kendall tau, over all 15,625 NB201 cells, of a
cached pre-training's auxiliary head (before any fine-tuning) with CIFAR-10 accuracy and with the
proxy it was trained to rank.

Usage: python experiments/aux_head_tau.py CHECKPOINT [CHECKPOINT ...] [--proxy meco] [--threads 1]
CHECKPOINT: a file written by ``fgp run --pretrained-dir DIR`` (``DIR/<encoder>_seed<seed>-<key>.pt``) or
``fgp pretrain`` with an auxiliary target. Prints one line per file; a head pre-trained on several
proxies as separate outputs (``--aux-target meco,synflow``) gets one line per output, each compared
with accuracy and with its own proxy.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from fgp_ext.data.formats import load_nb201
from fgp_ext.metrics import kendall_tau
from fgp_ext.train import load_checkpoint, resolve_aux_target
from fgp_ext.train.common import as_batch


@torch.no_grad()
def head_outputs(encoder: torch.nn.Module, head: torch.nn.Module, ds, chunk: int = 4096) -> np.ndarray:
    """``[N, k]`` outputs of an auxiliary head of ``k`` outputs for every architecture of ``ds``
    (the encoder in eval mode, run once for all outputs)."""
    batch = as_batch(ds)
    encoder.eval(), head.eval()
    idx = torch.arange(batch.num_graphs)
    out = [head(encoder(batch.select(idx[s: s + chunk]))) for s in range(0, idx.numel(), chunk)]
    return torch.cat(out).double().numpy()


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
        names = str(ck.meta.get("aux_target") or args.proxy).split(",")
        outputs = head_outputs(ck.encoder, ck.heads["aux"], ds)
        if outputs.shape[1] != len(names):
            names = [f"output {j}" for j in range(outputs.shape[1])]   # a rank vote's one output, say
        for j, score in enumerate(outputs.T):
            name = names[j]
            label = "aux head" if len(names) == 1 else f"aux output {j} ({name})"
            vs_own = ""
            if len(names) > 1 and name != args.proxy and not name.startswith("output "):
                vs_own = f", vs {name} {kendall_tau(score, resolve_aux_target(name, ds)):.4f}"
            print(f"{path}: {ck.meta.get('epochs', '?')} epochs, {label} vs accuracy "
                  f"{kendall_tau(score, acc):.4f}, vs {args.proxy} {kendall_tau(score, proxy):.4f}{vs_own}", flush=True)


if __name__ == "__main__":
    main()
