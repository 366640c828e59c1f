#!/usr/bin/env python
"""The NB201 protocol runs of one pre-training seed (its 3 permutations), FGP only, so that long
pre-trainings of the 3 seeds can run as parallel processes (pre-training depends on the seed only).

Usage: python scripts/protocol_one_seed.py SEED [--encoder flowerformer] [--epochs-pretrain 200]
       [--epochs-finetune 200] [--aux-target meco] [--hidden 128] [--layers 9 --heads 4]
       [--encoder-config '{"layout": "parallel", "norm": "batch", "flow_relu": true}'] [--dropout 0.1]
       [--batch-size-pretrain 256] [--finetune-aux-head] [--threads 1]
       [--batch-size-finetune 16] [--finetune-lr LR] [--finetune-weight-decay WD]
       [--finetune-schedule cosine --finetune-warmup 30 --finetune-schedule-epochs 600]
       [--pretrained-dir DIR]
Prints one JSON line: the seed and each run's permutation, Kendall tau and P@1%.
"""
from __future__ import annotations

import argparse
import json

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("seed", type=int)
    ap.add_argument("--encoder", default="flowerformer")
    ap.add_argument("--target", default="cifar10_test_200ep")
    ap.add_argument("--epochs-pretrain", type=int, default=200)
    ap.add_argument("--epochs-finetune", type=int, default=200)
    ap.add_argument("--aux-target", default="meco")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--layers", type=int, default=None, help="encoder layers (default: the encoder's)")
    ap.add_argument("--heads", type=int, default=None, help="attention heads (FlowerFormer)")
    ap.add_argument("--encoder-config", default="{}",
                    help='further encoder arguments as JSON, e.g. \'{"layout": "parallel", "norm": "batch"}\'')
    ap.add_argument("--batch-size-pretrain", type=int, default=256)
    ap.add_argument("--directed", action="store_true", help="gatedgcn: messages along the edges only")
    ap.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=False,
                    help="z-score the surrogate dimensions (default: raw, as fgp run)")
    ap.add_argument("--finetune-aux-head", action="store_true",
                    help="also fine-tune with the pre-trained auxiliary head as the score head (method fgp_aux_head)")
    ap.add_argument("--batch-size-finetune", type=int, default=16)
    ap.add_argument("--finetune-lr", type=float, default=None, help="default: the pre-training lr, 1e-3")
    ap.add_argument("--finetune-weight-decay", type=float, default=0.0)
    ap.add_argument("--finetune-schedule", choices=["constant", "cosine"], default="constant")
    ap.add_argument("--finetune-warmup", type=int, default=0)
    ap.add_argument("--finetune-schedule-epochs", type=int, default=None)
    ap.add_argument("--pretrained-dir", default=None, help="cache of pre-trained encoders (see fgp run)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    import fgp_ext
    import fgp_ext.train as train

    encoder_config = {**json.loads(args.encoder_config),
                      **{k: v for k, v in (("layers", args.layers), ("heads", args.heads)) if v is not None}}
    if args.directed:
        encoder_config["undirected"] = False
    pairs = [p for p in train.protocol_runs(9) if p[0] == args.seed]
    if not pairs:
        raise SystemExit(f"seed {args.seed} is not a protocol seed {train.PROTOCOL_SEEDS}")
    train.protocol_runs = lambda runs=9, seeds=None: pairs  # run_protocol then runs this seed's pairs only
    summary = train.run_protocol(fgp_ext.load("nb201"), args.encoder, args.target, runs=len(pairs),
                                 epochs_pretrain=args.epochs_pretrain, epochs_finetune=args.epochs_finetune,
                                 aux_target=args.aux_target, baseline=False, progress=True,
                                 hidden=args.hidden, dropout=args.dropout, batch_size_pretrain=args.batch_size_pretrain,
                                 encoder_config=encoder_config, finetune_aux_head=args.finetune_aux_head,
                                 batch_size_finetune=args.batch_size_finetune, finetune_lr=args.finetune_lr,
                                 finetune_weight_decay=args.finetune_weight_decay,
                                 finetune_schedule=args.finetune_schedule, finetune_warmup=args.finetune_warmup,
                                 finetune_schedule_epochs=args.finetune_schedule_epochs,
                                 pretrained_dir=args.pretrained_dir, standardize=args.standardize)
    methods = [m for m in ("fgp", "fgp_aux_head") if m in summary["mean"]]
    print(json.dumps({"seed": args.seed, "pretrain_s_per_epoch": summary.get("pretrain_s_per_epoch"), "runs": [
        {"perm": r["perm_seed"], **{f"{k}{'' if m == 'fgp' else '_' + m}": r[m][key]
                                    for m in methods for k, key in (("tau", "kendall_tau"), ("p1", "p@1%"))}}
        for r in summary["runs"]]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
