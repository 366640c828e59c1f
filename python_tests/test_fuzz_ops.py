"""The op fuzzer's fixed budget (scripts/fuzz_ops.py): random, partly valid calls to every op the
dispatcher lists under torch.ops.fgp, in worker subprocesses. No call may kill its process, hang or
raise anything but a clear error; every op must be reached with calls that succeed and calls that
are refused (else the generator would be testing nothing). FGP_FUZZ_CALLS changes the budget."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import torch

CALLS = int(os.environ.get("FGP_FUZZ_CALLS", "100000"))
_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fuzz_ops.py"


def _fuzz_module():
    spec = importlib.util.spec_from_file_location("fuzz_ops", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_fuzzed_ops_never_kill_the_process():
    fuzz = _fuzz_module()
    total = fuzz.run_parallel(calls=CALLS, workers=2, batch=max(1, CALLS // 10), seed=0, timeout=600)
    assert not total["dead"], "\n".join(total["dead"])
    assert not total["unexpected"], "\n".join(total["unexpected"][:20])
    assert total["calls"] == CALLS
    ops = {n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("fgp::")}
    assert set(total["per_op"]) == ops  # the op list came from the dispatcher
    if CALLS >= 20_000:
        never_ok = [n for n, (ok, _) in total["per_op"].items() if ok == 0]
        never_refused = [n for n, (_, raised) in total["per_op"].items() if raised == 0]
        assert not never_ok, f"ops never called validly: {never_ok}"
        assert not never_refused, f"ops never given a bad argument: {never_refused}"


def test_the_fuzzer_sees_a_dead_process(tmp_path):
    """A worker that dies is reported with its seed (the harness itself can fail)."""
    fuzz = _fuzz_module()
    crashing = tmp_path / "crash.py"
    crashing.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    total = fuzz.run_parallel(calls=10, workers=1, batch=10, seed=5, timeout=60, log=lambda *_: None,
                              worker_script=str(crashing))
    assert len(total["dead"]) == 1 and "seed 5" in total["dead"][0]
