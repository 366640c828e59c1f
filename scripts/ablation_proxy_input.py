"""Ablation: NAS-Bench-201 zero-cost proxies as an *input* of the score head, inside `fgp run`.

FGP feeds a proxy to the encoder through its auxiliary pre-training loss (and `--finetune-aux-head`
starts fine-tuning from the head that learned to predict it). The other common way to use a proxy
is as an input feature of the predictor. This script measures that way inside the unchanged
protocol, with every `fgp run` option available:

* method ``fgp`` (fresh head): the head is ``MLPHead(out_dim + P, 128, 1)`` on the graph embedding
  concatenated with the P proxy features of the graph;
* method ``fgp_aux_head`` (with ``--finetune-aux-head``): the pre-trained proxy head plus a linear
  term ``features @ w`` whose weights start at 0, so fine-tuning starts from the plain proxy head.

A proxy enters as the normal score of its rank over all 15,625 cells, ``Phi^-1((rank - 0.5) / n)``
(zero-cost proxies are known for every cell, labelled or not; ranks make the heavy-tailed ones
such as synflow usable as inputs without a per-proxy transform).

It is a script, not a package option, because it measured no gain over the proxy head
(``results/ensemble.md``, "The proxy as an input of the score head"); a per-graph input would
also need the scoring path to compute the same features for new architectures. The package's
batches carry no per-graph input, so the script tags every sub-batch with the dataset indices of
its graphs (``ArchBatch.select`` is the only way the protocol builds one) and the heads read the
features by those indices.

    python scripts/ablation_proxy_input.py --proxies meco -- run --encoder flowerformer ... --out DIR
    python scripts/ablation_proxy_input.py --proxies all -- run ...

Everything after ``--`` is an `fgp` command line (NB201 only: the shipped proxies).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from scipy.stats import norm, rankdata

import fgp_ext.graph as graph_module
import fgp_ext.train.protocol as protocol
from fgp_ext import proxies
from fgp_ext.cli import main as fgp_main
from fgp_ext.train.heads import MLPHead, Predictor


def proxy_features(names: list[str]) -> torch.Tensor:
    """``[15625, P]`` normal scores of the ranks of the shipped NB201 proxies ``names``."""
    cols = []
    for name in names:
        v = np.asarray(proxies.nb201_proxy(name), dtype=np.float64)
        if not np.isfinite(v).all():
            raise ValueError(f"proxy {name!r} has non-finite values")
        cols.append(norm.ppf((rankdata(v) - 0.5) / v.size))
    return torch.tensor(np.stack(cols, 1), dtype=torch.float32)


def graph_ids(batch) -> torch.Tensor:
    ids = getattr(batch, "dataset_ids", None)
    if ids is None:
        raise RuntimeError("a batch reached the head without dataset indices: it was not built by select()")
    return ids


class ConcatHeadPredictor(Predictor):
    """Score head on ``[embedding, proxy features]``."""

    def __init__(self, encoder, features: torch.Tensor, hidden: int = 128):
        super().__init__(encoder, MLPHead(encoder.out_dim + features.shape[1], hidden, 1))
        self.register_buffer("features", features, persistent=False)

    def forward(self, batch) -> torch.Tensor:
        x = torch.cat([self.encoder(batch), self.features[graph_ids(batch)]], -1)
        return self.head(x).squeeze(-1)


class LinearTermPredictor(Predictor):
    """A predictor's score plus ``features @ w``, ``w`` starting at 0."""

    def __init__(self, predictor: Predictor, features: torch.Tensor):
        super().__init__(predictor.encoder, predictor.head)
        self.register_buffer("features", features, persistent=False)
        self.w = torch.nn.Parameter(torch.zeros(features.shape[1]))

    def forward(self, batch) -> torch.Tensor:
        return self.head(self.encoder(batch)).squeeze(-1) + self.features[graph_ids(batch)] @ self.w


def install(features: torch.Tensor):
    """Make the protocol's fine-tuning use the heads above; returns a function that undoes it."""
    select = graph_module.ArchBatch.select
    finetune = protocol.finetune

    def select_with_ids(self, ids):
        out = select(self, ids)
        object.__setattr__(out, "dataset_ids", torch.as_tensor(ids, dtype=torch.int64).reshape(-1))
        return out

    graph_module.ArchBatch.select = select_with_ids

    def finetune_with_proxy_input(encoder, *args, **kwargs):
        if isinstance(encoder, Predictor):       # --finetune-aux-head: the pre-trained proxy head
            model = LinearTermPredictor(encoder, features)
        else:                                    # a fresh head, created where finetune() would create it
            model = ConcatHeadPredictor(encoder, features)
        return finetune(model, *args, **kwargs)

    protocol.finetune = finetune_with_proxy_input

    def uninstall():
        graph_module.ArchBatch.select = select
        protocol.finetune = finetune

    return uninstall


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--" not in argv:
        raise SystemExit("usage: ablation_proxy_input.py --proxies meco|all|a,b -- run ...")
    cut = argv.index("--")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proxies", default="meco", help="'all' or comma-separated shipped NB201 proxies")
    args = ap.parse_args(argv[:cut])
    names = list(proxies.PROXIES) if args.proxies == "all" else [p.strip() for p in args.proxies.split(",")]
    unknown = [p for p in names if p not in proxies.PROXIES]
    if unknown:
        raise SystemExit(f"unknown proxies {unknown}; shipped: {list(proxies.PROXIES)}")
    install(proxy_features(names))
    print(f"proxy input: {', '.join(names)}", flush=True)
    return fgp_main(argv[cut + 1:])


if __name__ == "__main__":
    sys.exit(main())
