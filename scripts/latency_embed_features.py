"""A copy of a graph-space latency file with an encoder's embedding as extra cheap columns, to measure
whether an FGP-pre-trained encoder helps the few-shot latency predictor (results/latency.md).

The GatedGCN encoder (hidden 128, dropout 0.1, the protocol's defaults) is pre-trained with
:func:`fgp_ext.train.pretrain` on every architecture of the file: the flow-surrogate reconstruction
plus the auxiliary ranking loss on one cheap column (``--aux``, default ``flops``); no latency
column is read. Its graph embeddings (eval mode) are centred and projected on their first D
principal components, written as columns ``emb_0`` .. ``emb_{D-1}`` of a copy of the file (one per
``--dims`` value), before the ``lat_*`` columns. The latency predictor then reads them like any
cheap column (z-scored, in the learned prior, with the extra ``cheap_var`` prior variance), so
scripts/latency_lodo_graph.py measures the features unchanged. ``--random-init`` skips the
pre-training (the same encoder, untrained: the control).

    OMP_NUM_THREADS=1 nice -n 5 python scripts/latency_embed_features.py --out /tmp/latembed/fgp   # 2 min
    OMP_NUM_THREADS=1 python scripts/latency_lodo_graph.py --data /tmp/latembed/fgp_d4.jsonl.gz --shots 10
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="python_tests/data/mbconv_latency.jsonl.gz", help="JSON Lines file (.gz ok)")
    ap.add_argument("--epochs", type=int, default=200, help="pre-training epochs (200)")
    ap.add_argument("--dims", default="4,8,16", help="principal components kept, one file each")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--aux", default="flops", help="column of the auxiliary ranking loss ('' = none)")
    ap.add_argument("--random-init", action="store_true", help="no pre-training (control)")
    ap.add_argument("--out", required=True, help="prefix: writes PREFIX_d{D}.jsonl.gz and PREFIX_emb.npy")
    args = ap.parse_args(argv)
    import torch

    import fgp_ext
    from fgp_ext import _io
    from fgp_ext.data.formats import read_text
    from fgp_ext.encoders import build_encoder
    from fgp_ext.graph import collate
    from fgp_ext.train.config import resolve_surrogate
    from fgp_ext.train.pretraining import pretrain

    torch.set_num_threads(1)
    ds = fgp_ext.load(args.data)
    records = [json.loads(line) for line in read_text(args.data).split("\n") if line.strip()]
    if len(records) != len(ds):
        raise SystemExit(f"{args.data}: {len(records)} records but {len(ds)} architectures")
    batch = collate(ds.graphs)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    enc = build_encoder("gatedgcn", ds.space.num_ops, hidden=128, dropout=0.1)
    t0 = time.perf_counter()
    if not args.random_init:
        sur = resolve_surrogate(ds.space).compute(batch, ds.space.num_ops)
        aux = ds.targets(args.aux) if args.aux else None
        res = pretrain(enc, batch, sur, epochs=args.epochs, aux_target=aux, seed=args.seed, progress=False)
        print(f"pre-trained in {time.perf_counter() - t0:.0f} s; last epoch {res.history[-1]}", file=sys.stderr)
    enc.eval()
    with torch.no_grad():
        E = enc(batch).double().numpy()
    E = E - E.mean(0)
    U, S, _ = np.linalg.svd(E, full_matrices=False)
    share = S ** 2 / (S ** 2).sum()
    print(f"variance share of the first 8 components: {np.round(share[:8], 3).tolist()}", file=sys.stderr)
    _io.np_save(args.out + "_emb.npy", E)
    for d in [int(x) for x in args.dims.split(",") if x]:
        Z = U[:, :d] * S[:d]
        lines = []
        for r, z in zip(records, Z):
            out = {k: v for k, v in r.items() if not k.startswith("lat_")}
            out.update({f"emb_{i}": round(float(v), 6) for i, v in enumerate(z)})
            out.update({k: v for k, v in r.items() if k.startswith("lat_")})
            lines.append(json.dumps(out) + "\n")
        _io.write_bytes(f"{args.out}_d{d}.jsonl.gz", gzip.compress("".join(lines).encode(), mtime=0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
