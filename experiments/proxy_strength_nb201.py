"""How strong an auxiliary proxy does FGP need? (NB201, GatedGCN, FGP with reconstruction + ranking
loss on a synthetic proxy, 3 protocol runs, 20 pre-training / 200 fine-tuning epochs, 1 thread.)

The synthetic proxies are the normal scores of the true CIFAR-10 accuracy ranks plus Gaussian noise,
the noise set for a target Kendall tau with the accuracy (tau = 2/pi asin(rho), rho = 1/sqrt(1+s^2)).
They are derived from the labels on purpose: this measures how FGP's result depends on the quality of
its proxy; it is not a method. Results: results/fgp_nb201.md.

Usage: .venv/bin/python experiments/proxy_strength_nb201.py 0.7 0.8 0.9 > proxy_strength.jsonl
"""
import json
import math
import sys

import numpy as np
import torch
from scipy.stats import kendalltau, norm, rankdata

import fgp_ext
from fgp_ext.train import run_protocol


def synthetic_proxy(y: np.ndarray, tau: float) -> np.ndarray:
    """Normal scores of the ranks of ``y`` plus Gaussian noise (fixed seed) for Kendall ``tau``."""
    z = norm.ppf(rankdata(y) / (len(y) + 1))
    rho = math.sin(tau * math.pi / 2)
    return z + math.sqrt(1 / rho**2 - 1) * np.random.default_rng(0).standard_normal(len(z))


def main(targets):
    torch.set_num_threads(1)
    ds = fgp_ext.load("nb201")
    y = ds.targets("cifar10_test_200ep")
    for tau_target in targets:
        aux = synthetic_proxy(y, tau_target)
        summary = run_protocol(ds, "gatedgcn", "cifar10_test_200ep", runs=3, epochs_pretrain=20, epochs_finetune=200,
                               aux_target=aux, baseline=False, progress=False, log=lambda *a: None)
        m = summary["mean"]["fgp"]
        print(json.dumps({"target_kendall": tau_target, "proxy_kendall": kendalltau(aux, y)[0],
                          "tau": m["kendall_tau"], "tau_std": summary["std"]["fgp"]["kendall_tau"], "p@1%": m["p@1%"],
                          "per_run": [r["fgp"]["kendall_tau"] for r in summary["runs"]]}), flush=True)


if __name__ == "__main__":
    main([float(t) for t in sys.argv[1:]] or [0.7, 0.8, 0.9])
