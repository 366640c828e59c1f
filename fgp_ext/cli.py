"""The ``fgp`` command line (also ``python -m fgp_ext``).

Subcommands::

    fgp surrogate  --data nb201 --out sur.npy            flow-surrogate vectors of every architecture
    fgp pretrain   --encoder gatedgcn --out pre.pt       FGP pre-training (no labels)
    fgp finetune   --checkpoint pre.pt --out ft.pt       ranking fine-tuning on the protocol split
    fgp evaluate   --checkpoint ft.pt                    metrics on the protocol's test split
    fgp predict    --checkpoint ft.pt --out scores.csv   score and rank every architecture of --data
    fgp run        --encoder gatedgcn --out DIR          the whole protocol: FGP vs supervised-only
    fgp latency    --space nb201 --arch "|...|"         measured inference latency of built networks
    fgp latency-train / latency-adapt                   few-shot latency predictor (fgp_ext.latency_model)

Every output (checkpoints, caches, ``summary.json``, metrics JSON, ``.npy``/CSV, plots) is written
atomically through :mod:`fgp_ext._io`: a killed run or a refused write leaves the previous file
intact. Exit status: 0 done, 2 bad arguments or input, 1 an output could not be written (one line
``fgp: error: cannot write FILE: CAUSE``).

``--data`` is ``nb201`` (the embedded NAS-Bench-201 table, default) or a file readable by
:func:`fgp_ext.data.formats.load` (JSON Lines, JSON, CSV). ``--limit N`` keeps a fixed random
sample of N architectures (for quick trials).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from fgp_ext import _args

DEFAULT_TARGETS = ("cifar10_test_200ep", "val_accuracy", "test_accuracy", "accuracy")


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _load_data(args, ck=None):
    """``--data`` (``--space``, ``--limit``); with a loaded checkpoint ``ck``, read through the
    checkpoint's space and op vocabulary (another space or an unknown op is a one-line error)."""
    from fgp_ext.data import formats

    if ck is None:
        ds = formats.load(args.data, getattr(args, "space", None))
    else:
        asked = getattr(args, "space", None)
        if asked is not None and ck.space_name is not None:
            from fgp_ext.data.spaces import get_space

            if get_space(asked).name != ck.space_name:
                raise ValueError(f"checkpoint {ck.path} was trained on space {ck.space_name}; "
                                 f"--space is {get_space(asked).name}")
        ds = ck.load_data(args.data)
    if args.limit is not None:
        if args.limit < 50:
            raise SystemExit(f"fgp: --limit must be >= 50 (got {args.limit})")
        if args.limit < len(ds):
            idx = np.sort(np.random.RandomState(0).choice(len(ds), args.limit, replace=False))
            ds = ds.subset(idx)
    return ds


def _load_unlabelled(args, ds):
    """``--unlabelled``: None, ``sample:N`` (N random cells of the data's space; NB101 only) or a
    file of architectures of the same space (labels, if any, are ignored)."""
    spec = getattr(args, "unlabelled", None)
    if not spec:
        return None
    if spec.startswith("sample:"):
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError:
            raise SystemExit(f"fgp: --unlabelled sample:N needs an integer N, got {spec!r}") from None
        if ds.space.name != "nb101":
            raise SystemExit(f"fgp: --unlabelled sample:N samples NAS-Bench-101 cells; the data is {ds.space.name} "
                             "(pass a file of unlabelled architectures instead)")
        from fgp_ext.data.spaces import sample_nb101

        return sample_nb101(n, seed=0)
    from fgp_ext.data import formats

    return formats.load(spec, ds.space)


def _target(args, ds) -> str:
    """The label column (``--target``, else the first of DEFAULT_TARGETS present, else the first);
    refused when it holds +-inf (NaN marks an unlabelled architecture)."""
    from fgp_ext.data.formats import check_target

    t = _pick_target(args, ds)
    check_target(ds, t)
    return t


def _pick_target(args, ds) -> str:
    if getattr(args, "target", None):
        if args.target not in ds.target_names:
            raise SystemExit(f"fgp: unknown target {args.target!r}; available: {ds.target_names}")
        return args.target
    for t in DEFAULT_TARGETS:
        if t in ds.target_names:
            return t
    if not ds.target_names:
        raise SystemExit("fgp: the dataset has no numeric target column")
    return ds.target_names[0]


def _surrogate_params(args, ds):
    """The flow-surrogate parameters: the ``--sur-*`` options over the space's defaults
    (:func:`fgp_ext.train.resolve_surrogate`, which ``run_protocol`` and its cache key use too)."""
    from fgp_ext.train import resolve_surrogate

    return resolve_surrogate(ds.space, k=getattr(args, "sur_k", None), std=getattr(args, "sur_std", None),
                             alpha=getattr(args, "sur_alpha", None), seed=args.sur_seed)


def _surrogate(batch, ds, sp):
    return sp.compute(batch, ds.space.num_ops)


def _aux_choice(args, ds) -> tuple[str | None, str]:
    """The auxiliary target and why: 'auto' is :func:`fgp_ext.train.auto_aux.choose_aux_target`
    (NB201: the MeCo proxy; a file: its first usable cost or proxy column, never the target),
    'none' turns it off, anything else is the user's choice."""
    name = getattr(args, "aux_target", None)
    if name in (None, "none"):
        return None, "--aux-target none: reconstruction alone"
    if name == "auto":
        from fgp_ext.train.auto_aux import choose_aux_target

        try:   # the label column `run` / `finetune` would use (pretrain has no --target: the default)
            target = _pick_target(args, ds)
        except SystemExit:
            target = None
        c = choose_aux_target(ds, target)
        return c.name, ("auto: " + c.reason) if c.name else ("auto found " + c.reason)
    return name, f"--aux-target {name}"


def _aux_name(args, ds) -> str | None:
    """The auxiliary target's name (:func:`_aux_choice`), None for none."""
    return _aux_choice(args, ds)[0]


def _report_aux(args, ds) -> str:
    """Print the auxiliary target and why (one line; a one-line warning on stderr when ``auto``
    finds nothing and pre-training runs on reconstruction alone); returns the reason."""
    name, reason = _aux_choice(args, ds)
    if name is not None:
        print(f"auxiliary target: {name} ({reason})")
    elif getattr(args, "aux_target", None) == "auto":
        print(f"fgp: warning: {reason}; pre-training on reconstruction alone (FGP's gain comes mostly from "
              "the auxiliary loss: add a params/flops column or pass --aux-target COLUMN)", file=sys.stderr)
    return reason


def _aux(args, ds, batch):
    from fgp_ext.train import resolve_aux_target

    name = _aux_name(args, ds)
    if name is None:
        return None
    try:
        return resolve_aux_target(name, ds)
    except ValueError as e:
        raise SystemExit(f"fgp: --aux-target: {e}") from None


def _split(args, ds, target):
    """The protocol's split of the architectures labelled with ``target`` (NaN = unlabelled, left out)."""
    from fgp_ext.train import split_labelled

    return split_labelled(ds.targets(target), args.n_train, args.ratio, args.perm_seed, args.n_val,
                          getattr(ds.space, "name", None), target)


def _progress(args):
    return False if args.no_progress else None


def _fmt(x) -> str:
    return "  nan " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _print_metrics(title, m):
    keys = ["kendall_tau", "spearman", "p@1%", "p@5%", "p@10%", "p@50%"]
    print(f"{title}: " + "  ".join(f"{k} {_fmt(m.get(k))}" for k in keys) + f"  (n={m.get('n', '?')})")


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(type(o).__name__)


def _clean(o):
    """Replace NaN/inf by None so the JSON is strict."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def write_json(path, obj) -> None:
    """Strict JSON (NaN/inf as null) of ``obj`` to ``path``, atomically (:mod:`fgp_ext._io`)."""
    from fgp_ext import _io

    _io.write_json(path, _clean(json.loads(json.dumps(obj, default=_json_default))), allow_nan=False)


# ----------------------------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------------------------
def make_plots(summary: dict, out_dir: Path) -> list[Path]:
    """Predicted-vs-true rank scatter and training curves of the first run, as PNGs. Returns the
    written paths; without matplotlib, warns and returns ``[]``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed: skipping plots (pip install matplotlib)", stacklevel=2)
        return []
    from fgp_ext import _io
    from fgp_ext.metrics import rankdata

    art = summary.get("_artifacts", {})
    methods = [m for m in ("fgp", "supervised") if m in art]
    paths = []
    if methods:
        fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4.6), squeeze=False)
        for ax, m in zip(axes[0], methods):
            pred, true = np.asarray(art[m]["pred"]), np.asarray(art[m]["true"])
            n = len(true)
            ax.scatter(rankdata(true) / n, rankdata(pred) / n, s=2, alpha=0.3)
            ax.plot([0, 1], [0, 1], color="k", lw=0.8)
            r0 = summary["runs"][0][m]
            ax.set_title(f"{m}: tau {r0['kendall_tau']:.3f}, P@1% {r0['p@1%']:.2f}")
            ax.set_xlabel("true rank (quantile)")
            ax.set_ylabel("predicted rank (quantile)")
        # two lines: one panel (--no-baseline) is too narrow for the whole title on one
        fig.suptitle(f"{summary['encoder']} on {summary['dataset']} ({summary['target']})\nrun 0 test set")
        fig.tight_layout()
        p = out_dir / "rank_scatter.png"
        _io.savefig(fig, p, dpi=110)
        plt.close(fig)
        paths.append(p)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    pre = art.get("pretrain_history") or []
    if pre:
        axes[0].plot([h["epoch"] for h in pre], [h["rec"] for h in pre], label="reconstruction")
        if pre[0].get("aux") is not None:
            axes[0].plot([h["epoch"] for h in pre], [h["aux"] for h in pre], label="aux ranking")
        axes[0].legend()
    axes[0].set_title("pre-training loss")
    axes[0].set_xlabel("epoch")
    for m in methods:
        h = art[m]["finetune_history"]
        axes[1].plot([e["epoch"] for e in h], [e["loss"] for e in h], label=m)
        if h and "val_tau" in h[0]:
            axes[2].plot([e["epoch"] for e in h], [e["val_tau"] for e in h], label=m)
    axes[1].set_title("fine-tuning ranking loss")
    axes[2].set_title("validation Kendall tau")
    for ax in axes[1:]:
        ax.set_xlabel("epoch")
        if methods:
            ax.legend()
    fig.tight_layout()
    p = out_dir / "training_curves.png"
    _io.savefig(fig, p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths


# ----------------------------------------------------------------------------------------------
# subcommands
# ----------------------------------------------------------------------------------------------
def cmd_surrogate(args) -> int:
    import fgp_ext

    ds = _load_data(args)
    t0 = time.perf_counter()
    batch = fgp_ext.collate(ds.graphs)
    t1 = time.perf_counter()
    sp = _surrogate_params(args, ds)
    sur = _surrogate(batch, ds, sp).numpy()
    t2 = time.perf_counter()
    print(f"surrogate of {len(ds)} architectures, k={sp.k} std={sp.std} alpha={sp.alpha} "
          f"seed={sp.seed}: collate {t1 - t0:.3f} s, surrogate {t2 - t1:.3f} s")
    if args.out:
        from fgp_ext import _io

        out = Path(args.out)
        if out.suffix == ".csv":
            _io.np_savetxt(out, sur, delimiter=",", header=",".join(f"s{i}" for i in range(sur.shape[1])),
                           comments="")
        else:
            if out.suffix != ".npy":        # as numpy.save names it
                out = out.with_name(out.name + ".npy")
            _io.np_save(out, sur)
        print(f"wrote {out}")
    else:
        np.set_printoptions(precision=4, suppress=True)
        print(sur[:5])
    return 0


def _original_preset(args) -> dict:
    """``ORIGINAL_NB201`` when ``--flowerformer-original`` is given (only with the flowerformer)."""
    if not getattr(args, "flowerformer_original", False):
        return {}
    if args.encoder != "flowerformer":
        raise SystemExit("fgp: --flowerformer-original applies to --encoder flowerformer only")
    from fgp_ext.encoders.flowerformer import ORIGINAL_NB201
    return dict(ORIGINAL_NB201)


def _hidden_dropout(args) -> tuple[int, float]:
    """Width and dropout: the flags, else the preset's, else 128 and 0.1."""
    preset = _original_preset(args)
    hidden = args.hidden if args.hidden is not None else preset.get("hidden", 128)
    dropout = args.dropout if args.dropout is not None else preset.get("dropout", 0.1)
    return int(hidden), float(dropout)


def _encoder_options(args) -> dict:
    """Encoder-specific options given on the command line (refused for encoders without them),
    over the ``--flowerformer-original`` preset."""
    opts = {k: v for k, v in _original_preset(args).items() if k not in ("hidden", "dropout")}
    if getattr(args, "directed", False):
        if args.encoder != "gatedgcn":
            raise SystemExit("fgp: --directed applies to --encoder gatedgcn only")
        opts["undirected"] = False
    if getattr(args, "layers", None) is not None:
        opts["layers"] = args.layers
    for name in ("reverse_successors", "heads", "layout", "norm", "flow_relu", "attention_dropout"):
        value = getattr(args, name, None)
        if value is not None:
            if args.encoder != "flowerformer":
                raise SystemExit(f"fgp: --{name.replace('_', '-')} applies to --encoder flowerformer only")
            opts[name] = value
    for name in ("consistency", "augment"):
        value = getattr(args, name, None)
        if value is not None:
            if args.encoder != "narformer":
                raise SystemExit(f"fgp: --{name} applies to --encoder narformer only")
            opts[name] = value
    return opts


def _encoder_cfg(args, batch):
    hidden, dropout = _hidden_dropout(args)
    cfg = {"hidden": hidden, "dropout": dropout, **_encoder_options(args)}
    if args.encoder == "mlp":
        cfg["max_nodes"] = int(batch.node_ptr.diff().max())
    return cfg


def cmd_pretrain(args) -> int:
    import fgp_ext
    from fgp_ext.encoders import build_encoder
    from fgp_ext.train import pretrain, save_checkpoint, set_seed

    ds = _load_data(args)
    aux_reason = _report_aux(args, ds)
    batch = fgp_ext.collate(ds.graphs)
    sp = _surrogate_params(args, ds)
    sur = _surrogate(batch, ds, sp)
    set_seed(args.seed)
    enc = build_encoder(args.encoder, ds.space.num_ops, **_encoder_cfg(args, batch))
    res = pretrain(enc, batch, sur, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                   weight_decay=args.weight_decay, aux_target=_aux(args, ds, batch),
                   standardize=args.standardize, seed=args.seed, progress=_progress(args),
                   reconstruction=not args.no_reconstruction)
    last = res.history[-1] if res.history else {}
    print(f"pre-trained {args.encoder} on {len(ds)} architectures for {args.epochs} epochs: final "
          f"reconstruction loss {_fmt(last.get('rec'))}, {res.time_per_epoch:.2f} s/epoch")
    meta = {"stage": "pretrain", "space": ds.space.name, "surrogate": sp.as_dict(), "history": res.history,
            "standardize": args.standardize, "aux_target": _aux_name(args, ds), "aux_target_reason": aux_reason,
            "target_mean": None if res.target_mean is None else res.target_mean.tolist(),
            "target_std": None if res.target_std is None else res.target_std.tolist()}
    settings = {"stage": "pretrain", "surrogate": sp.as_dict(), "epochs": args.epochs,
                "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
                "standardize": args.standardize, "aux_target": _aux_name(args, ds), "seed": args.seed,
                "reconstruction": not args.no_reconstruction}
    save_checkpoint(args.out, enc, {"flow": res.flow_head, "aux": res.aux_head}, meta, space=ds.space,
                    settings=settings)
    print(f"wrote {args.out}")
    return 0


#: fgp_ext.train.config.FINETUNE_LOSSES, spelled out so that parsing the command line imports no torch
#: (a test keeps the two equal).
FINETUNE_LOSS_CHOICES = ["hinge", "logistic", "listmle", "hinge+mse"]


def _add_finetune_optimizer(p, prefix: str = "") -> None:
    """Fine-tuning weight decay and learning-rate schedule (``prefix`` "finetune-" for ``fgp run``)."""
    p.add_argument(f"--{prefix}weight-decay", type=_args.non_negative_float, default=0.0, help="fine-tuning AdamW weight decay (0)")
    p.add_argument(f"--{prefix}schedule", choices=["constant", "cosine"], default="constant",
                   help="fine-tuning lr schedule, stepped per epoch (constant)")
    p.add_argument(f"--{prefix}warmup", type=_args.non_negative_int, default=0, help="linear warm-up epochs of the fine-tuning lr (0)")
    p.add_argument(f"--{prefix}schedule-epochs", type=_args.positive_int, default=None,
                   help="length of the cosine schedule in epochs (default: the fine-tuning epochs; "
                        "FlowerFormer's NB201 recipe: 600 with 500 epochs)")
    p.add_argument(f"--{prefix}select-after", type=_args.non_negative_int, default=0,
                   help="never keep the checkpoint of the first N fine-tuning epochs (0: any epoch); "
                        "with few validation labels an early epoch can win validation by chance")
    p.add_argument(f"--{prefix}ema", type=_args.ema_decay, default=0.0, metavar="DECAY",
                   help="validate, keep and return a moving average of the fine-tuned weights with this "
                        "decay per step, e.g. 0.99 (0: the weights themselves)")
    p.add_argument(f"--{prefix}loss", choices=FINETUNE_LOSS_CHOICES, default="hinge",
                   help="fine-tuning loss: FGP's pairwise hinge (default), pairwise logistic, listwise "
                        "ListMLE, or the hinge plus a squared error to the standardised labels")


def cmd_finetune(args) -> int:
    import fgp_ext
    from fgp_ext.encoders import build_encoder
    from fgp_ext.train import evaluate, finetune, load_checkpoint, save_checkpoint, set_seed

    ck = load_checkpoint(args.checkpoint) if args.checkpoint else None
    ds = _load_data(args, ck)     # through the checkpoint's space and op vocabulary
    target = _target(args, ds)
    batch = fgp_ext.collate(ds.graphs)
    set_seed(args.seed)
    if ck is not None:
        enc = ck.encoder
    else:
        enc = build_encoder(args.encoder, ds.space.num_ops, **_encoder_cfg(args, batch))
    split, n_train = _split(args, ds, target)
    y = ds.targets(target)
    res = finetune(enc, batch, y, split["train"], split["val"], epochs=args.epochs, batch_size=args.batch_size,
                   lr=args.lr, weight_decay=args.weight_decay, margin=args.margin, seed=args.seed,
                   progress=_progress(args), lr_schedule=args.schedule, warmup_epochs=args.warmup,
                   schedule_epochs=args.schedule_epochs, select_after=args.select_after,
                   ema_decay=args.ema, loss=args.loss)
    print(f"fine-tuned on {split['train'].size} labelled architectures ({target}); best validation tau "
          f"{res.best_val_tau:.4f} at epoch {res.best_epoch}; {res.time_per_epoch:.3f} s/epoch")
    m = evaluate(res.model, batch, y, split["test"])
    _print_metrics("test", m)
    meta = {"stage": "finetune", "space": ds.space.name, "target": target, "ratio": args.ratio,
            "n_train": n_train, "n_val": args.n_val, "perm_seed": args.perm_seed, "seed": args.seed,
            "history": res.history, "test": m, "pretrained_from": args.checkpoint}
    settings = {"stage": "finetune", "ratio": args.ratio, "n_train": n_train, "n_val": args.n_val,
                "perm_seed": args.perm_seed, "seed": args.seed, "epochs": args.epochs,
                "batch_size": args.batch_size, "lr": args.lr, "margin": args.margin,
                "weight_decay": args.weight_decay, "schedule": args.schedule, "warmup": args.warmup,
                "schedule_epochs": args.schedule_epochs, "select_after": args.select_after,
                "ema": args.ema, "loss": args.loss, "pretrain": None if ck is None else ck.settings}
    save_checkpoint(args.out, res.model.encoder, {"score": res.model.head}, meta, space=ds.space,
                    settings=settings, target=target)
    print(f"wrote {args.out}")
    return 0


def cmd_evaluate(args) -> int:
    import fgp_ext
    from fgp_ext.metrics import evaluate_ranking
    from fgp_ext.train import load_checkpoint

    ck = load_checkpoint(args.checkpoint)
    if "score" not in ck.heads:
        raise SystemExit(f"fgp: {args.checkpoint} has no score head (a pre-training checkpoint?); "
                         f"fine-tune it first with 'fgp finetune --checkpoint {args.checkpoint}'")
    ds = _load_data(args, ck)     # through the checkpoint's space and op vocabulary
    if not args.target and ck.target in ds.target_names:
        args.target = ck.target   # the label the score head was fine-tuned on
    target = _target(args, ds)
    batch = fgp_ext.collate(ds.graphs)
    if args.split == "all":
        from fgp_ext.train import labelled_indices

        idx = labelled_indices(ds.targets(target), target)
    else:
        split, _ = _split(args, ds, target)
        idx = split[args.split]
    y = ds.targets(target)
    idx = np.asarray(idx, dtype=np.int64)
    idx = idx[~np.isnan(y[idx])]
    m = evaluate_ranking(_content_order_scores(ck.predictor(), ds, batch, idx), y[idx])   # as train.evaluate
    m["n"] = int(idx.size)
    _print_metrics(f"{args.split} ({target})", m)
    if args.json:
        write_json(args.json, m)
        print(f"wrote {args.json}")
    return 0


def _content_order_scores(model, ds, batch, idx=None) -> np.ndarray:
    """Scores of the graphs ``idx`` of ``ds`` (default all), computed in an order fixed by the graphs'
    content (ops, edges, sources) and returned in ``idx``'s order: batched float sums depend on which
    graphs share a batch, so this makes the same architectures in another line order give
    bit-identical scores and metrics."""
    from fgp_ext.train import predict

    idx = np.arange(len(ds), dtype=np.int64) if idx is None else np.asarray(idx, dtype=np.int64).reshape(-1)

    def key(i):
        g = ds.graphs[i]
        return (g.ops.tobytes(), np.ascontiguousarray(g.edges).tobytes(), g.sources or ())

    order = np.array(sorted(range(idx.size), key=lambda j: key(int(idx[j]))), dtype=np.int64)
    out = np.empty(idx.size, dtype=np.float64)
    out[order] = predict(model, batch, idx[order])
    return out


def cmd_predict(args) -> int:
    """Score and rank every architecture of ``--data`` with a fine-tuned checkpoint; write a CSV in
    the file's order (row, index, name[, arch_str], score, rank; rank 1 = highest score, tied
    scores share the best of their ranks)."""
    import fgp_ext
    from fgp_ext import _io
    from fgp_ext.metrics import kendall_tau, spearman
    from fgp_ext.train import load_checkpoint

    ck = load_checkpoint(args.checkpoint)
    if "score" not in ck.heads:
        raise SystemExit(f"fgp: {args.checkpoint} has no score head (a pre-training checkpoint?); "
                         f"fine-tune it first with 'fgp finetune --checkpoint {args.checkpoint}'")
    ds = _load_data(args, ck)     # through the checkpoint's space and op vocabulary
    scores = _content_order_scores(ck.predictor(), ds, fgp_ext.collate(ds.graphs))
    if not np.isfinite(scores).all():
        bad = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise SystemExit(f"fgp: the model's score of architecture {bad} (index {int(ds.index[bad])}) is "
                         f"{scores[bad]}; the checkpoint is broken (diverged training?)")
    order = np.argsort(-scores, kind="stable")        # best first (ties in file order)
    # competition ranking: 1 + the number of higher scores (tied scores share a rank, whatever the line order)
    rank = 1 + np.searchsorted(np.sort(-scores), -scores, side="left")
    names = ds.names
    nb201 = ds.space.name == "nb201"
    ident = []
    for i, g in enumerate(ds.graphs):
        row = [i, int(ds.index[i]), names[i] or ""]
        if nb201:
            from fgp_ext.data.spaces import nb201_to_string

            row.append(nb201_to_string(g.ops))
        ident.append(row)
    header = ["row", "index", "name"] + (["arch_str"] if nb201 else []) + ["score", "rank"]
    print(f"scored {len(ds)} architectures of {args.data} ({ds.space.name}) with {args.checkpoint}; top "
          f"{min(5, len(ds))} (rank, index{', arch_str' if nb201 else ', name'}, score):")
    for i in order[:5].tolist():
        print(f"  {rank[i]:>4}  {int(ds.index[i]):>6}  {ident[i][3] if nb201 else (names[i] or '-')}  "
              f"{scores[i]:.4f}")
    target = args.target or (ck.target if ck.target in ds.target_names else None)
    if target is not None:
        if target not in ds.target_names:
            raise SystemExit(f"fgp: unknown target {target!r}; available: {ds.target_names}")
        y = ds.targets(target)
        lab = np.isfinite(y)
        if lab.sum() >= 2:
            print(f"against {target} ({int(lab.sum())} labelled): kendall_tau "
                  f"{_fmt(kendall_tau(scores[lab], y[lab]))}  spearman {_fmt(spearman(scores[lab], y[lab]))}")
    if args.out:
        _io.write_csv(args.out, (r + [float(scores[i]), int(rank[i])] for i, r in enumerate(ident)), header)
        print(f"wrote {args.out}")
    return 0


def _seed_list(text: str) -> list[int]:
    """``--seeds``: pre-training seeds joined by commas, e.g. ``21,2021``."""
    parts = [p.strip() for p in str(text).split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"must be seeds joined by commas (e.g. 21,2021), got {text!r}")
    seeds = [_args.seed(p) for p in parts]
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"a seed is given twice in {text!r}")
    return seeds


def _protocol_runs(args) -> list[tuple[int, int]]:
    """The (seed, permutation) runs of ``fgp run``: the first ``--runs`` (default 3) of the protocol's
    nine, or with ``--seeds`` every permutation of those pre-training seeds (the first ``--runs`` of
    them if given)."""
    from fgp_ext.train import protocol_runs, seed_runs

    if not args.seeds:
        return protocol_runs(3 if args.runs is None else args.runs)
    pairs = seed_runs(args.seeds)
    if args.runs is not None:
        if args.runs > len(pairs):
            raise ValueError(f"--runs {args.runs} is more than the {len(pairs)} runs of --seeds "
                             f"{','.join(map(str, args.seeds))}")
        pairs = pairs[: args.runs]
    return pairs


def _recorded_models(specs: list[str], runs: list[tuple]) -> dict:
    """The models ``--combine-with`` names, for every run of the job; a spec without methods takes
    the FGP heads (fgp, fgp_aux_head), not the baseline or self-training students. A run missing
    from a spec is named with it. run_protocol checks the splits and labels."""
    from fgp_ext.train.predictions import parse_models_spec, recorded_models

    cache: dict = {}
    try:
        recorded = recorded_models(specs, cache, default_methods=("fgp", "fgp_aux_head"))
    except ValueError as e:
        raise ValueError(f"--combine-with: {e}") from None
    for seed, perm in runs:
        if (seed, perm) not in recorded:
            lacking = [t for t in specs if (seed, perm) not in cache[parse_models_spec(t)[0]]]
            raise ValueError(f"--combine-with {' '.join(lacking)} has no run seed {seed} perm {perm}: "
                             "run the other job with the same seeds (--seeds / --runs)")
    return recorded


def cmd_run(args) -> int:
    from fgp_ext import _io
    from fgp_ext.train import ProtocolConfig, run_protocol, save_predictions

    runs = _protocol_runs(args)
    recorded = _recorded_models(args.combine_with, runs) if args.combine_with else None
    ds = _load_data(args)
    target = _target(args, ds)
    out = Path(args.out or f"fgp_results/{args.encoder}")
    _io.make_folder(out)     # before the work: a bad --out is said now, not after training
    import torch

    batch = None
    aux = None
    if _aux_name(args, ds):
        import fgp_ext

        batch = fgp_ext.collate(ds.graphs)
        aux = _aux(args, ds, batch)
    if args.finetune_aux_head and (aux is None or np.asarray(aux).ndim != 1):
        raise SystemExit("fgp: --finetune-aux-head needs a one-column --aux-target (e.g. meco or synflow)")
    extra_aux = list(args.ensemble_aux_target or [])
    from fgp_ext.train import resolve_aux_target

    for name in extra_aux:     # resolved now: a bad name or a multi-column head fails before any work
        try:
            values = resolve_aux_target(name, ds)
        except ValueError as e:
            raise SystemExit(f"fgp: --ensemble-aux-target: {e}") from None
        if args.finetune_aux_head and np.asarray(values).ndim != 1:
            raise SystemExit(f"fgp: --finetune-aux-head needs one-column auxiliary targets; --ensemble-aux-target "
                             f"{name} has {np.asarray(values).shape[1]}")
    sp = _surrogate_params(args, ds)
    hidden, dropout = _hidden_dropout(args)
    print(f"fgp run: {args.encoder} on {ds.space.name} ({len(ds)} architectures, target {target}), "
          f"{len(runs)} run(s), ratio {args.ratio}, pre-train {args.epochs_pretrain} / fine-tune "
          f"{args.epochs_finetune} epochs, {torch.get_num_threads()} thread(s)")
    aux_reason = _report_aux(args, ds)
    if extra_aux:
        print(f"also pre-trained on (--ensemble-aux-target): {', '.join(extra_aux)}")
    t0 = time.perf_counter()
    config = ProtocolConfig(
        encoder=args.encoder, target=target, runs=runs, ratio=args.ratio, n_train=args.n_train, n_val=args.n_val,
        epochs_pretrain=args.epochs_pretrain, epochs_finetune=args.epochs_finetune,
        batch_size_pretrain=args.batch_size_pretrain, batch_size_finetune=args.batch_size_finetune, lr=args.lr,
        margin=args.margin, hidden=hidden, dropout=dropout, encoder_config=_encoder_options(args), surrogate=sp,
        # named, so that --pretrained-dir caches record 'meco' (not 'array') and are shared with
        # run_protocol callers that let it resolve 'meco' itself
        aux_target=_aux_name(args, ds), standardize=args.standardize, reconstruction=not args.no_reconstruction,
        baseline=not args.no_baseline, finetune_aux_head=args.finetune_aux_head, finetune_lr=args.finetune_lr,
        finetune_weight_decay=args.finetune_weight_decay, finetune_schedule=args.finetune_schedule,
        finetune_warmup=args.finetune_warmup, finetune_schedule_epochs=args.finetune_schedule_epochs,
        finetune_select_after=args.finetune_select_after, finetune_ema=args.finetune_ema,
        finetune_loss=args.finetune_loss,
        pretrained_dir=args.pretrained_dir, ensemble=args.ensemble, folds=args.folds,
        reshuffle_folds=args.reshuffle_folds, ensemble_aux_targets=extra_aux,
        self_train=args.self_train, self_train_weight=args.self_train_weight, progress=_progress(args))
    summary = run_protocol(ds, config, aux_values=aux, unlabelled=_load_unlabelled(args, ds), combine_with=recorded)
    if recorded is not None:
        summary["combine_with"] = list(args.combine_with)
        summary["combine_with_files"] = sorted({p for run in recorded.values() for p in run["paths"]})
    summary["aux_target"] = _aux_name(args, ds)
    summary["aux_target_reason"] = aux_reason
    summary["wall_s"] = time.perf_counter() - t0
    summary["command"] = "fgp " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0] else None
    print()
    n_test = summary["runs"][0]["n_test"] if summary["runs"] else 0
    print(f"{'method':<22}{'Kendall tau':>16}{'P@1%':>18}{'P@5%':>18}{'Spearman':>12}   "
          f"({len(summary['runs'])} run(s), test set of {n_test})")
    for m, vals in summary["mean"].items():
        sd = summary["std"][m]
        print(f"{m:<22}{vals['kendall_tau']:>8.4f} ± {sd['kendall_tau']:.4f}"
              f"{vals['p@1%']:>10.4f} ± {sd['p@1%']:.4f}{vals['p@5%']:>10.4f} ± {sd['p@5%']:.4f}"
              f"{vals['spearman']:>12.4f}")
        if "single_kendall_tau" in vals:
            alone = ("student 0 alone" if m == "fgp_self_train"
                     else "member 0 alone: the same run without --ensemble / --folds")
            print(f"{'':<22}{vals['single_kendall_tau']:>8.4f} ± {sd['single_kendall_tau']:.4f}   ({alone})")
    if 0 < n_test < 500:
        print(f"note: P@1% of a {n_test}-architecture test set ranks only its top {max(int(n_test * 0.01), 0)}; "
              "read P@5%/P@10% instead")
    print(f"time per epoch: pre-training {summary['pretrain_s_per_epoch']:.2f} s, fine-tuning "
          f"{summary['finetune_s_per_epoch']:.3f} s (train steps only); wall {summary['wall_s']:.1f} s")
    if not args.no_plots:
        for p in make_plots(summary, out):
            print(f"wrote {p}")
    records = summary.pop("_artifacts", {}).get("model_scores")
    if records:
        print(f"wrote {save_predictions(out / 'predictions.npz', records)}")
    write_json(out / "summary.json", summary)
    print(f"wrote {out / 'summary.json'}")
    return 0


# ----------------------------------------------------------------------------------------------
# argument parsing
# ----------------------------------------------------------------------------------------------
def _add_data(p, target=True):
    p.add_argument("--data", default="nb201", help="'nb201' (embedded, default) or an architecture file")
    p.add_argument("--space", default=None, help="search space of --data (default: inferred)")
    p.add_argument("--limit", type=_args.limit, default=None,
                   help="use a fixed random sample of this many architectures, >= 50 (quick trials)")
    if target:
        p.add_argument("--target", default=None,
                       help="label column (default: cifar10_test_200ep if present, else the first)")
    p.add_argument("--threads", type=_args.threads, default=1,
                   help="torch intra-op CPU threads (default 1: the batches are small, and extra threads "
                        "on busy cores slow training down by 10x or more)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (default: only on a TTY)")


def _add_surrogate(p):
    p.add_argument("--sur-k", type=_args.surrogate_dim, default=None, help="surrogate dimension (default: the space's)")
    p.add_argument("--sur-std", type=_args.positive_float, default=None, help="surrogate std (default: the space's)")
    p.add_argument("--sur-alpha", type=_args.unit_interval, default=None, help="surrogate alpha (default 0.5)")
    p.add_argument("--sur-seed", type=_args.seed, default=0, help="surrogate random seed (default 0)")


def _add_encoder(p):
    p.add_argument("--encoder", default="gatedgcn", choices=["gatedgcn", "gin", "flowerformer", "narformer", "mlp"])
    p.add_argument("--hidden", type=_args.positive_int, default=None, help="width (default 128)")
    p.add_argument("--dropout", type=_args.dropout, default=None, help="dropout (default 0.1)")
    p.add_argument("--reverse-successors", choices=["all", "earliest"], default=None,
                   help="flowerformer only: the reversed pass aggregates all successors (default) or, "
                        "as the original code, only those of the earliest forward generation")
    p.add_argument("--directed", action="store_true",
                   help="gatedgcn only: pass messages along the edges only, not both ways (FGP.md makes "
                        "the graphs undirected; the authors' published gatedgcn runs do not)")
    p.add_argument("--layers", type=_args.positive_int, default=None, help="encoder layers (default: the encoder's, 3)")
    f = p.add_argument_group("flowerformer only (the original's NB201 model: --hidden 64 --layers 9 --heads 8 "
                             "--dropout 0 --layout parallel --norm batch --flow-relu --attention-dropout 0.5)")
    f.add_argument("--flowerformer-original", action="store_true",
                   help="the original's NB201 model (all of the above; explicit flags override)")
    f.add_argument("--heads", type=_args.positive_int, default=None, help="attention heads (default 4)")
    f.add_argument("--layout", choices=["sequential", "parallel"], default=None,
                   help="attention after the flow block (default) or beside it, on the layer input, as the original")
    f.add_argument("--norm", choices=["layer", "batch"], default=None, help="layer norm (default) or batch norm")
    f.add_argument("--flow-relu", action="store_true", default=None,
                   help="a ReLU on the flow passes' output, as the original")
    f.add_argument("--attention-dropout", type=_args.dropout, default=None,
                   help="dropout on the attention weights (default 0; the original 0.5)")
    n = p.add_argument_group("narformer only")
    n.add_argument("--consistency", type=_args.non_negative_float, default=None,
                   help="weight of the architecture consistency loss between the canonical and randomly "
                        "reordered (other topological order) token sequences (default 1; 0: no augmentation)")
    n.add_argument("--augment", type=_args.non_negative_int, default=None,
                   help="random topological orders per architecture and training step (default 1)")


def _add_split(p):
    p.add_argument("--ratio", type=_args.ratio, default=0.01, help="labelled share of the training pool (0.01)")
    p.add_argument("--n-train", type=_args.positive_int, default=None,
                   help="training-pool size (default: the paper's, 7813 for NB201, else half the data)")
    p.add_argument("--n-val", type=_args.non_negative_int, default=40, help="validation architectures (40)")


AUX_HELP = ("auxiliary pre-training ranking target: a data column; for NB201 a shipped zero-cost proxy "
            "(params, flops, synflow, nwot, jacov, grad_norm, snip, meco); several joined by '+' "
            "rank-vote (e.g. synflow+jacov+snip); several joined by ',' get one auxiliary output each "
            "(e.g. meco,synflow); 'auto' (default): meco on NB201; on other data the file's first usable "
            "column of params > flops > macs > meco > zico > nwot > synflow (never the --target or another "
            "label; a warning and reconstruction only when there is none); 'none': reconstruction only")


def _add_pretrain_losses(p) -> None:
    """What FGP pre-training optimises (shared by `pretrain` and `run`)."""
    p.add_argument("--aux-target", default="auto", help=AUX_HELP)
    p.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=False,
                   help="z-score each surrogate dimension before regressing it (default: no, the raw surrogate "
                        "as in the paper; standardising cost GatedGCN 0.021 tau on NB201)")
    p.add_argument("--no-reconstruction", action="store_true",
                   help="pre-train on the --aux-target ranking loss alone (the proxy-only ablation)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fgp", description="FGP: flow-based generative pre-training of "
                                 "neural-architecture encoders (pre-train, fine-tune, evaluate).")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("surrogate", help="compute the flow surrogate of every architecture")
    _add_data(p, target=False)
    _add_surrogate(p)
    p.add_argument("--out", default=None, help="write [N, k] to .npy (default) or .csv")
    p.set_defaults(func=cmd_surrogate)

    p = sub.add_parser("pretrain", help="FGP pre-training (surrogate reconstruction, no labels)")
    _add_data(p, target=False)
    _add_surrogate(p)
    _add_encoder(p)
    p.add_argument("--epochs", type=_args.non_negative_int, default=200)
    p.add_argument("--batch-size", type=_args.positive_int, default=256)
    p.add_argument("--lr", type=_args.positive_float, default=1e-3)
    p.add_argument("--weight-decay", type=_args.non_negative_float, default=1e-6)
    _add_pretrain_losses(p)
    p.add_argument("--seed", type=_args.seed, default=21)
    p.add_argument("--out", required=True, help="checkpoint to write")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="ranking fine-tuning on the protocol split")
    _add_data(p)
    _add_encoder(p)
    _add_split(p)
    p.add_argument("--checkpoint", default=None, help="pre-trained checkpoint (default: train from scratch)")
    p.add_argument("--epochs", type=_args.non_negative_int, default=200)
    p.add_argument("--batch-size", type=_args.positive_int, default=16)
    p.add_argument("--lr", type=_args.positive_float, default=1e-3)
    p.add_argument("--margin", type=_args.non_negative_float, default=0.5)
    _add_finetune_optimizer(p)
    p.add_argument("--seed", type=_args.seed, default=21)
    p.add_argument("--perm-seed", type=_args.seed, default=21, help="split permutation (21 = identity)")
    p.add_argument("--out", required=True, help="checkpoint to write")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="metrics of a fine-tuned checkpoint")
    _add_data(p)
    _add_split(p)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--perm-seed", type=_args.seed, default=21, help="split permutation (21 = identity)")
    p.add_argument("--split", default="test", choices=["test", "val", "train", "pool", "all"])
    p.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="score and rank every architecture of a file with a fine-tuned checkpoint")
    _add_data(p)
    p.add_argument("--checkpoint", required=True, help="fine-tuned checkpoint ('fgp finetune --out')")
    p.add_argument("--out", default=None,
                   help="CSV to write, one row per architecture in the file's order: row, index, name, "
                        "[arch_str (NB201)], score, rank (1 = highest score)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("run", help="the whole protocol: FGP vs supervised-only, summary JSON + plots")
    _add_data(p)
    _add_surrogate(p)
    _add_encoder(p)
    _add_split(p)
    p.add_argument("--runs", type=_args.runs, default=None,
                   help="(seed, permutation) runs, 1..9 (default 3: seeds 21/2021/202121, each with its permutation; "
                        "with --seeds: all of theirs)")
    p.add_argument("--seeds", type=_seed_list, default=None,
                   help="pre-training seeds, e.g. 21 or 21,2021: each runs with the protocol's 3 permutations "
                        "(its own first), so that the seeds of one protocol can run as separate processes")
    p.add_argument("--epochs-pretrain", type=_args.non_negative_int, default=5, help="pre-training epochs (default 5; paper 200)")
    p.add_argument("--epochs-finetune", type=_args.non_negative_int, default=100, help="fine-tuning epochs (default 100; paper 500)")
    p.add_argument("--batch-size-pretrain", type=_args.positive_int, default=256)
    p.add_argument("--batch-size-finetune", type=_args.positive_int, default=16)
    p.add_argument("--lr", type=_args.positive_float, default=1e-3, help="pre-training lr, and fine-tuning lr unless --finetune-lr")
    p.add_argument("--finetune-lr", type=_args.positive_float, default=None, help="fine-tuning lr (default: --lr)")
    _add_finetune_optimizer(p, "finetune-")
    p.add_argument("--margin", type=_args.non_negative_float, default=0.5)
    _add_pretrain_losses(p)
    p.add_argument("--unlabelled", default=None,
                   help="extra architectures for pre-training only: a file of the same space, or sample:N "
                        "(N random NAS-Bench-101 cells; NB101 data only)")
    p.add_argument("--no-baseline", action="store_true", help="skip the supervised-only baseline")
    p.add_argument("--finetune-aux-head", action="store_true",
                   help="also fine-tune from the same pre-training with the pre-trained auxiliary (proxy) head "
                        "as the score head (method fgp_aux_head); needs a one-column --aux-target")
    p.add_argument("--ensemble", type=_args.positive_int, default=1,
                   help="models per method and run (default 1): member j is pre-trained with seed + j and "
                        "fine-tuned on the run's split; the run scores with the mean of their standardised "
                        "scores and also reports member 0 alone. Costs N times the training")
    p.add_argument("--folds", type=_args.positive_int, default=1,
                   help="fine-tunings per member (default 1), each on another split of the labelled architectures: "
                        "fold 0 is the run's split, fold k>0 validates on a k-th part of the training set and "
                        "trains on the rest plus the validation set, so the models together learn from every "
                        "label. Costs K times the fine-tuning")
    p.add_argument("--reshuffle-folds", action="store_true",
                   help="with --folds and --ensemble: member j cuts the training set into its own parts (a "
                        "shuffle seeded by the permutation and j), so the members' fold models hold out "
                        "different cells; member 0 is unchanged")
    p.add_argument("--ensemble-aux-target", action="append", default=None, metavar="TARGET",
                   help="pre-train every member once more on TARGET (same names as --aux-target) instead of "
                        "--aux-target, with the member's seed, fine-tune it on the same folds and combine its "
                        "models with the others in every FGP method. Repeatable. Costs one more pre-training "
                        "and fine-tuning per member and target")
    p.add_argument("--self-train", type=_args.non_negative_int, default=0, metavar="N",
                   help="self-training (default 0: off): the fine-tuned FGP models' combined score ranks N random "
                        "architectures outside the labelled ones (no label read), then one student per member "
                        "and head is fine-tuned on all labels plus that ranking (methods fgp_self_train and "
                        "fgp_teacher_students). Costs about 2 x (members x heads) more fine-tunings")
    p.add_argument("--self-train-weight", type=_args.positive_float, default=1.0,
                   help="weight of the students' loss on the teacher's ranking (default 1)")
    p.add_argument("--combine-with", action="append", default=None, metavar="PATH.npz[:METHOD,...][[START:STOP]]",
                   help="models recorded by another fgp run job on the same seeds and splits (its predictions.npz; "
                        "a quoted glob takes the files of its --seeds processes together; default methods: fgp "
                        "and fgp_aux_head): method fgp_combined scores each run with this job's FGP models and "
                        "those together, every model weighing the same. Repeatable. Checked before any training")
    p.add_argument("--pretrained-dir", default=None,
                   help="cache of pre-trained encoders, one file per seed and pre-training settings (a key of "
                        "them is in the name): reused when they match, written when missing; runs sharing it "
                        "take turns (a file lock), a killed pre-training resumes from its .partial.pt")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--out", default=None, help="output directory (default fgp_results/<encoder>)")
    p.set_defaults(func=cmd_run)
    from fgp_ext.latency import add_latency_parser

    add_latency_parser(sub)
    from fgp_ext.latency_model import add_latency_model_parsers

    add_latency_model_parsers(sub)
    return ap


def main(argv=None) -> int:
    """Run ``fgp``. Exit status: 0 success; 2 bad arguments or input (one ``fgp: error:`` line);
    1 an output could not be written (one line ``fgp: error: cannot write FILE: CAUSE``, e.g. a
    full disk or a file-size limit; the previous file, if any, is left intact)."""
    from fgp_ext import _io

    _io.ignore_sigxfsz()   # a `ulimit -f` limit then fails the write (EFBIG) instead of killing fgp
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except _io.WriteError as e:
        print(f"fgp: error: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"fgp: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
