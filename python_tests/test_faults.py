"""Faults while ``fgp`` writes: kills at random points, a file-size limit, two runs sharing one
pre-training cache, symlinks planted where temporary files go. Every output must be absent, the
old file, or a valid new one; a killed run resumed gives the result of an uninterrupted one.

The runs are tiny (200 NB201 cells, GIN of width 8, 40 pre-training epochs of ~13 steps) and run
as subprocesses of ``python -m fgp_ext``, so that they can be killed and limited like a user's.
"""
from __future__ import annotations

import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from fgp_ext.train import load_checkpoint, load_predictions

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
BASE = ["run", "--encoder", "gin", "--limit", "200", "--ratio", "0.2", "--hidden", "8", "--runs", "1",
        "--epochs-pretrain", "40", "--batch-size-pretrain", "16", "--epochs-finetune", "3", "--no-progress",
        "--no-baseline"]
PNG_END = b"IEND\xaeB`\x82"
TIMING = ("seconds", "s_per_epoch", "eval_s", "wall_s", "collate_s", "surrogate_s")


def _cmd(*args) -> list[str]:
    return [sys.executable, "-m", "fgp_ext", *map(str, args)]


def _run(*args, limit: int | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    pre = None if limit is None else (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    return subprocess.run(_cmd(*args), capture_output=True, text=True, env=ENV, timeout=timeout, preexec_fn=pre)


def _snapshot(*folders: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for d in folders if d.is_dir() for p in d.iterdir() if p.is_file()}


def _is_cache(p: Path) -> bool:
    return p.suffix == ".pt" and not p.name.startswith(".") and not p.name.endswith(".partial.pt")


def _caches(pre: Path) -> list[Path]:
    return sorted(p for p in pre.iterdir() if _is_cache(p)) if pre.is_dir() else []


def _partials(pre: Path) -> list[Path]:
    return sorted(pre.glob("*.partial.pt")) if pre.is_dir() else []


def _load_state(p: Path) -> dict:
    state = torch.load(p, map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and state["format"].endswith("pretrain_state"), p
    return state


def _check_outputs(old: dict[Path, bytes], *folders: Path, planted: bool = False) -> None:
    """Each file is the old one byte for byte or a complete valid one; nothing else is there but
    lock files and hidden temporary files (which nothing reads), and the test's own symlinks if
    ``planted``."""
    for d in folders:
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if planted and p.is_symlink():
                continue
            if p.name.startswith(".") and p.name.endswith(".tmp"):
                continue                       # a writer killed before its rename
            if p.suffix == ".lock" or old.get(p) == p.read_bytes():
                continue
            if p.suffix == ".json":
                doc = json.loads(p.read_text())
                assert "mean" in doc and "runs" in doc, p
            elif p.suffix == ".png":
                data = p.read_bytes()
                assert data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(PNG_END), p
            elif p.name.endswith(".partial.pt"):
                _load_state(p)
            elif p.suffix == ".pt":
                load_checkpoint(p)
            elif p.suffix == ".npz":
                assert load_predictions(p), p
            else:
                raise AssertionError(f"unexpected file {p}")


def _metrics(summary: dict) -> dict:
    """The summary's results without timings."""
    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if not any(t in k for t in TIMING)}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o
    return strip({"runs": summary["runs"], "mean": summary["mean"]})


def _kill_when(args, ready, deadline_s: float = 60) -> tuple[int, float]:
    """Start ``fgp args``, SIGKILL it once ``ready()`` is true (or when it ends by itself)."""
    p = subprocess.Popen(_cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    t0 = time.monotonic()
    try:
        while p.poll() is None and time.monotonic() - t0 < deadline_s:
            if ready(time.monotonic() - t0):
                p.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        p.wait(30)
        err = p.stderr.read().decode()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stderr.close()
    assert p.returncode in (0, -signal.SIGKILL), err
    return p.returncode, time.monotonic() - t0


def test_killed_runs_leave_valid_outputs_and_resume_to_the_same_result(tmp_path):
    ref_out, ref_pre = tmp_path / "ref_out", tmp_path / "ref_pre"
    t0 = time.monotonic()
    r = _run(*BASE, "--pretrained-dir", ref_pre, "--out", ref_out)
    wall = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    ref = json.loads((ref_out / "summary.json").read_text())

    out, pre = tmp_path / "out", tmp_path / "pre"
    # old outputs: a run with other settings wrote the same folders (its cache has other settings)
    r = _run(*[a if a != "40" else "3" for a in BASE], "--epochs-finetune", "1", "--pretrained-dir", pre, "--out", out)
    assert r.returncode == 0, r.stderr
    old = _snapshot(out, pre)
    assert len(_caches(pre)) == 1 and (out / "summary.json") in old

    rng = random.Random(20261205)
    after_epochs = rng.randint(2, 20)

    def partial_seen(_t):
        ps = _partials(pre)
        if not ps:
            return False
        try:
            return len(_load_state(ps[0])["history"]) >= after_epochs
        except (OSError, RuntimeError):     # replaced between listing and reading: look again
            return False

    triggers = [
        ("during pre-training", partial_seen),
        ("at a random time", lambda t, at=rng.uniform(1.0, wall): t >= at),
        ("at a random time", lambda t, at=rng.uniform(1.0, wall): t >= at),
        ("as the cache appears", lambda _t: len(_caches(pre)) == 2),
        ("as the summary is replaced", lambda _t: (out / "summary.json").read_bytes() != old[out / "summary.json"]),
    ]
    resumed_from: list = []
    for what, ready in triggers:
        rc, _ = _kill_when([*BASE, "--pretrained-dir", pre, "--out", out], ready)
        _check_outputs(old, out, pre)
        for p in old:                      # the other settings' cache is never touched
            if _is_cache(p):
                assert p.read_bytes() == old[p]
        if what == "during pre-training":
            assert rc != 0 and len(_partials(pre)) == 1
            resumed_from = list(_load_state(_partials(pre)[0])["history"])
            assert len(resumed_from) >= after_epochs
    r = _run(*BASE, "--pretrained-dir", pre, "--out", out)
    assert r.returncode == 0, r.stderr
    _check_outputs({}, out, pre)
    assert _metrics(json.loads((out / "summary.json").read_text())) == _metrics(ref)
    new = [p for p in _caches(pre) if p not in old]
    assert len(new) == 1 and _partials(pre) == []
    assert [p.name for p in pre.iterdir() if p.name.startswith(".")] == []   # killed writers' temp files removed
    history = load_checkpoint(new[0]).meta["history"]
    assert len(history) == 40
    # the epochs done before the first kill were kept, timings and all, not trained again
    assert history[: len(resumed_from)] == resumed_from


def test_a_kill_between_cache_and_partial_loses_nothing(tmp_path):
    """The partial (resume state) is removed only after the final cache is in place."""
    pre, out = tmp_path / "pre", tmp_path / "out"
    args = [*BASE, "--pretrained-dir", pre, "--out", out, "--no-plots"]
    # kill as soon as the partial is gone or the cache is there, once the partial was seen: had the
    # partial been removed before the cache was written, the kill would land between the two
    seen = []

    def written(_t):
        partial = bool(_partials(pre))
        seen.append(partial)
        return any(seen) and (not partial or bool(_caches(pre)))

    _kill_when(args, written)
    _check_outputs({}, out, pre)
    assert any(seen) and (_caches(pre) or _partials(pre))
    r = _run(*args)
    assert r.returncode == 0, r.stderr
    assert _partials(pre) == [] and len(_caches(pre)) == 1


def test_write_limit_leaves_old_outputs_and_says_one_line(tmp_path):
    """``ulimit -f`` in the child: each command ends with one line naming the file and the cause
    (exit status 1), and every file that was there before is intact."""
    out, pre = tmp_path / "out", tmp_path / "pre"
    out.mkdir()
    (out / "summary.json").write_text('{"old": true}\n')
    one_line = re.compile(r"^fgp: error: cannot write (\S+): File too large\n$")

    r = _run(*BASE, "--pretrained-dir", pre, "--out", out, limit=20_000)   # a checkpoint is ~35 kB
    assert r.returncode == 1 and one_line.match(r.stderr), r.stderr
    assert Path(one_line.match(r.stderr).group(1)).parent == pre
    assert (out / "summary.json").read_text() == '{"old": true}\n'
    assert [p.name for p in pre.iterdir() if p.suffix != ".lock"] == []     # no temp file left

    r = _run(*BASE, "--pretrained-dir", pre, "--out", out, "--no-plots")      # the cache, unlimited
    assert r.returncode == 0, r.stderr
    cache = _snapshot(pre)
    (out / "summary.json").write_text('{"old": true}\n')
    predictions = (out / "predictions.npz").read_bytes()      # the unlimited run's
    r = _run(*BASE, "--pretrained-dir", pre, "--out", out, "--no-plots", limit=500)
    # predictions.npz is written before summary.json, so the summary stays the old one
    assert r.returncode == 1 and one_line.match(r.stderr).group(1) == str(out / "predictions.npz"), r.stderr
    assert (out / "summary.json").read_text() == '{"old": true}\n' and _snapshot(pre) == cache
    assert (out / "predictions.npz").read_bytes() == predictions

    ft = out / "ft.pt"
    tune = ["finetune", "--checkpoint", _caches(pre)[0], "--encoder", "gin", "--limit", "200", "--ratio", "0.2",
            "--epochs", "1", "--no-progress", "--out", ft]
    r = _run(*tune, limit=20_000)
    assert r.returncode == 1 and one_line.match(r.stderr).group(1) == str(ft), r.stderr
    assert not ft.exists()
    assert _run(*tune).returncode == 0
    js = out / "m.json"
    js.write_text("old")
    r = _run("evaluate", "--checkpoint", ft, "--limit", "200", "--ratio", "0.2", "--json", js, limit=50)
    assert r.returncode == 1 and one_line.match(r.stderr).group(1) == str(js), r.stderr
    assert js.read_text() == "old"
    r = _run("surrogate", "--limit", "200", "--out", out / "s.npy", limit=1000)
    assert r.returncode == 1 and one_line.match(r.stderr).group(1) == str(out / "s.npy"), r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["ft.pt", "m.json", "predictions.npz", "summary.json"]  # no temp


def test_two_runs_sharing_a_cache_both_end_well(tmp_path):
    pre = tmp_path / "pre"
    args = [*BASE, "--pretrained-dir", pre, "--no-plots"]
    procs = [subprocess.Popen(_cmd(*args, "--out", tmp_path / f"o{i}"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=ENV) for i in range(2)]
    res = [(p.wait(600), *p.communicate()) for p in procs]
    assert [rc for rc, _, _ in res] == [0, 0], res
    # exactly one of them pre-trained; the other waited (naming the holder) or found the cache
    trained = [out for _, out, _ in res if "pre-training gin" in out]
    assert len(trained) == 1, res
    for rc, out, err in res:
        if "pre-training gin" not in out:
            assert "loaded from" in out
            if "waiting for" in out:
                assert re.search(r"waiting for the pre-training cache \S+ held by pid \d+ on \S+ \(.*fgp_ext run", out), out
    assert len(_caches(pre)) == 1 and _partials(pre) == []
    load_checkpoint(_caches(pre)[0])
    s0, s1 = (json.loads((tmp_path / f"o{i}" / "summary.json").read_text()) for i in range(2))
    assert _metrics(s0) == _metrics(s1)

    # other settings at the same time: each keeps its own cache entry, neither overwrites the other
    procs = [subprocess.Popen(_cmd(*args, "--sur-seed", seed, "--out", tmp_path / f"s{seed}"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=ENV) for seed in (1, 2)]
    res = [(p.wait(600), *p.communicate()) for p in procs]
    assert [rc for rc, _, _ in res] == [0, 0], res
    caches = _caches(pre)
    assert len(caches) == 3
    assert sorted(load_checkpoint(c).meta["surrogate"]["seed"] for c in caches) == [0, 1, 2]
    r = _run(*args, "--sur-seed", "2", "--out", tmp_path / "again")
    assert r.returncode == 0 and "loaded from" in r.stdout and "pre-training gin" not in r.stdout, r.stdout


def test_symlinks_planted_at_temporary_paths_are_not_followed(tmp_path, monkeypatch):
    """Every temporary name a writer tries first is taken by a symlink to a victim file (and so is
    the fixed ``X.tmp`` name older versions used): no victim changes, every output is written."""
    from fgp_ext.cli import main

    args = ["run", "--encoder", "gin", "--limit", "200", "--ratio", "0.2", "--hidden", "8", "--runs", "1",
            "--epochs-pretrain", "3", "--epochs-finetune", "2", "--no-progress", "--no-baseline"]
    first_pre, first_out = tmp_path / "first_pre", tmp_path / "first_out"
    assert main([*args, "--pretrained-dir", str(first_pre), "--out", str(first_out)]) == 0
    names = [p.name for p in first_pre.iterdir()] + [p.name for p in first_out.iterdir()]
    names += [n.replace(".pt", ".partial.pt") for n in names if _is_cache(Path(n))]

    pre, out = tmp_path / "pre", tmp_path / "out"
    pre.mkdir(), out.mkdir()
    victims = []
    for folder in (pre, out):
        for n in names:
            for planted in (f".{n}.planted.tmp", f"{n}.tmp"):
                v = tmp_path / f"victim{len(victims)}"
                v.write_text("precious")
                (folder / planted).symlink_to(v)
                victims.append(v)
    real = tempfile._get_candidate_names

    def planted_first():
        yield "planted"
        yield from real()

    monkeypatch.setattr(tempfile, "_get_candidate_names", planted_first)
    assert main([*args, "--pretrained-dir", str(pre), "--out", str(out)]) == 0
    assert all(v.read_text() == "precious" for v in victims)
    _check_outputs({}, out, pre, planted=True)
    assert sorted(p.name for p in out.iterdir() if not p.is_symlink()) == sorted(p.name for p in first_out.iterdir())
    assert len(_caches(pre)) == 1
