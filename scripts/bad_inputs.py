#!/usr/bin/env python
"""A catalogue of bad inputs to the ``fgp`` command line, each run in a subprocess and classified.

Every case is one ``fgp ...`` command on a bad argument, file or checkpoint, with the outcome it
should have:

* ``error``: the command must refuse the input;
* ``handled``: the input is legitimate (or an edge of what is legitimate) and the command must do
  the right thing, which the case checks (e.g. a CSV with a byte-order mark keeps its ``acc``
  target, NaN targets are unlabelled rows and the run's metrics stay finite).

Each outcome is classified automatically:

* **clear error**: nonzero exit, one line of message on stderr (argparse's usage lines aside),
  no ``Traceback``;
* **handled**: exit 0 and the case's check holds;
* **traceback**: a Python traceback on stderr;
* **crash**: the process died of a signal;
* **silent garbage**: exit 0 where the command should have failed, or a failed check (wrong output);
* **unclear error**: nonzero exit without a traceback, but no single message line (nothing, or
  several lines), or a message that does not name what is wrong (the option, the file, the
  checkpoint's space or the unknown op, as the case lists);
* **timeout**: the command ran past ``--timeout`` seconds.

Epoch counts and data are tiny so that the whole catalogue runs in a few minutes. ``--only CLASS``
runs one class (``args``, ``files``, ``checkpoints``, ``outputs``); ``--json OUT`` writes every
case's outcome. ``--python-path DIR`` runs the ``fgp_ext`` package found in DIR instead of the
installed one (e.g. a ``git worktree`` of an older commit; the editable install's import redirect
is switched off in the child), with ``--ops-library`` naming the compiled op library it should
load (``FGP_OPS_LIBRARY``).

    python scripts/bad_inputs.py --json bad_inputs.json
    python scripts/bad_inputs.py --only files
    python scripts/bad_inputs.py --python-path /tmp/before --ops-library build/.../_fgp_ops.so

Exit status: 0 when every case had its expected outcome, 1 otherwise.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

OUTCOMES = ("clear error", "handled", "traceback", "crash", "silent garbage", "unclear error", "timeout")
CLASSES = ("args", "files", "checkpoints", "outputs")

# The child runs the package from --python-path: drop the editable install's finder, which would
# otherwise answer ``import fgp_ext`` before sys.path is searched.
_BOOTSTRAP = (
    "import sys, runpy\n"
    "sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith('_editable_')]\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "sys.argv = ['fgp'] + sys.argv[2:]\n"
    "runpy.run_module('fgp_ext', run_name='__main__', alter_sys=True)\n"
)


@dataclass
class Case:
    id: str
    cls: str
    argv: list[str]
    expect: str  # "error" or "handled"
    why: str
    check: Callable[["Result", Path], str | None] | None = None  # None = fine, else what is wrong
    needs: tuple[str, ...] = ()  # fixtures (checkpoints) the case needs
    names: tuple[str, ...] = ()  # an error message must name one of these (option, file, cause)


@dataclass
class Result:
    rc: int | None
    stdout: str
    stderr: str
    seconds: float
    outcome: str = ""
    detail: str = ""
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# data written for the cases (no fgp_ext import: the harness must not depend on the tree it tests)

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def nb201_cells(n: int, seed: int = 0) -> list[tuple[str, float]]:
    """``n`` distinct NAS-Bench-201 cell strings with a made-up accuracy that depends on the cell."""
    rng = random.Random(seed)
    seen, out = set(), []
    while len(out) < n:
        ops = [rng.randrange(5) for _ in range(6)]
        if tuple(ops) in seen:
            continue
        seen.add(tuple(ops))
        o = [NB201_OPS[i] for i in ops]
        s = f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"
        acc = 80 + 3 * ops.count(3) + 1.5 * ops.count(2) - 4 * ops.count(0) + rng.random()
        out.append((s, round(acc, 3)))
    return out


def generic_records(n: int, seed: int = 1) -> list[dict]:
    """``n`` small DAGs of a generic space (input, hidden ops, output) with an ``acc`` target."""
    rng = random.Random(seed)
    vocab = ("conv3", "conv1", "pool", "skip")
    recs = []
    for i in range(n):
        k = rng.randint(2, 5)
        ops = ["input"] + [rng.choice(vocab) for _ in range(k)] + ["output"]
        edges = [[j, j + 1] for j in range(k + 1)]
        for _ in range(rng.randint(0, 3)):
            a = rng.randrange(k + 1)
            b = rng.randrange(a + 1, k + 2)
            if [a, b] not in edges:
                edges.append([a, b])
        acc = 70 + 5 * ops.count("conv3") + 2 * ops.count("conv1") + rng.random()
        recs.append({"name": f"g{i}", "ops": ops, "edges": edges, "acc": round(acc, 3)})
    return recs


def jsonl(recs) -> str:
    return "".join(json.dumps(r) + "\n" for r in recs)


def write_data(d: Path) -> None:
    """Every data file the cases read, good and bad, under ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    cells = nb201_cells(120)
    csv = "index,arch_str,acc\n" + "".join(f"{i},{s},{a}\n" for i, (s, a) in enumerate(cells))
    (d / "good.csv").write_text(csv)
    nb_recs = [{"index": i, "arch_str": s, "acc": a} for i, (s, a) in enumerate(cells)]
    (d / "good_nb201.jsonl").write_text(jsonl(nb_recs))
    gen = generic_records(120)
    (d / "good_generic.jsonl").write_text(jsonl(gen))

    # latency tables (index, arch_str, lat_*) for the latency commands: a made-up latency that
    # grows with the convolutions of the cell
    lat = [(s, round(1 + 0.5 * s.count("nor_conv_3x3") + 0.2 * s.count("nor_conv_1x1") + 0.013 * (i % 7), 4))
           for i, (s, _) in enumerate(cells)]

    def lat_csv(rows) -> str:
        return "index,arch_str,lat_new\n" + "".join(f"{i},{s},{v}\n" for i, (s, v) in enumerate(rows))

    (d / "lat.csv").write_text(lat_csv(lat))
    (d / "lat_few.csv").write_text(lat_csv(lat[:6]))
    (d / "lat_nan.csv").write_text(lat_csv([(s, "nan" if i % 4 == 0 else v) for i, (s, v) in enumerate(lat)]))
    for name, bad in (("text", "fast"), ("neg", "-3"), ("zero", "0"), ("inf", "inf")):
        (d / f"lat_{name}.csv").write_text(lat_csv([(s, bad if i == 5 else v) for i, (s, v) in enumerate(lat)]))

    (d / "empty.jsonl").write_text("")
    (d / "empty.csv").write_text("")
    (d / "empty.json").write_text("")
    (d / "empty_array.json").write_text("[]\n")
    (d / "blank_lines.jsonl").write_text("\n  \n\n")
    (d / "header_only.csv").write_text("index,arch_str,acc\n")
    (d / "a_dir").mkdir(exist_ok=True)
    (d / "a_dir.jsonl").mkdir(exist_ok=True)
    garbage = random.Random(3).randbytes(4096)
    (d / "garbage").write_bytes(garbage)
    (d / "garbage.jsonl").write_bytes(garbage)
    (d / "garbage.csv").write_bytes(garbage)
    (d / "nul_bytes.jsonl").write_bytes(b"\x00" * 64 + b"\n")
    (d / "latin1.csv").write_bytes(("index,arch_str,acc\n0," + cells[0][0] + ",9\u00e9\n").encode("latin-1"))
    gz = gzip.compress(jsonl(nb_recs).encode())
    (d / "truncated.jsonl.gz").write_bytes(gz[: len(gz) // 2])
    (d / "not_gzip.jsonl.gz").write_bytes(jsonl(nb_recs).encode())
    (d / "good.jsonl.gz").write_bytes(gz)
    (d / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (d / "deep.jsonl").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    (d / "deep_field.jsonl").write_text(jsonl(nb_recs[:5]) + '{"arch_str": "' + cells[5][0] + '", "acc": '
                                        + "[" * 50_000 + "]" * 50_000 + "}\n")
    lp = d / "loop.jsonl"
    if not lp.is_symlink():
        lp.symlink_to(lp.name)

    # numbers
    big = dict(gen[1])
    big["edges"] = [[0, 2 ** 70]] + big["edges"]
    (d / "int_edge_huge.jsonl").write_text(jsonl([gen[0], big] + gen[2:]))
    big = dict(nb_recs[1], index=2 ** 70)
    (d / "int_index_huge.jsonl").write_text(jsonl([nb_recs[0], big] + nb_recs[2:]))
    (d / "int_target_huge.jsonl").write_text(jsonl(nb_recs[:3]) + '{"arch_str": "' + cells[3][0]
                                             + '", "acc": 1' + "0" * 400 + "}\n" + jsonl(nb_recs[4:]))
    (d / "float_target_huge.jsonl").write_text(jsonl(nb_recs[:3]) + '{"arch_str": "' + cells[3][0]
                                               + '", "acc": 1e999}\n' + jsonl(nb_recs[4:]))
    inf = [dict(r) for r in nb_recs]
    inf[7]["acc"] = math.inf
    (d / "inf_target.jsonl").write_text(jsonl(inf))  # json writes Infinity
    inf[7]["acc"] = -math.inf
    (d / "neginf_target.jsonl").write_text(jsonl(inf))
    (d / "inf_target.csv").write_text(csv.replace(f"8,{cells[8][0]},{cells[8][1]}", f"8,{cells[8][0]},inf"))
    nan = [dict(r) for r in nb_recs]
    for r in nan[::3]:
        r["acc"] = None
    (d / "nan_targets.jsonl").write_text(jsonl(nan))
    for r in nan[1::3]:
        r["acc"] = math.nan
    (d / "nan_targets_literal.jsonl").write_text(jsonl(nan))  # json writes NaN
    (d / "nan_targets.csv").write_text("index,arch_str,acc\n" + "".join(
        f"{i},{s},{'nan' if i % 3 == 0 else ('' if i % 3 == 1 else a)}\n" for i, (s, a) in enumerate(cells)))
    (d / "all_nan.jsonl").write_text(jsonl([{"arch_str": r["arch_str"], "acc": None} for r in nb_recs]))
    (d / "string_target.jsonl").write_text(jsonl(nb_recs[:4] + [dict(nb_recs[4], acc="93.1")] + nb_recs[5:]))
    (d / "bool_target.jsonl").write_text(jsonl(nb_recs[:4] + [dict(nb_recs[4], acc=True)] + nb_recs[5:]))

    # encodings and line endings
    bom = "\ufeff"
    (d / "bom.csv").write_text(bom + csv)
    (d / "bom.jsonl").write_text(bom + jsonl(nb_recs))
    (d / "bom.json").write_text(bom + json.dumps(nb_recs))
    (d / "crlf.csv").write_text(csv.replace("\n", "\r\n"))
    (d / "crlf.jsonl").write_text(jsonl(nb_recs).replace("\n", "\r\n"))
    (d / "array.json").write_text(json.dumps(nb_recs))

    # columns and structure
    (d / "no_arch_str.csv").write_text(csv.replace("arch_str", "cell", 1))
    (d / "text_column.csv").write_text(csv.replace(f"5,{cells[5][0]},{cells[5][1]}", f"5,{cells[5][0]},high"))
    (d / "ragged.csv").write_text(csv.replace(f"5,{cells[5][0]},{cells[5][1]}", f"5,{cells[5][0]}"))
    (d / "dup_column.csv").write_text(csv.replace("index,arch_str,acc", "acc,arch_str,acc", 1))
    (d / "bad_arch_str.csv").write_text(csv.replace(cells[9][0], "|conv_9x9~0|+|none~0|none~1|", 1))
    (d / "bad_json_line.jsonl").write_text(jsonl(nb_recs[:2]) + '{"arch_str": "' + cells[2][0] + '", acc: 1}\n'
                                           + jsonl(nb_recs[3:]))
    (d / "record_is_list.jsonl").write_text(jsonl(nb_recs[:2]) + "[1, 2, 3]\n" + jsonl(nb_recs[3:]))
    (d / "object_not_array.json").write_text(json.dumps({"archs": nb_recs}, indent=1))
    (d / "unknown_format.txt").write_text("hello world\nthis is not an architecture file\n")
    (d / "mixed_spaces.jsonl").write_text(jsonl(nb_recs[:3] + gen[:3] + nb_recs[3:]))
    (d / "no_structure.jsonl").write_text(jsonl([{"acc": 1.0}] * 10))

    def gen_with(i, **kw):
        recs = [dict(r) for r in gen]
        recs[i].update(kw)
        return jsonl(recs)

    (d / "sources_empty.jsonl").write_text(jsonl([dict(r, sources=[]) for r in gen]))
    (d / "sources_empty_one.jsonl").write_text(gen_with(6, sources=[]))
    (d / "sources_out_of_range.jsonl").write_text(gen_with(6, sources=[99]))
    (d / "sources_not_list.jsonl").write_text(gen_with(6, sources="input"))
    (d / "cycle.jsonl").write_text(gen_with(6, edges=gen[6]["edges"] + [[len(gen[6]["ops"]) - 1, 0]]))
    (d / "self_loop.jsonl").write_text(gen_with(6, edges=gen[6]["edges"] + [[1, 1]]))
    (d / "edge_out_of_range.jsonl").write_text(gen_with(6, edges=gen[6]["edges"] + [[0, 40]]))
    (d / "negative_edge.jsonl").write_text(gen_with(6, edges=gen[6]["edges"] + [[-1, 2]]))
    (d / "dup_edge.jsonl").write_text(gen_with(6, edges=gen[6]["edges"] + [gen[6]["edges"][0]]))
    (d / "empty_ops.jsonl").write_text(gen_with(6, ops=[], edges=[]))
    (d / "op_not_string.jsonl").write_text(gen_with(6, ops=[1, 2, 3], edges=[[0, 1], [1, 2]]))
    (d / "ragged_matrix.jsonl").write_text(jsonl(gen[:6]) + json.dumps(
        {"ops": ["input", "conv3", "output"], "matrix": [[0, 1, 0], [0, 0], [0, 0, 0]], "acc": 1.0}) + "\n"
        + jsonl(gen[7:]))
    unknown = [dict(r) for r in gen]
    unknown[6] = dict(unknown[6], ops=["input"] + ["sep_conv_7x7"] * (len(unknown[6]["ops"]) - 2) + ["output"])
    (d / "unknown_op.jsonl").write_text(jsonl(unknown))
    (d / "few_archs.jsonl").write_text(jsonl(nb_recs[:5]))
    (d / "one_arch.jsonl").write_text(jsonl(nb_recs[:1]))
    single = [dict(r) for r in gen]
    for r in single[::10]:
        r.update(ops=["input"], edges=[])
    (d / "single_node.jsonl").write_text(jsonl(single))
    dangling = [dict(r) for r in gen]
    for r in dangling[::10]:
        r.update(ops=r["ops"] + ["conv1"])  # a node without edges
    (d / "dangling_node.jsonl").write_text(jsonl(dangling))
    (d / "cells.txt").write_text("".join(s + "\n" for s, _ in cells[:3]))
    (d / "a_file").write_text("x\n")


# ----------------------------------------------------------------------------------------------
# checks of "handled" cases (None: right; a string: what is wrong)


def _summary_finite(res: Result, out: Path) -> str | None:
    p = out / "summary.json"
    if not p.is_file():
        return "no summary.json"
    try:
        s = json.loads(p.read_text())
        taus = [s["mean"][m]["kendall_tau"] for m in s["mean"]]
    except Exception as e:  # noqa: BLE001
        return f"summary.json unreadable: {type(e).__name__}"
    if not taus or any(t is None or not math.isfinite(t) for t in taus):
        return f"non-finite Kendall tau in summary.json: {taus}"
    return None


def run_ok(target: str | None = None, n: int | None = None):
    """The run finished with finite metrics, on ``target`` and ``n`` architectures if given."""
    def check(res: Result, out: Path) -> str | None:
        why = _summary_finite(res, out)
        if why:
            return why
        s = json.loads((out / "summary.json").read_text())
        if target is not None and s.get("target") != target:
            return f"trained on target {s.get('target')!r}, not {target!r}"
        if n is not None and s.get("num_archs") != n:
            return f"read {s.get('num_archs')} architectures, not {n}"
        return None
    return check


def file_ok(name: str, rows: int | None = None):
    def check(res: Result, out: Path) -> str | None:
        p = out / name
        if not p.is_file() or p.stat().st_size == 0:
            return f"{name} not written"
        if rows is not None:
            import numpy as np

            a = np.load(p, allow_pickle=False)
            if a.shape[0] != rows:
                return f"{name} has {a.shape[0]} rows, not {rows}"
        return None
    return check


def stdout_has(*fragments):
    def check(res: Result, out: Path) -> str | None:
        for f in fragments:
            if f not in res.stdout:
                return f"stdout lacks {f!r}"
        return None
    return check


# ----------------------------------------------------------------------------------------------
# the catalogue

CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
HUGE = str(2 ** 70)


def catalogue(commands: set[str], predict_help: str) -> list[Case]:
    """All cases; ``{D}`` is the data folder, ``{O}`` the case's own output folder, ``{PRE}`` /
    ``{FT}`` / ``{GFT}`` / ``{LAT}`` the fixture checkpoints (NB201 pre-trained, NB201 fine-tuned,
    generic-space fine-tuned, NB201 latency model)."""
    Q = ["--no-progress"]
    RUN = ["run", "--hidden", "8", "--epochs-pretrain", "1", "--epochs-finetune", "1", "--runs", "1",
           "--no-plots", "--out", "{O}", *Q]
    RUN_NB = [*RUN, "--limit", "100", "--ratio", "0.5", "--n-val", "10"]
    RUN_F = [*RUN, "--ratio", "0.5", "--n-val", "10", "--aux-target", "none"]  # + --data FILE
    PRE = ["pretrain", "--hidden", "8", "--epochs", "1", "--limit", "60", "--out", "{O}/pre.pt", *Q]
    FT = ["finetune", "--hidden", "8", "--epochs", "1", "--limit", "100", "--ratio", "0.5", "--n-val", "10",
          "--out", "{O}/ft.pt", *Q]
    EV = ["evaluate", "--limit", "100", "--ratio", "0.5", "--n-val", "10"]
    SUR = ["surrogate", "--limit", "60", "--out", "{O}/s.npy"]
    LAT = ["latency", "--space", "nb201", "--arch", CELL, "--warmup", "0", "--repeats", "1"]
    cases: list[Case] = []

    def add(id, cls, argv, expect, why, check=None, needs=(), names=None):
        if names is None:
            if cls == "args":  # the option under test, e.g. "--batch-size"
                names = tuple(t for t in id.split() if t.startswith("--"))[:1]
            else:  # the file under test
                names = tuple(Path(a).name for a in argv if a.startswith("{D}/"))[-1:]
        cases.append(Case(id, cls, list(argv), expect, why, check, tuple(needs), tuple(names)))

    # -- argument ranges ---------------------------------------------------------------------
    A = "args"
    for v in ("-1", "0"):
        add(f"pretrain --batch-size {v}", A, [*PRE, "--batch-size", v], "error", "batch size >= 1")
        add(f"finetune --batch-size {v}", A, [*FT, "--batch-size", v], "error", "batch size >= 1")
        add(f"run --batch-size-finetune {v}", A, [*RUN_NB, "--batch-size-finetune", v], "error", "batch size >= 1")
        add(f"run --batch-size-pretrain {v}", A, [*RUN_NB, "--batch-size-pretrain", v], "error", "batch size >= 1")
        add(f"run --threads {v}", A, [*RUN_NB, "--threads", v], "error", "threads >= 1")
        add(f"latency --batch-size {v}", A, [*LAT, "--batch-size", v], "error", "batch size >= 1")
    add("pretrain --batch-size 2^70", A, [*PRE, "--batch-size", HUGE], "handled",
        "a batch larger than the data is one batch", file_ok("pre.pt"))
    add("pretrain --epochs -5", A, [*PRE, "--epochs", "-5"], "error", "epochs >= 0")
    add("pretrain --epochs 0", A, [*PRE, "--epochs", "0"], "handled", "zero epochs: the initial encoder is saved",
        file_ok("pre.pt"))
    add("finetune --epochs -5", A, [*FT, "--epochs", "-5"], "error", "epochs >= 0")
    add("run --epochs-pretrain -5", A, [*RUN_NB, "--epochs-pretrain", "-5"], "error", "epochs >= 0")
    add("run --epochs-finetune -5", A, [*RUN_NB, "--epochs-finetune", "-5"], "error", "epochs >= 0")
    add("run --runs 0", A, [*RUN_NB, "--runs", "0"], "error", "runs in 1..9")
    add("run --runs 10", A, [*RUN_NB, "--runs", "10"], "error", "runs in 1..9")
    add("pretrain --threads -1", A, [*PRE, "--threads", "-1"], "error", "threads >= 1")
    add("surrogate --threads 2^70", A, [*SUR, "--threads", HUGE], "error", "threads fit the machine")
    add("run --n-val -5", A, [*RUN_NB, "--n-val", "-5"], "error", "n-val >= 0")
    add("run --n-val 2^70", A, [*RUN_NB, "--n-val", HUGE], "error", "no test set is left")
    add("evaluate --n-val -5", A, [*EV, "--checkpoint", "{FT}", "--n-val", "-5"], "error", "n-val >= 0",
        needs=("FT",))
    add("run --n-train -5", A, [*RUN_NB, "--n-train", "-5"], "error", "n-train >= 1")
    add("run --n-train 0", A, [*RUN_NB, "--n-train", "0"], "error", "n-train >= 1")
    for v in ("0", "-0.1", "1.5", "nan", "inf"):
        add(f"run --ratio {v}", A, [*RUN_NB, "--ratio", v], "error", "ratio in (0, 1]")
    add("finetune --ratio 2", A, [*FT, "--ratio", "2"], "error", "ratio in (0, 1]")
    add("evaluate --ratio 0", A, [*EV, "--checkpoint", "{FT}", "--ratio", "0"], "error", "ratio in (0, 1]",
        needs=("FT",))
    add("run --ratio 1", A, [*RUN_NB, "--ratio", "1"], "handled", "ratio 1 labels the whole pool", run_ok())
    add("run --limit -1", A, [*RUN_NB, "--limit", "-1"], "error", "limit >= 50")
    add("surrogate --limit 2^70", A, ["surrogate", "--limit", HUGE, "--out", "{O}/s.npy"], "handled",
        "a limit above the data size keeps all of it", file_ok("s.npy", 15625))
    add("pretrain --hidden 0", A, [*PRE, "--hidden", "0"], "error", "hidden >= 1")
    add("pretrain --hidden -8", A, [*PRE, "--hidden", "-8"], "error", "hidden >= 1")
    add("pretrain --layers 0", A, [*PRE, "--layers", "0"], "error", "layers >= 1")
    add("pretrain --heads 0", A, [*PRE, "--encoder", "flowerformer", "--heads", "0"], "error", "heads >= 1")
    add("pretrain --dropout 1.5", A, [*PRE, "--dropout", "1.5"], "error", "dropout in [0, 1)")
    add("pretrain --dropout -0.1", A, [*PRE, "--dropout", "-0.1"], "error", "dropout in [0, 1)")
    add("pretrain --attention-dropout 2", A, [*PRE, "--encoder", "flowerformer", "--attention-dropout", "2"],
        "error", "dropout in [0, 1)")
    add("pretrain --lr -1", A, [*PRE, "--lr", "-1"], "error", "lr > 0", names=("lr", "learning rate"))
    add("pretrain --lr nan", A, [*PRE, "--lr", "nan"], "error", "lr finite", names=("lr", "learning rate"))
    # training that diverges: non-finite predictions must stop the run at the epoch they appear in
    add("run --lr 1e30 (diverges)", A, [*RUN_NB, "--epochs-pretrain", "2", "--lr", "1e30"], "error",
        "NaN predictions are reported with the epoch", names=("epoch",))
    add("pretrain --lr 1e30 (diverges)", A, [*PRE, "--lr", "1e30"], "error",
        "NaN losses are reported with the epoch", names=("epoch",))
    add("run --space bogus", A, [*RUN_NB, "--space", "bogus"], "error", "unknown space")
    add("run --space nb101 (data nb201)", A, [*RUN_NB, "--space", "nb101"], "error", "the data is another space",
        names=("nb101",))
    add("run --aux-target bogus", A, [*RUN_NB, "--aux-target", "bogus"], "error", "no such column or proxy")
    add("pretrain --weight-decay -1", A, [*PRE, "--weight-decay", "-1"], "error", "weight decay >= 0")
    add("finetune --margin -1", A, [*FT, "--margin", "-1"], "error", "margin >= 0")
    add("finetune --warmup -1", A, [*FT, "--warmup", "-1"], "error", "warm-up epochs >= 0")
    add("finetune --schedule-epochs 0", A, [*FT, "--schedule", "cosine", "--schedule-epochs", "0"], "error",
        "schedule epochs >= 1")
    add("run --finetune-lr 0", A, [*RUN_NB, "--finetune-lr", "0"], "error", "lr > 0",
        names=("finetune-lr", "learning rate"))
    add("surrogate --sur-k 0", A, [*SUR, "--sur-k", "0"], "error", "surrogate dimension >= 1")
    add("surrogate --sur-k 2^70", A, [*SUR, "--sur-k", HUGE], "error", "an [N, 2^70] surrogate cannot be allocated")
    add("surrogate --sur-k -3", A, [*SUR, "--sur-k", "-3"], "error", "surrogate dimension >= 1")
    add("surrogate --sur-std -1", A, [*SUR, "--sur-std", "-1"], "error", "std > 0")
    add("surrogate --sur-std nan", A, [*SUR, "--sur-std", "nan"], "error", "std finite")
    add("surrogate --sur-alpha inf", A, [*SUR, "--sur-alpha", "inf"], "error", "alpha finite")
    add("surrogate --sur-seed -1", A, [*SUR, "--sur-seed", "-1"], "error", "seed in [0, 2^32)")
    add("pretrain --seed 2^70", A, [*PRE, "--seed", HUGE], "error", "seed in [0, 2^32)")
    add("finetune --perm-seed -1", A, [*FT, "--perm-seed", "-1"], "error", "seed in [0, 2^32)")
    add("pretrain --epochs abc", A, [*PRE, "--epochs", "abc"], "error", "not an integer")
    add("latency --repeats 0", A, [*LAT, "--repeats", "0"], "error", "repeats >= 1")
    add("latency --warmup -1", A, [*LAT, "--warmup", "-1"], "error", "warm-up >= 0")
    add("latency --threads 0", A, [*LAT, "--threads", "0"], "error", "threads >= 1")
    add("latency --threads 100000", A, [*LAT, "--threads", "100000"], "error", "threads fit the machine")
    add("latency --resolution 0", A, [*LAT, "--resolution", "0"], "error", "resolution >= 1")
    add("latency --num-classes 0", A, [*LAT, "--num-classes", "0"], "error", "classes >= 1")
    add("latency --limit 0", A, ["latency", "--space", "nb201", "--file", "{D}/cells.txt", "--limit", "0",
                                 "--repeats", "1"], "error", "limit >= 1")
    add("latency --arch bad cell", A, ["latency", "--space", "nb201", "--arch", "|conv_9x9~0|", "--repeats", "1"],
        "error", "unknown op", names=("arch", "architecture", "cell"))
    add("run --unlabelled sample:-5", A, [*RUN_F, "--data", "{D}/good_nb201.jsonl", "--unlabelled", "sample:-5"],
        "error", "sample count >= 1 (and NB101 only)")

    # -- files ---------------------------------------------------------------------------------
    F = "files"
    err_files = {
        "missing file": "missing.jsonl", "directory": "a_dir", "directory named .jsonl": "a_dir.jsonl",
        "empty .jsonl": "empty.jsonl", "empty .csv": "empty.csv", "empty .json": "empty.json",
        "empty JSON array": "empty_array.json", "blank lines only": "blank_lines.jsonl",
        "CSV header only": "header_only.csv", "binary garbage": "garbage",
        "binary garbage .jsonl": "garbage.jsonl", "binary garbage .csv": "garbage.csv",
        "NUL bytes": "nul_bytes.jsonl", "Latin-1 CSV": "latin1.csv", "truncated gzip": "truncated.jsonl.gz",
        "plain text named .gz": "not_gzip.jsonl.gz", "100000-deep JSON array": "deep.json",
        "100000-deep JSONL line": "deep.jsonl", "50000-deep target field": "deep_field.jsonl",
        "symlink loop": "loop.jsonl", "edge id 2^70": "int_edge_huge.jsonl", "index 2^70": "int_index_huge.jsonl",
        "integer target 10^400": "int_target_huge.jsonl", "float target 1e999": "float_target_huge.jsonl",
        "inf target (JSONL)": "inf_target.jsonl", "-inf target (JSONL)": "neginf_target.jsonl",
        "inf target (CSV)": "inf_target.csv", "all targets null": "all_nan.jsonl",
        "string target": "string_target.jsonl", "boolean target": "bool_target.jsonl",
        "CSV without arch_str": "no_arch_str.csv", "CSV text in a number column": "text_column.csv",
        "ragged CSV row": "ragged.csv", "duplicate CSV column": "dup_column.csv",
        "bad NB201 cell string": "bad_arch_str.csv", "invalid JSON line": "bad_json_line.jsonl",
        "JSONL record is a list": "record_is_list.jsonl", "JSON object, not array": "object_not_array.json",
        "unknown format": "unknown_format.txt", "two spaces in one file": "mixed_spaces.jsonl",
        "records without structure": "no_structure.jsonl", '"sources": [] everywhere': "sources_empty.jsonl",
        '"sources": [] in one record': "sources_empty_one.jsonl", "source out of range": "sources_out_of_range.jsonl",
        "sources not a list": "sources_not_list.jsonl", "cycle": "cycle.jsonl", "self-loop": "self_loop.jsonl",
        "edge out of range": "edge_out_of_range.jsonl", "negative edge": "negative_edge.jsonl",
        "duplicate edge": "dup_edge.jsonl", "empty ops": "empty_ops.jsonl", "ops not strings": "op_not_string.jsonl",
        "ragged matrix": "ragged_matrix.jsonl", "five architectures": "few_archs.jsonl",
    }
    for name, fname in err_files.items():
        names = ("test set",) if fname == "few_archs.jsonl" else (fname,)  # too few for the split
        add(f"run --data <{name}>", F, [*RUN_F, "--data", f"{{D}}/{fname}"], "error", name, names=names)
    add("surrogate --data </dev/zero>", F, ["surrogate", "--data", "/dev/zero"], "error", "an endless device",
        names=("/dev/zero",))
    add("surrogate --data <directory>", F, ["surrogate", "--data", "{D}/a_dir"], "error", "a directory")
    add("surrogate --data <100000-deep JSON array>", F, ["surrogate", "--data", "{D}/deep.json"], "error", "deep")
    add("surrogate --data <one architecture>", F, ["surrogate", "--data", "{D}/one_arch.jsonl",
                                                   "--out", "{O}/s.npy"], "handled",
        "one architecture has a surrogate", file_ok("s.npy", 1))
    add("run --target <wrong column>", F, [*RUN_F, "--data", "{D}/good.csv", "--target", "latency"], "error",
        "no such target column", names=("latency",))
    add("run --unlabelled <another space>", F, [*RUN_F, "--data", "{D}/good_nb201.jsonl",
                                                "--unlabelled", "{D}/good_generic.jsonl"], "error",
        "unlabelled architectures of another space")
    add("run --unlabelled <empty file>", F, [*RUN_F, "--data", "{D}/good_nb201.jsonl",
                                             "--unlabelled", "{D}/empty.jsonl"], "error", "empty file")
    add("latency --file <missing>", F, ["latency", "--space", "nb201", "--file", "{D}/missing.txt"], "error", "missing")
    add("latency --file <directory>", F, ["latency", "--space", "nb201", "--file", "{D}/a_dir"], "error", "directory")
    add("latency --file <binary garbage>", F, ["latency", "--space", "nb201", "--file", "{D}/garbage"], "error",
        "binary")
    add("latency --file <100000-deep JSON>", F, ["latency", "--space", "nb201", "--file", "{D}/deep.json"], "error",
        "deep nesting")
    add("latency --file <empty>", F, ["latency", "--space", "nb201", "--file", "{D}/empty.jsonl"], "error", "empty")
    # legitimate files at the edges of the formats
    add("run --data <UTF-8 BOM CSV>", F, [*RUN_F, "--data", "{D}/bom.csv"], "handled",
        "the BOM is stripped: 'index' stays the index, 'acc' is the target", run_ok("acc", 120))
    add("run --data <UTF-8 BOM JSONL>", F, [*RUN_F, "--data", "{D}/bom.jsonl"], "handled", "BOM stripped",
        run_ok("acc", 120))
    add("run --data <UTF-8 BOM JSON>", F, [*RUN_F, "--data", "{D}/bom.json"], "handled", "BOM stripped",
        run_ok("acc", 120))
    add("run --data <CRLF CSV>", F, [*RUN_F, "--data", "{D}/crlf.csv"], "handled", "CRLF line ends",
        run_ok("acc", 120))
    add("run --data <CRLF JSONL>", F, [*RUN_F, "--data", "{D}/crlf.jsonl"], "handled", "CRLF line ends",
        run_ok("acc", 120))
    add("run --data <gzip JSONL>", F, [*RUN_F, "--data", "{D}/good.jsonl.gz"], "handled", "gzip",
        run_ok("acc", 120))
    add("run --data <null targets (JSONL)>", F, [*RUN_F, "--data", "{D}/nan_targets.jsonl"], "handled",
        "null = unlabelled: skipped by the protocol, metrics finite", run_ok("acc", 120))
    add("run --data <NaN targets (JSONL)>", F, [*RUN_F, "--data", "{D}/nan_targets_literal.jsonl"], "handled",
        "NaN = unlabelled", run_ok("acc", 120))
    add("run --data <nan / empty targets (CSV)>", F, [*RUN_F, "--data", "{D}/nan_targets.csv"], "handled",
        "nan / empty = unlabelled", run_ok("acc", 120))
    add("run --data <one-node graphs>", F, [*RUN_F, "--data", "{D}/single_node.jsonl", "--encoder", "flowerformer"],
        "handled", "a graph of one node is a graph", run_ok("acc", 120))
    add("run --data <nodes without edges>", F, [*RUN_F, "--data", "{D}/dangling_node.jsonl", "--encoder", "gin"],
        "handled", "a node without edges is a source and a sink", run_ok("acc", 120))
    add("run --data <generic DAGs>", F, [*RUN_F, "--data", "{D}/good_generic.jsonl"], "handled",
        "a generic space file", run_ok("acc", 120))

    # -- checkpoints -------------------------------------------------------------------------
    C = "checkpoints"
    bad_ck = {"missing": "{D}/missing.pt", "0-byte": "{D}/zero.pt", "random bytes": "{D}/garbage",
              "truncated": "{D}/truncated.pt", "torch.save of a dict": "{D}/foreign.pt",
              "JSON file": "{D}/array.json", "directory": "{D}/a_dir", "pickle with code": "{D}/evil.pt"}
    for name, path in bad_ck.items():
        need = ("FT",) if name == "truncated" else ()
        add(f"evaluate --checkpoint <{name}>", C, [*EV, "--checkpoint", path], "error", name, needs=need,
            names=(Path(path).name,))
    for name in ("0-byte", "random bytes", "torch.save of a dict"):
        add(f"finetune --checkpoint <{name}>", C, [*FT, "--checkpoint", bad_ck[name]], "error", name,
            names=(Path(bad_ck[name]).name,))
    add("evaluate --checkpoint <pre-training>", C, [*EV, "--checkpoint", "{PRE}"], "error",
        "a pre-training checkpoint has no score head", needs=("PRE",))
    add("evaluate <NB201 checkpoint> on generic file", C, [*EV[:1], "--checkpoint", "{FT}", "--data",
                                                            "{D}/good_generic.jsonl", "--ratio", "0.5", "--n-val", "10"],
        "error", "another space", needs=("FT",), names=("space",))
    add("evaluate <generic checkpoint> on NB201", C, [*EV, "--checkpoint", "{GFT}"], "error", "another space",
        needs=("GFT",), names=("space",))
    add("evaluate <generic checkpoint> on unknown op", C, [*EV[:1], "--checkpoint", "{GFT}", "--data",
                                                           "{D}/unknown_op.jsonl", "--ratio", "0.5", "--n-val", "10"],
        "error", "an op the checkpoint never saw", needs=("GFT",),
        names=("sep_conv_7x7",))
    add("finetune --checkpoint <another space>", C, [*FT[:1], "--checkpoint", "{PRE}", "--data",
                                                     "{D}/good_generic.jsonl", "--ratio", "0.5", "--n-val", "10",
                                                     "--epochs", "1", "--out", "{O}/ft.pt", *Q],
        "error", "another space", needs=("PRE",), names=("space",))
    add("run --pretrained-dir <a file>", C, [*RUN_NB, "--pretrained-dir", "{D}/a_file"], "error",
        "cache folder is a file")
    add("run --pretrained-dir <corrupt cache>", C, [*RUN_NB, "--pretrained-dir", "{D}/bad_cache"], "error",
        "a corrupt cached pre-training")
    add("evaluate <same file, lines reordered>", C, [*EV[:1], "--checkpoint", "{GFT}", "--data",
                                                     "{D}/good_generic_shuffled.jsonl", "--split", "all"],
        "handled", "same metrics for any line order", needs=("GFT",), check=None)  # check set in main()
    if "predict" in commands:
        P = ["predict"]
        outp = ["--out", "{O}/pred.csv"] if "--out" in predict_help else []
        add("predict --checkpoint <0-byte>", C, [*P, "--checkpoint", "{D}/zero.pt", "--data", "nb201", *outp],
            "error", "0-byte")
        add("predict --checkpoint <random bytes>", C, [*P, "--checkpoint", "{D}/garbage", "--data", "nb201", *outp],
            "error", "corrupt")
        add("predict <NB201 checkpoint> on generic file", C, [*P, "--checkpoint", "{FT}", "--data",
                                                               "{D}/good_generic.jsonl", *outp],
            "error", "another space", needs=("FT",), names=("space",))
        add("predict <generic checkpoint> on unknown op", C, [*P, "--checkpoint", "{GFT}", "--data",
                                                               "{D}/unknown_op.jsonl", *outp],
            "error", "unknown op", needs=("GFT",), names=("sep_conv_7x7",))
        add("predict --data <binary garbage>", C, [*P, "--checkpoint", "{FT}", "--data", "{D}/garbage", *outp],
            "error", "binary", needs=("FT",))

    # -- the latency predictor ---------------------------------------------------------------------
    if "latency-adapt" in commands:
        LT = ["latency-train", "--no-tune", "--out", "{O}/lat.npz"]
        LA = ["latency-adapt", "--model", "{LAT}"]
        LAD = [*LA, "--data", "{D}/lat.csv", "--target", "lat_new"]
        add("latency-train --devices lat_bogus", A, [*LT, "--devices", "lat_bogus"], "error", "unknown column",
            names=("lat_bogus",))
        add("latency-train --devices ''", A, [*LT, "--devices", ""], "error",
            "an empty list is a scripting slip, not 'every column'", names=("devices",))
        add("latency-adapt --shots 0", A, [*LAD, "--shots", "0"], "error", "shots >= 1", needs=("LAT",))
        add("latency-adapt --target bogus", A, [*LA, "--data", "{D}/lat.csv", "--target", "bogus"], "error",
            "unknown column", needs=("LAT",), names=("bogus",))
        add("latency-adapt without --target", A, [*LA, "--data", "{D}/lat.csv"], "error", "needs a target",
            needs=("LAT",), names=("target",))
        add("latency-adapt --validate without --measure", A, [*LAD, "--validate", "5"], "error",
            "--validate only means something with --measure", needs=("LAT",), names=("validate",))
        add("latency-adapt --shots 1000 (120 rows)", A, [*LAD, "--shots", "1000"], "error",
            "more shots than measured rows", needs=("LAT",), names=("shots",))
        add("latency-adapt --json <a directory>", "outputs", [*LAD, "--json", "{D}/a_dir"], "error",
            "the JSON target is a folder", needs=("LAT",))
        add("latency-train --out <a directory>", "outputs", [*LT[:-2], "--out", "{D}/a_dir"], "error",
            "the target is a folder")

        def adapt_ok(res: Result, out: Path) -> str | None:
            try:
                m = json.loads((out / "m.json").read_text())
            except (OSError, ValueError) as e:
                return f"no metrics JSON: {e}"
            bad = [k for k in ("spearman", "kendall", "mape", "acc10")
                   if not isinstance(m.get(k), (int, float)) or not math.isfinite(m[k])]
            if bad:
                return f"metrics missing or not finite: {bad}"
            if m.get("n") != 80:  # 120 rows, 30 NaN, 10 shots: 80 scored
                return f"scored {m.get('n')} architectures, expected 80 (NaN = not measured)"
            return None

        add("latency-adapt --data <NaN latencies>", F, [*LA, "--data", "{D}/lat_nan.csv", "--target", "lat_new",
                                                        "--json", "{O}/m.json"],
            "handled", "NaN = not measured: left out of shots and scoring", adapt_ok, needs=("LAT",))
        add("latency-adapt --data <fewer rows than shots>", F, [*LA, "--data", "{D}/lat_few.csv", "--target",
                                                                "lat_new"],
            "error", "6 rows, 10 shots", needs=("LAT",), names=("shots",))
        for name, why in (("text", "not a number"), ("neg", "negative latency"), ("zero", "zero latency"),
                          ("inf", "infinite latency")):
            add(f"latency-adapt --data <{why}>", F, [*LA, "--data", f"{{D}}/lat_{name}.csv", "--target", "lat_new"],
                "error", why, needs=("LAT",), names=(f"lat_{name}.csv",))
        add("latency-train --data <no lat_* column>", F, [*LT, "--data", "{D}/good.csv"], "error",
            "nothing to train on", names=("lat",))
        add("latency-train --data <binary garbage>", F, [*LT, "--data", "{D}/garbage"], "error", "binary",
            names=("garbage",))
        add("latency-adapt <NB201 model> on generic file", C, [*LA, "--data", "{D}/good_generic.jsonl", "--target",
                                                                "acc"],
            "error", "another space", needs=("LAT",), names=("space", "generic", "NAS-Bench-201", "nb201"))
        for name, path in (("random bytes", "{D}/garbage"), ("missing", "{D}/missing.npz"),
                           ("0-byte", "{D}/zero.pt"), ("a torch checkpoint", "{FT}")):
            add(f"latency-adapt --model <{name}>", C, ["latency-adapt", "--model", path, "--data", "{D}/lat.csv",
                                                      "--target", "lat_new"],
                "error", "not a latency model", needs=("FT",) if path == "{FT}" else (),
                names=("ft.pt" if path == "{FT}" else Path(path).name,))

    # -- outputs -------------------------------------------------------------------------------
    O = "outputs"
    add("pretrain --out <under a file>", O, [*PRE[:-3], "--out", "{D}/a_file/pre.pt", *Q], "error",
        "the parent is a file")
    add("pretrain --out <a directory>", O, [*PRE[:-3], "--out", "{D}/a_dir", *Q], "error", "the target is a folder")
    add("run --out <a file>", O, [*RUN_NB[:RUN_NB.index("--out")], *RUN_NB[RUN_NB.index("--out") + 2:],
                                  "--out", "{D}/a_file"], "error", "the output folder is a file")
    add("surrogate --out <under a file>", O, ["surrogate", "--limit", "60", "--out", "{D}/a_file/s.npy"], "error",
        "the parent is a file")
    add("evaluate --json <a directory>", O, [*EV, "--checkpoint", "{FT}", "--json", "{D}/a_dir"], "error",
        "the JSON target is a folder", needs=("FT",))
    add("latency --out <a directory>", O, [*LAT, "--out", "{D}/a_dir"], "error", "the target is a folder")
    return cases


# ----------------------------------------------------------------------------------------------
# running and classifying


def _message_lines(stderr: str) -> list[str]:
    """stderr's message lines: argparse's usage block, Python warnings (with their source line) and
    fgp's own ``fgp: warning:`` lines (e.g. no usable auxiliary target) left out: a warning before
    the error is information, not a second error."""
    lines = stderr.splitlines()
    out, i = [], 0
    if lines and lines[0].startswith("usage:"):
        i = 1
        while i < len(lines) and (lines[i].startswith(" ") or not lines[i].strip()):
            i += 1
    while i < len(lines):
        ln = lines[i]
        if re.match(r"^\S.*:\d+: \w*Warning: ", ln):
            i += 1
            while i < len(lines) and lines[i].startswith("  "):
                i += 1
            continue
        if ln.strip() and not re.match(r"^fgp( [a-z-]+)?: warning: ", ln):
            out.append(ln)
        i += 1
    return out


def _norm(text: str) -> str:
    return re.sub(r"[-_\s]+", " ", text.lower())


def _names(message: str, name: str) -> bool:
    """Whether ``message`` names ``name`` ("--batch-size" matches "batch_size" and "batch size")."""
    n = _norm(name).strip()
    return re.search(r"(?<![a-z0-9])" + re.escape(n) + r"(?![a-z0-9])", _norm(message)) is not None


def classify(case: Case, res: Result, out_dir: Path) -> None:
    if res.rc is None:
        res.outcome, res.detail = "timeout", "ran past the time limit"
        return
    if res.rc < 0:
        res.outcome, res.detail = "crash", f"signal {-res.rc}"
        return
    if "Traceback (most recent call last)" in res.stderr:
        last = [ln for ln in res.stderr.splitlines() if ln.strip()]
        res.outcome, res.detail = "traceback", (last[-1] if last else "")[:200]
        return
    msg = _message_lines(res.stderr)
    if res.rc != 0:
        if len(msg) == 1 and case.names and not any(_names(msg[0], n) for n in case.names):
            res.outcome = "unclear error"
            res.detail = f"does not name {' or '.join(case.names)}: {msg[0][:300]}"
        elif len(msg) == 1:
            res.outcome, res.detail = "clear error", msg[0][:300]
        else:
            res.outcome = "unclear error"
            res.detail = f"{len(msg)} message lines: " + " | ".join(m[:120] for m in msg[:3])
        return
    if case.expect == "error":
        res.outcome, res.detail = "silent garbage", "exit 0: " + (res.stdout.strip().splitlines() or [""])[-1][:200]
        return
    why = case.check(res, out_dir) if case.check else None
    if why:
        res.outcome, res.detail = "silent garbage", why
    else:
        res.outcome, res.detail = "handled", (res.stdout.strip().splitlines() or [""])[-1][:200]


class Runner:
    def __init__(self, python: str, python_path: str | None, ops_library: str | None, timeout: float,
                 workdir: Path):
        self.python = python
        self.python_path = python_path
        self.timeout = timeout
        self.workdir = workdir
        self.env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore",
                        PYTHONDONTWRITEBYTECODE="1")
        if ops_library:
            self.env["FGP_OPS_LIBRARY"] = str(Path(ops_library).resolve())

    def command(self, argv: list[str]) -> list[str]:
        if self.python_path:
            return [self.python, "-c", _BOOTSTRAP, str(Path(self.python_path).resolve()), *argv]
        return [self.python, "-m", "fgp_ext", *argv]

    def run(self, argv: list[str], cwd: Path) -> Result:
        cwd.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        try:
            p = subprocess.run(self.command(argv), cwd=cwd, env=self.env, capture_output=True, text=True,
                               errors="replace", timeout=self.timeout)
            return Result(p.returncode, p.stdout, p.stderr, time.perf_counter() - t0)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            return Result(None, out, err, time.perf_counter() - t0)


def make_fixtures(runner: Runner, root: Path, data: Path) -> dict[str, str]:
    """The checkpoints the checkpoint cases need, made by the code under test; a fixture that
    cannot be made is left out (its cases are skipped)."""
    fx = root / "fixtures"
    fx.mkdir(parents=True, exist_ok=True)
    made = {}
    jobs = {
        "PRE": ["pretrain", "--hidden", "8", "--epochs", "1", "--limit", "60", "--out", f"{fx}/pre.pt",
                "--no-progress"],
        "FT": ["finetune", "--hidden", "8", "--epochs", "1", "--limit", "100", "--ratio", "0.5", "--n-val", "10",
               "--out", f"{fx}/ft.pt", "--no-progress"],
        "GFT": ["finetune", "--hidden", "8", "--epochs", "1", "--data", f"{data}/good_generic.jsonl", "--ratio",
                "0.5", "--n-val", "10", "--out", f"{fx}/gft.pt", "--no-progress"],
        "LAT": ["latency-train", "--no-tune", "--devices", "lat_1080ti_1,lat_pixel3", "--out", f"{fx}/lat.npz"],
    }
    for key, argv in jobs.items():
        res = runner.run(argv, fx)
        path = Path(argv[argv.index("--out") + 1])
        if res.rc == 0 and path.is_file():
            made[key] = str(path)
        else:
            tail = (res.stderr.strip().splitlines() or ["?"])[-1]
            print(f"fixture {key} could not be made (exit {res.rc}): {tail}", file=sys.stderr)
    return made


def write_checkpoint_files(data: Path, fixtures: dict[str, str], runner: Runner) -> None:
    """Bad checkpoints: 0-byte, a truncated real one, another program's torch file, a pickle that
    would run code, a corrupt cache folder; and a shuffled copy of the generic file."""
    (data / "zero.pt").write_bytes(b"")
    if "FT" in fixtures:
        blob = Path(fixtures["FT"]).read_bytes()
        (data / "truncated.pt").write_bytes(blob[: len(blob) // 2])
    # torch-made files come from a child process: the harness does not import torch
    script = (
        "import sys, torch, os, pickle\n"
        "d = sys.argv[1]\n"
        "torch.save({'weights': torch.zeros(3)}, d + '/foreign.pt')\n"
        "class Evil:\n"
        "    def __reduce__(self):\n"
        "        return (os.system, ('touch ' + d + '/PWNED',))\n"
        "open(d + '/evil.pt', 'wb').write(pickle.dumps(Evil()))\n"
    )
    subprocess.run([runner.python, "-c", script, str(data)], check=True, env=runner.env)
    cache = data / "bad_cache"
    cache.mkdir(exist_ok=True)
    for enc in ("gatedgcn",):
        for seed in (21,):
            (cache / f"{enc}_seed{seed}.pt").write_bytes(random.Random(5).randbytes(2048))
    lines = (data / "good_generic.jsonl").read_text().splitlines()
    random.Random(7).shuffle(lines)
    (data / "good_generic_shuffled.jsonl").write_text("\n".join(lines) + "\n")


def same_as_ordered(runner: Runner, root: Path, data: Path, fixtures: dict[str, str]):
    """Check of the reordered-file case: the metrics equal those of the file in its own order."""
    def check(res: Result, out: Path) -> str | None:
        ref = runner.run(["evaluate", "--checkpoint", fixtures["GFT"], "--data", f"{data}/good_generic.jsonl",
                          "--split", "all"], root / "fixtures")
        if ref.rc != 0:
            return "the file in its own order failed"
        a = [ln for ln in ref.stdout.splitlines() if "kendall_tau" in ln]
        b = [ln for ln in res.stdout.splitlines() if "kendall_tau" in ln]
        if a != b:
            return f"metrics differ with the line order: {b[:1]} vs {a[:1]}"
        return None
    return check


def fgp_commands(runner: Runner, root: Path) -> tuple[set[str], str]:
    r = runner.run(["--help"], root)
    m = re.search(r"\{([a-z,_-]+)\}", r.stdout)
    cmds = set(m.group(1).split(",")) if m else set()
    predict_help = runner.run(["predict", "--help"], root).stdout if "predict" in cmds else ""
    return cmds, predict_help


def subst(argv: list[str], mapping: dict[str, str]) -> list[str]:
    out = []
    for a in argv:
        for k, v in mapping.items():
            a = a.replace("{" + k + "}", v)
        out.append(a)
    return out


def table(results: list[dict], key: str) -> str:
    groups = sorted({r[key] for r in results}, key=lambda g: (CLASSES.index(g) if g in CLASSES else 99, g))
    head = f"| {key} | " + " | ".join(OUTCOMES) + " | total |"
    lines = [head, "|" + "---|" * (len(OUTCOMES) + 2)]
    for g in [*groups, "all"]:
        rows = [r for r in results if g == "all" or r[key] == g]
        counts = [sum(r["outcome"] == o for r in rows) for o in OUTCOMES]
        name = f"**{g}**" if g == "all" else g
        lines.append(f"| {name} | " + " | ".join(str(c) for c in counts) + f" | {len(rows)} |")
    return "\n".join(lines)


def compare(before_path: str, after_path: str) -> str:
    """Markdown: outcome counts per class before -> after, and the cases still not as expected."""
    before = json.loads(Path(before_path).read_text())["cases"]
    after = json.loads(Path(after_path).read_text())["cases"]
    classes = [c for c in CLASSES if any(r["class"] == c for r in before + after)]
    out = ["| class | " + " | ".join(OUTCOMES) + " | as expected | cases |", "|" + "---|" * (len(OUTCOMES) + 3)]
    for c in [*classes, "all"]:
        b = [r for r in before if c in ("all", r["class"])]
        a = [r for r in after if c in ("all", r["class"])]
        cells = [f"{sum(r['outcome'] == o for r in b)} → {sum(r['outcome'] == o for r in a)}" for o in OUTCOMES]
        exp = f"{sum(r['as_expected'] for r in b)} → {sum(r['as_expected'] for r in a)}"
        name = "**all**" if c == "all" else c
        out.append(f"| {name} | " + " | ".join(cells) + f" | {exp} | {len(b)} → {len(a)} |")
    only_after = sorted({r["id"] for r in after} - {r["id"] for r in before})
    if only_after:
        out.append("")
        out.append(f"Cases only in the second run (e.g. commands the first tree lacks): {', '.join(only_after)}.")
    bad = [r for r in after if not r["as_expected"]]
    out.append("")
    out.append(f"Not as expected in the second run: {len(bad)}" + (":" if bad else "."))
    for r in bad:
        out.append(f"- `{r['id']}` ({r['class']}, expected {r['expect']}): {r['outcome']}, {r['detail']}")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", choices=CLASSES, help="run only this class (repeatable)")
    ap.add_argument("--match", default=None, help="run only the cases whose id matches this regular expression")
    ap.add_argument("--json", default=None, help="write every case's outcome to this JSON file")
    ap.add_argument("--python", default=sys.executable, help="interpreter of the children (this one)")
    ap.add_argument("--python-path", default=os.environ.get("FGP_BAD_INPUTS_PYTHONPATH"),
                    help="run the fgp_ext package in this folder instead of the installed one")
    ap.add_argument("--ops-library", default=os.environ.get("FGP_OPS_LIBRARY"),
                    help="compiled op library for the children (sets FGP_OPS_LIBRARY)")
    ap.add_argument("--workers", type=int, default=2, help="cases run at once (2)")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds per case (180)")
    ap.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temporary one)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case's outcome")
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), default=None,
                    help="print a markdown comparison of two --json files and exit")
    args = ap.parse_args(argv)
    if args.compare:
        print(compare(*args.compare))
        return 0
    if args.workers < 1 or args.timeout <= 0:
        ap.error("--workers and --timeout must be positive")

    tmp = tempfile.TemporaryDirectory(prefix="fgp_bad_inputs_") if args.keep is None else None
    root = Path(args.keep or tmp.name).resolve()
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    runner = Runner(args.python, args.python_path, args.ops_library, args.timeout, root)
    t_start = time.perf_counter()
    commands, predict_help = fgp_commands(runner, root)
    if not commands:
        print("bad_inputs: `fgp --help` failed; is fgp_ext importable from the chosen interpreter/path?",
              file=sys.stderr)
        return 2
    cases = catalogue(commands, predict_help)
    cases = [c for c in cases if c.argv[0] in commands]
    if args.only:
        cases = [c for c in cases if c.cls in args.only]
    if args.match:
        cases = [c for c in cases if re.search(args.match, c.id)]
    if args.list:
        for c in cases:
            print(f"{c.cls:<12} {c.expect:<8} {c.id}")
        return 0
    write_data(data)
    needs = {n for c in cases for n in c.needs} | ({"FT"} if any(c.cls == "checkpoints" for c in cases) else set())
    fixtures = make_fixtures(runner, root, data) if needs else {}
    if any(c.cls == "checkpoints" for c in cases):
        write_checkpoint_files(data, fixtures, runner)
    for c in cases:
        if c.id == "evaluate <same file, lines reordered>" and "GFT" in fixtures:
            c.check = same_as_ordered(runner, root, data, fixtures)

    todo = [c for c in cases if all(n in fixtures for n in c.needs)]
    skipped = [c for c in cases if c not in todo]

    def one(ic):
        i, c = ic
        out = root / "out" / f"case{i:03d}"
        mapping = {"D": str(data), "O": str(out), **fixtures}
        argv_ = subst(c.argv, mapping)
        res = runner.run(argv_, out)
        classify(c, res, out)
        return c, argv_, res

    results = []
    with ThreadPoolExecutor(args.workers) as pool:
        for c, argv_, res in pool.map(one, enumerate(todo)):
            ok = (res.outcome == "clear error") if c.expect == "error" else (res.outcome == "handled")
            rec = {"id": c.id, "class": c.cls, "expect": c.expect, "why": c.why, "outcome": res.outcome,
                   "as_expected": ok, "names": list(c.names), "exit": res.rc, "detail": res.detail, "seconds": round(res.seconds, 2),
                   "argv": ["fgp", *[a.replace(str(root), "$T") for a in argv_]]}
            results.append(rec)
            if args.verbose or not ok:
                mark = "ok " if ok else "BAD"
                print(f"{mark} [{c.cls}] {c.id}: {res.outcome} (exit {res.rc}) {res.detail}", flush=True)
    if (data / "PWNED").exists():
        results.append({"id": "pickle with code ran its code", "class": "checkpoints", "expect": "error",
                        "why": "weights_only loading", "outcome": "silent garbage", "as_expected": False,
                        "exit": None, "detail": "a pickled os.system call was executed", "seconds": 0, "argv": []})
    wall = time.perf_counter() - t_start
    print()
    print(table(results, "class"))
    print()
    by_exp = [dict(r, expected=r["expect"]) for r in results]
    print(table(by_exp, "expected"))
    bad = [r for r in results if not r["as_expected"]]
    print(f"\n{len(results)} cases, {len(results) - len(bad)} as expected, {len(bad)} not; "
          f"{len(skipped)} skipped (fixture missing); {wall:.0f} s")
    for c in skipped:
        print(f"skipped: {c.id} (needs {', '.join(c.needs)})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        doc = {"python_path": args.python_path, "commands": sorted(commands), "wall_s": round(wall, 1),
               "counts": {o: sum(r["outcome"] == o for r in results) for o in OUTCOMES},
               "skipped": [c.id for c in skipped], "cases": results}
        tmp_json = Path(args.json).with_name(f".{Path(args.json).name}.{os.getpid()}.tmp")
        tmp_json.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(tmp_json, args.json)
        print(f"wrote {args.json}")
    if tmp is not None:
        tmp.cleanup()
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
