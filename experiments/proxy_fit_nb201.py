"""What does FGP pre-training learn from its auxiliary proxy? (NB201, all 15,625 cells, no labels.)

Pre-trains an encoder (20 epochs, seed 21, reconstruction + ranking loss on the proxy, the protocol's
settings) and scores every cell with the auxiliary head. Prints the Kendall tau of the proxy with
CIFAR-10 accuracy, of the head's scores with accuracy, and of the head's scores with the proxy.

Proxies: a shipped one or a vote (``meco``, ``synflow+jacov+snip``) or ``syn:T``, the synthetic proxy
of experiments/proxy_strength_nb201.py (true ranks plus Gaussian noise, Kendall T with accuracy; label-
derived on purpose, a measurement). Results: results/fgp_nb201.md.

Usage: .venv/bin/python experiments/proxy_fit_nb201.py gatedgcn syn:0.7 meco synflow+jacov+snip
"""
import json
import sys

import torch
from proxy_strength_nb201 import synthetic_proxy  # this script's folder is on sys.path

import fgp_ext
from fgp_ext import collate
from fgp_ext.encoders import build_encoder
from fgp_ext.metrics import kendall_tau
from fgp_ext.surrogate import flow_surrogate
from fgp_ext.train import Predictor, predict, pretrain, resolve_aux_target, set_seed


def main(encoder: str, proxies: list[str]) -> None:
    torch.set_num_threads(1)
    ds = fgp_ext.load("nb201")
    y = ds.targets("cifar10_test_200ep")
    batch = collate(ds.graphs)
    sp = ds.space.surrogate_params
    sur = flow_surrogate(batch, k=int(sp["k"]), std=float(sp["std"]), alpha=float(sp.get("alpha", 0.5)),
                         seed=0, num_ops=ds.space.num_ops)
    for name in proxies:
        if "," in name:
            raise SystemExit(f"{name!r}: one proxy (or '+' vote) per run; the head is scored as one column")
        aux = synthetic_proxy(y, float(name[4:])) if name.startswith("syn:") else resolve_aux_target(name, ds)
        set_seed(21)
        enc = build_encoder(encoder, ds.space.num_ops, hidden=128, dropout=0.1)
        pre = pretrain(enc, batch, sur, epochs=20, batch_size=256, aux_target=aux, seed=21, progress=False)
        s = predict(Predictor(enc, pre.aux_head), batch)
        print(json.dumps({"encoder": encoder, "proxy": name, "proxy_vs_acc": kendall_tau(aux, y),
                          "head_vs_acc": kendall_tau(s, y), "head_vs_proxy": kendall_tau(s, aux)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "gatedgcn", sys.argv[2:] or ["meco"])
