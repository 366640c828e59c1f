"""The atomic writer and the file lock of :mod:`fgp_ext._io`."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fgp_ext import _io


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_helpers_write_what_they_are_given(tmp_path):
    assert _io.write_bytes(tmp_path / "a" / "b.bin", b"\x00\x01") .read_bytes() == b"\x00\x01"  # parents made
    assert _io.write_text(tmp_path / "t.txt", "x\r\ny").read_bytes() == b"x\r\ny"
    assert json.loads(_io.write_json(tmp_path / "j.json", {"a": [1, 2.5]}).read_text()) == {"a": [1, 2.5]}
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(np.load(_io.np_save(tmp_path / "s.npy", arr), allow_pickle=False), arr)
    with np.load(_io.np_savez(tmp_path / "z.npz", a=arr, b=arr[0]), allow_pickle=False) as z:
        assert sorted(z.files) == ["a", "b"] and np.array_equal(z["a"], arr)
    np.testing.assert_array_equal(np.loadtxt(_io.np_savetxt(tmp_path / "s.csv", arr, delimiter=","),
                                             delimiter=","), arr)
    assert _io.write_csv(tmp_path / "r.csv", [[1, "a,b"]], header=["n", "s"]).read_text() == 'n,s\n1,"a,b"\n'
    t = {"w": torch.randn(5, 3)}
    assert torch.equal(torch.load(_io.torch_save(t, tmp_path / "c.pt"), weights_only=True)["w"], t["w"])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    assert _io.savefig(fig, tmp_path / "f.png", dpi=20).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plt.close(fig)
    assert _temps(tmp_path) == []


def test_modes_new_file_as_open_would_make_it_and_replaced_file_keeps_its_own(tmp_path):
    mask = os.umask(0o027)
    try:
        assert (_io.write_text(tmp_path / "new", "x").stat().st_mode & 0o777) == 0o640
    finally:
        os.umask(mask)
    old = tmp_path / "old"
    old.write_text("x")
    old.chmod(0o604)
    assert (_io.write_text(old, "y").stat().st_mode & 0o777) == 0o604


def test_symlink_planted_at_the_temporary_path_is_not_followed(tmp_path, monkeypatch):
    """mkstemp's first candidate name is taken by a symlink to a victim file: O_EXCL refuses it,
    the writer moves on to another name and the victim is untouched."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    names = iter(["planted", "second"])
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)
    (tmp_path / ".out.json.planted.tmp").symlink_to(victim)
    _io.write_json(tmp_path / "out.json", {"ok": 1})
    assert victim.read_text() == "precious"
    assert json.loads((tmp_path / "out.json").read_text()) == {"ok": 1}
    assert (tmp_path / ".out.json.planted.tmp").is_symlink()  # someone else's file: left alone


def test_symlink_at_the_target_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "out.txt").symlink_to(victim)
    _io.write_text(tmp_path / "out.txt", "new")
    assert victim.read_text() == "precious"
    assert not (tmp_path / "out.txt").is_symlink() and (tmp_path / "out.txt").read_text() == "new"


def test_failure_in_the_block_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(ZeroDivisionError):
        with _io.atomic_write(target, "w") as f:
            f.write("half")
            1 / 0
    with pytest.raises(TypeError):               # not serialisable: nothing is written at all
        _io.write_json(target, {"x": object()})
    # an OSError of something else done in the block (reading an input) passes through unchanged
    with pytest.raises(FileNotFoundError):
        with _io.atomic_write(target, "w") as f:
            f.write(open(tmp_path / "missing").read())
    assert target.read_text() == "old" and _temps(tmp_path) == []


def test_refused_writes_are_one_write_error_naming_file_and_cause(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(_io.WriteError, match=r"^cannot write .*adir: Is a directory$"):
        _io.write_text(tmp_path / "adir", "x")
    (tmp_path / "afile").write_text("x")
    for target in (tmp_path / "afile" / "x.json", tmp_path / "afile" / "sub" / "x.json"):
        with pytest.raises(_io.WriteError, match=rf"^cannot write {target}: Not a directory$"):
            _io.write_json(target, {})
    with pytest.raises(_io.WriteError, match=r"afile/c\.lock: Not a directory$"):
        _io.FileLock(tmp_path / "afile" / "c.lock").acquire()
    with pytest.raises(_io.WriteError, match=rf"^cannot create folder {tmp_path}/afile/d: Not a directory$"):
        _io.make_folder(tmp_path / "afile" / "d")
    assert _io.make_folder(tmp_path / "new" / "d").is_dir()
    e = _io.WriteError("runs/x/summary.json", OSError(28, os.strerror(28)))
    assert str(e) == "cannot write runs/x/summary.json: No space left on device"
    assert isinstance(e, OSError) and e.errno == 28 and e.filename == "runs/x/summary.json"
    assert _temps(tmp_path) == []


_LIMITED = textwrap.dedent("""
    import resource, sys
    import numpy as np, torch
    from fgp_ext import _io
    _io.ignore_sigxfsz()
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
    d = sys.argv[1]
    for name, fn in [("c.pt", lambda p: _io.torch_save({"w": torch.zeros(100_000)}, p)),
                     ("s.npy", lambda p: _io.np_save(p, np.zeros(100_000))),
                     ("j.json", lambda p: _io.write_json(p, list(range(100_000)))),
                     ("f.csv", lambda p: _io.write_csv(p, [[i, i] for i in range(100_000)]))]:
        try:
            fn(d + "/" + name)
            print("WROTE", name)
        except _io.WriteError as e:
            print(e)
""")


def test_file_size_limit_is_a_write_error_and_old_files_survive(tmp_path):
    """``ulimit -f`` (RLIMIT_FSIZE) in a child: each writer reports EFBIG as one line (torch's
    zip writer included, which by itself says only 'unexpected pos') and the old files stay."""
    for name in ("c.pt", "s.npy", "j.json", "f.csv"):
        (tmp_path / name).write_bytes(b"old " + name.encode())
    r = subprocess.run([sys.executable, "-c", _LIMITED, str(tmp_path)], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"cannot write {tmp_path}/{n}: File too large"
                                     for n in ("c.pt", "s.npy", "j.json", "f.csv")]
    for name in ("c.pt", "s.npy", "j.json", "f.csv"):
        assert (tmp_path / name).read_bytes() == b"old " + name.encode()
    assert _temps(tmp_path) == []


def test_concurrent_threads_on_one_target_never_collide(tmp_path):
    target = tmp_path / "shared.json"
    errors = []

    def work(k):
        try:
            for i in range(40):
                _io.write_json(target, {"writer": k, "i": i, "pad": "x" * (1000 * k)})
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    doc = json.loads(target.read_text())
    assert doc["i"] == 39 and doc["pad"] == "x" * (1000 * doc["writer"])
    assert _temps(tmp_path) == []


def _proc_writer(target: str, k: int) -> None:
    for i in range(30):
        _io.write_bytes(target, bytes([k]) * (5000 + k))


def test_concurrent_processes_on_one_target_never_collide(tmp_path):
    target = tmp_path / "shared.bin"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_proc_writer, args=(str(target), k)) for k in range(1, 5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    data = target.read_bytes()
    k = data[0]
    assert data == bytes([k]) * (5000 + k)   # one writer's whole content, never a mix
    assert _temps(tmp_path) == []


_HOLDER = textwrap.dedent("""
    import sys, time
    from fgp_ext._io import FileLock
    with FileLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _start_holder(lock: Path, seconds: float) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", _HOLDER, str(lock), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_lock_held_by_another_process_names_it_and_excludes(tmp_path):
    lock = tmp_path / "cache.pt.lock"
    p = _start_holder(lock, 30)
    try:
        with pytest.raises(_io.LockTimeout, match=rf"cache X held by pid {p.pid} on .* \(.*-c .*cache\.pt\.lock 30\)"):
            _io.FileLock(lock, what="cache X", timeout=0).acquire()
        t0 = time.monotonic()
        with pytest.raises(_io.LockTimeout, match=rf"gave up after 0.3 s waiting for .* held by pid {p.pid}"):
            with _io.FileLock(lock, timeout=0.3, log=lambda m: None):
                pass
        assert time.monotonic() - t0 >= 0.3
    finally:
        p.kill()
        p.wait()
    # killed holder: the kernel drops its lock at once
    with _io.FileLock(lock, timeout=0) as held:
        assert held.locked and held.holder()["pid"] == os.getpid()
    assert _io.FileLock(lock).holder() == {}


def test_lock_waits_for_the_holder_and_says_so(tmp_path):
    lock = tmp_path / "c.lock"
    p = _start_holder(lock, 1.0)
    said = []
    t0 = time.monotonic()
    with _io.FileLock(lock, what="the pre-training cache c", log=said.append):
        waited = time.monotonic() - t0
    p.wait()
    assert waited > 0.3 and p.returncode == 0
    assert len(said) == 1 and said[0].startswith(f"waiting for the pre-training cache c held by pid {p.pid} on ")


def test_lock_waiter_arriving_before_the_holder_wrote_its_details_still_names_it(tmp_path):
    """The holder takes the lock, then writes who it is; a waiter arriving in that gap gives it a
    moment and names it (it used to say 'held by another process', a race seen in CI). A holder that
    never writes its details is described without them, after about a second."""
    import fcntl

    lock = tmp_path / "gap.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)       # held, details not yet written
        writer = threading.Timer(0.2, lambda: os.pwrite(fd, b'{"pid": 4242, "host": "h", "command": "c"}\n', 0))
        writer.start()
        with pytest.raises(_io.LockTimeout, match=r"gap held by pid 4242 on h \(c\); not waiting"):
            _io.FileLock(lock, what="gap", timeout=0).acquire()
        writer.join()
        os.ftruncate(fd, 0)                                  # a holder that never says who it is
        t0 = time.monotonic()
        with pytest.raises(_io.LockTimeout, match=r"gap held by another process; not waiting"):
            _io.FileLock(lock, what="gap", timeout=0).acquire()
        assert 0.9 <= time.monotonic() - t0 < 5
    finally:
        os.close(fd)


def test_lock_refuses_a_symlink_at_its_path(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "x.lock").symlink_to(victim)
    with pytest.raises(_io.WriteError, match="x.lock: Too many levels of symbolic links"):
        _io.FileLock(tmp_path / "x.lock").acquire()
    assert victim.read_text() == "precious"


# files that may write without the atomic writer, and why
_RAW_WRITES_ALLOWED = {
    "fgp_ext/_io.py": "the writer itself",
    # the harness writes its own fixture inputs into a scratch folder and imports nothing of the
    # tree it tests (it also runs older trees)
    "scripts/bad_inputs.py": "fixtures in a scratch folder; no fgp_ext import by design",
}


def _raw_writes(source: str) -> list[tuple[int, str]]:
    """Calls in ``source`` that write a file without :mod:`fgp_ext._io`: ``open`` for writing,
    ``torch.save``, ``numpy.save*``, ``json.dump``, ``Path.write_text/write_bytes``, ``savefig``."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
        if name == "open":
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
            if isinstance(mode, ast.Constant) and isinstance(mode.value, str) and set(mode.value) & set("wax+"):
                found.append((node.lineno, f"open(..., {mode.value!r})"))
        elif (owner, name) in {("torch", "save"), ("np", "save"), ("np", "savez"), ("np", "savez_compressed"),
                               ("np", "savetxt"), ("numpy", "save"), ("json", "dump")} \
                or name in ("write_text", "write_bytes", "savefig") and owner != "_io":
            found.append((node.lineno, f"{owner + '.' if owner else ''}{name}(...)"))
    return sorted(found)


def test_the_detector_finds_raw_writes():
    src = ("open(p, 'w').write(x)\nopen(p)\nopen(p, mode='ab')\ntorch.save(o, p)\nnp.savez_compressed(p)\n"
           "json.dump(d, f)\nPath(p).write_text(s)\nfig.savefig(p)\n_io.savefig(fig, p)\nx.save(p)\n")
    assert [line for line, _ in _raw_writes(src)] == [1, 3, 4, 5, 6, 7, 8]


def test_every_file_the_project_writes_goes_through_the_writer():
    """No module, script or benchmark writes a file but through :mod:`fgp_ext._io` (so that new
    code cannot bring back torn outputs)."""
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for folder in ("fgp_ext", "scripts", "bench", "experiments"):
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel in _RAW_WRITES_ALLOWED:
                continue
            offenders += [f"{rel}:{line}: {what}" for line, what in _raw_writes(path.read_text(encoding="utf-8"))]
    assert offenders == [], "write through fgp_ext._io instead:\n" + "\n".join(offenders)
