"""Bad inputs answered by one clear line: argument ranges at parse time (fgp_ext/_args.py), the
file readers' hardening (fgp_ext/data/formats.py), and a slice of scripts/bad_inputs.py."""
from __future__ import annotations

import argparse
import gzip
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fgp_ext import _args
from fgp_ext.data import formats as F

REPO = Path(__file__).resolve().parents[1]
CELL_A = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|"
CELL_B = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
CELL_C = "|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|"
GEN = {"ops": ["input", "conv", "output"], "edges": [[0, 1], [1, 2]], "acc": 1.0}


def write(tmp_path, name, data):
    p = tmp_path / name
    if isinstance(data, bytes):
        p.write_bytes(data)
    else:
        p.write_text(data, encoding="utf-8")
    return p


def lines(*recs):
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in recs)


def load_error(path, *fragments, where=None):
    """Load ``path``, expect a one-line DataFormatError naming the file and the fragments."""
    with pytest.raises(F.DataFormatError) as ei:
        F.load(str(path))
    msg = str(ei.value)
    assert "\n" not in msg and str(path) in msg, msg
    for frag in fragments:
        assert frag in msg, msg
    if where is not None:
        assert ei.value.where == where and f"{where}:" in msg, msg
    return msg


# ------------------------------------------------------------------------------------ validators

@pytest.mark.parametrize("validator, text, value", [
    (_args.positive_int, "1", 1), (_args.positive_int, " 7 ", 7), (_args.non_negative_int, "0", 0),
    (_args.seed, "4294967295", 2 ** 32 - 1), (_args.runs, "9", 9), (_args.limit, "50", 50),
    (_args.ratio, "1", 1.0), (_args.ratio, "1e-3", 1e-3), (_args.dropout, "0", 0.0),
    (_args.unit_interval, "1", 1.0), (_args.positive_float, "3e-4", 3e-4),
    (_args.non_negative_float, "0", 0.0), (_args.surrogate_dim, "4096", 4096), (_args.threads, "1", 1),
])
def test_validators_accept(validator, text, value):
    assert validator(text) == value


@pytest.mark.parametrize("validator, text, fragment", [
    (_args.positive_int, "0", "integer >= 1"), (_args.positive_int, "-1", "integer >= 1"),
    (_args.positive_int, "1.5", "integer >= 1"), (_args.positive_int, "abc", "integer >= 1"),
    (_args.non_negative_int, "-5", "integer >= 0"),
    (_args.seed, "-1", "in [0, 4294967295]"), (_args.seed, str(2 ** 70), "in [0, 4294967295]"),
    (_args.runs, "0", "in [1, 9]"), (_args.runs, "10", "in [1, 9]"), (_args.limit, "49", ">= 50"),
    (_args.ratio, "0", "in (0, 1]"), (_args.ratio, "1.5", "in (0, 1]"), (_args.ratio, "-0.1", "in (0, 1]"),
    (_args.ratio, "nan", "in (0, 1]"), (_args.ratio, "inf", "in (0, 1]"),
    (_args.dropout, "1", "in [0, 1)"), (_args.dropout, "-0.1", "in [0, 1)"),
    (_args.unit_interval, "inf", "in [0, 1]"), (_args.positive_float, "0", "> 0"),
    (_args.positive_float, "nan", "> 0"), (_args.positive_float, "-1e-3", "> 0"),
    (_args.non_negative_float, "-1", ">= 0"), (_args.non_negative_float, "inf", ">= 0"),
    (_args.surrogate_dim, str(2 ** 70), "in [1, 4096]"), (_args.threads, "0", "integer in [1, "),
    (_args.threads, str(2 ** 70), "integer in [1, "),
])
def test_validators_refuse_with_the_value(validator, text, fragment):
    with pytest.raises(argparse.ArgumentTypeError) as ei:
        validator(text)
    msg = str(ei.value)
    assert fragment in msg and f"got {text!r}" in msg


def _subparsers(ap):
    return next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction)).choices


def _bad_value(validator) -> str:
    lo = getattr(validator, "lo", None)
    if validator.__name__ in ("positive_int", "non_negative_int", "seed", "threads", "runs", "limit",
                              "surrogate_dim"):
        return str(lo - 1)
    return "nan"


def test_every_numeric_option_is_checked_at_parse_time(capsys):
    """Every option of every subcommand that takes a number has a range-checking type, and a value
    outside the range is refused by the parser with one line naming the option and the value."""
    from fgp_ext.cli import build_parser

    checked = 0
    for cmd, sub in _subparsers(build_parser()).items():
        for action in sub._actions:
            if not action.option_strings:
                continue
            opt = action.option_strings[-1]
            assert action.type not in (int, float), f"fgp {cmd} {opt} has a plain type={action.type.__name__}"
            if getattr(action.type, "__module__", None) != _args.__name__:
                continue
            bad = _bad_value(action.type)
            with pytest.raises(SystemExit) as exc:
                build_parser().parse_args([cmd, opt, bad])
            err = capsys.readouterr().err.strip().splitlines()[-1]
            assert exc.value.code == 2
            assert err.startswith(f"fgp {cmd}: error: argument {opt}: must be") and f"got {bad!r}" in err, err
            checked += 1
    assert checked >= 50  # run, pretrain, finetune, evaluate, surrogate and latency together


def test_latency_module_parser_checks_ranges(capsys):
    from fgp_ext.latency import main

    with pytest.raises(SystemExit) as exc:
        main(["--space", "nb201", "--arch", CELL_A, "--warmup", "-1"])
    assert exc.value.code == 2
    assert "argument --warmup: must be an integer >= 0, got '-1'" in capsys.readouterr().err


def test_cli_range_errors_come_before_any_work(capsys):
    from fgp_ext.cli import main

    for argv, line in [
        (["run", "--batch-size-finetune", "0"], "argument --batch-size-finetune: must be an integer >= 1, got '0'"),
        (["pretrain", "--epochs", "-5", "--out", "x.pt"], "argument --epochs: must be an integer >= 0, got '-5'"),
        (["run", "--threads", "-1"], "argument --threads: must be an integer in [1, "),
        (["evaluate", "--n-val", "-5", "--checkpoint", "x"], "argument --n-val: must be an integer >= 0, got '-5'"),
        (["finetune", "--ratio", "0", "--out", "x"], "argument --ratio: must be a number in (0, 1], got '0'"),
        (["surrogate", "--sur-seed", str(2 ** 70)], f"argument --sur-seed: must be an integer in [0, 4294967295], "
                                                    f"got '{2 ** 70}'"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2 and line in capsys.readouterr().err


# ------------------------------------------------------------------------------------ readers

def test_bom_is_stripped_in_every_format(tmp_path):
    bom = "\ufeff"
    csv = write(tmp_path, "b.csv", bom + f"index,arch_str,acc\n3,{CELL_A},91.5\n4,{CELL_B},10\n")
    ds = F.load(str(csv))
    assert ds.target_names == ["acc"] and ds.index.tolist() == [3, 4]
    ds = F.load(str(write(tmp_path, "b.jsonl", bom + lines({"arch_str": CELL_A, "acc": 1.0},
                                                          {"arch_str": CELL_B, "acc": 2.0}))))
    assert ds.target_names == ["acc"] and len(ds) == 2
    ds = F.load(str(write(tmp_path, "b.json", bom + json.dumps([{"arch_str": CELL_A, "acc": 1.0}]))))
    assert ds.target_names == ["acc"] and len(ds) == 1
    gz = write(tmp_path, "b.jsonl.gz", gzip.compress((bom + lines(GEN)).encode()))
    assert F.load(str(gz)).target_names == ["acc"]


def test_gzip_is_recognised_by_content(tmp_path):
    p = write(tmp_path, "plain_name.jsonl", gzip.compress(lines(GEN, GEN).encode()))
    assert len(F.load(str(p))) == 2


def test_directory_binary_and_broken_compression(tmp_path):
    (tmp_path / "d.jsonl").mkdir()
    load_error(tmp_path / "d.jsonl", "a directory")
    load_error(write(tmp_path, "bin", bytes(range(256)) * 4), "not UTF-8 text (byte 0x80", where="line 2")  # byte 10 ends line 1
    load_error(write(tmp_path, "nul.jsonl", lines(GEN).encode() + b"\x00\x01\n"), "NUL bytes", where="line 2")
    load_error(write(tmp_path, "l1.csv", f"arch_str,acc\n{CELL_A},9\n{CELL_B},\u00e9\n".encode("latin-1")),
               "not UTF-8 text (byte 0xe9", where="line 3")
    gz = gzip.compress(lines(*[GEN] * 200).encode())
    load_error(write(tmp_path, "t.jsonl.gz", gz[: len(gz) // 2]), "truncated or corrupt gzip")
    load_error(write(tmp_path, "n.jsonl.gz", lines(GEN)), "named .gz but not gzip-compressed")
    load_error("/dev/zero", "a device or socket")


def test_symlink_loop_and_mixed_spaces(tmp_path):
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop.name)
    load_error(loop, "a symbolic link that leads nowhere")
    p = write(tmp_path, "mixed.jsonl", lines({"arch_str": CELL_A, "acc": 1.0}, GEN))
    load_error(p, "field 'ops' describes an architecture of another search space than 'nb201'", where="line 2")


def test_deep_nesting_names_the_line(tmp_path):
    load_error(write(tmp_path, "deep.json", "[" * 100_000 + "]" * 100_000), "JSON nested too deeply")
    text = lines(GEN, GEN) + '{"ops": ["a"], "edges": [], "acc": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
    load_error(write(tmp_path, "deep.jsonl", text), "JSON nested too deeply", where="line 3")


def test_integers_beyond_int64(tmp_path):
    big = dict(GEN, edges=[[0, 2 ** 70], [1, 2]])
    load_error(write(tmp_path, "e.jsonl", lines(GEN, big)), "does not fit in 64 bits", where="line 2")
    load_error(write(tmp_path, "i.jsonl", lines(dict(GEN, index=1), dict(GEN, index=2 ** 63))),
               "'index' 9223372036854775808 does not fit in 64 bits", where="line 2")
    load_error(write(tmp_path, "i.csv", f"index,arch_str\n1,{CELL_A}\n{2 ** 64},{CELL_B}\n"),
               "column 'index'", "does not fit in 64 bits", where="line 3")
    load_error(write(tmp_path, "t.jsonl", lines(GEN) + '{"ops": ["a", "b"], "edges": [[0, 1]], "acc": 1'
                     + "0" * 400 + "}\n"), "target field 'acc'", "too large for a float", where="line 2")
    ok = F.load(str(write(tmp_path, "ok.jsonl", lines(dict(GEN, index=2 ** 63 - 1)))))
    assert ok.index.tolist() == [2 ** 63 - 1]


@pytest.mark.parametrize("name, text, detail", [
    ("e.jsonl", "", "(the file is empty)"), ("e.json", "", "(the file is empty)"),
    ("e.csv", "", "(the file is empty)"), ("blank.jsonl", "\n \n\r\n", "(the file is empty)"),
    ("noext", "   ", "(the file is empty)"), ("arr.json", "[]", ""),
    ("h.csv", "index,arch_str,acc\n", "(a header and no rows)"),
])
def test_no_architectures(tmp_path, name, text, detail):
    p = write(tmp_path, name, text)
    msg = load_error(p, "holds no architectures")
    assert msg == f"{p} holds no architectures{(' ' + detail) if detail else ''}"


def test_empty_sources_name_the_line(tmp_path):
    load_error(write(tmp_path, "s.jsonl", lines(GEN, dict(GEN, sources=[]))), "'sources' is empty",
               where="line 2")
    with pytest.raises(F.DataFormatError, match="record 0: 'sources' is empty"):
        F.from_records([dict(GEN, sources=[])])
    assert F.load(str(write(tmp_path, "ok.jsonl", lines(dict(GEN, sources=[0])))))[0].sources == (0,)


def test_nan_and_null_targets_stay_nan(tmp_path):
    ds = F.load(str(write(tmp_path, "n.jsonl", lines(dict(GEN, acc=None), '{"ops": ["a"], "edges": [], '
                                                                          '"acc": NaN}', dict(GEN, acc=3.0)))))
    y = ds.targets("acc")
    assert np.isnan(y[:2]).all() and y[2] == 3.0
    F.check_target(ds, "acc")  # NaN = unlabelled: no error
    ds = F.load(str(write(tmp_path, "n.csv", f"arch_str,acc\n{CELL_A},nan\n{CELL_B},\n{CELL_C},5\n")))
    y = ds.targets("acc")
    assert np.isnan(y[:2]).all() and y[2] == 5.0
    F.check_target(ds, "acc")


def test_inf_targets_are_refused_by_line_and_column(tmp_path):
    p = write(tmp_path, "inf.jsonl", lines(dict(GEN, acc=1.0, lat=2.0), '{"ops": ["a"], "edges": [], "acc": 2.0, '
                                                                        '"lat": -Infinity}', dict(GEN, acc=1e999)))
    ds = F.load(str(p))  # read: a column that is never a target may hold -inf (nwot proxies do)
    assert ds.nonfinite == {"lat": f"{p}: line 2", "acc": f"{p}: line 3"}
    with pytest.raises(F.DataFormatError) as ei:
        F.check_target(ds, "lat")
    assert str(ei.value).startswith(f"{p}: line 2: target 'lat' is -inf; targets must be finite")
    with pytest.raises(F.DataFormatError, match="line 3: target 'acc' is inf"):
        F.check_target(ds, "acc")
    c = write(tmp_path, "inf.csv", f"arch_str,acc,lat\n{CELL_A},1,2\n{CELL_B},inf,3\n")
    with pytest.raises(F.DataFormatError, match=f"^{c}: line 3: target 'acc' is inf"):
        F.check_target(F.load(str(c)), "acc")
    none = write(tmp_path, "none.jsonl", lines(dict(GEN, acc=None), dict(GEN, acc=None)))
    with pytest.raises(F.DataFormatError, match=f"^{none}: target 'acc' has no value"):
        F.check_target(F.load(str(none)), "acc")
    mem = F.from_records([dict(GEN, name="first"), dict(GEN, name="second", acc=math.inf)])
    with pytest.raises(F.DataFormatError, match=r"^architecture 1 \(second\): target 'acc' is inf"):
        F.check_target(mem.subset([0, 1]), "acc")


def test_cli_turns_loader_errors_into_one_line(tmp_path, capsys):
    from fgp_ext.cli import main

    cases = [
        (["run", "--data", str(tmp_path)], f"{tmp_path}: a directory, not an architecture file"),
        (["surrogate", "--data", str(write(tmp_path, "x.jsonl", ""))], f"{tmp_path / 'x.jsonl'} holds no architectures"),
        (["run", "--data", str(write(tmp_path, "i.csv", f"arch_str,acc\n{CELL_A},1\n{CELL_B},-inf\n"))],
         f"{tmp_path / 'i.csv'}: line 3: target 'acc' is -inf"),
        (["latency", "--space", "nb201", "--file", str(tmp_path)], f"{tmp_path}: a directory"),
    ]
    for argv, fragment in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("fgp: error: ") and fragment in err, err
        assert "Traceback" not in err


# ------------------------------------------------------------------------------------ catalogue

def test_bad_inputs_catalogue_slice(tmp_path):
    """A slice of scripts/bad_inputs.py (files that fail before any training) answers every case as
    expected: no traceback, crash or silent garbage."""
    pattern = (r"^run --data <(directory|binary garbage|truncated gzip|100000-deep JSON array|edge id 2\^70|empty \.jsonl|"
               r"inf target \(CSV\)|\"sources\": \[\] in one record)>")
    out = tmp_path / "slice.json"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "bad_inputs.py"), "--only", "files",
                        "--match", pattern, "--json", str(out)], capture_output=True, text=True, timeout=300)
    doc = json.loads(out.read_text())
    cases = doc["cases"]
    assert len(cases) >= 8, r.stdout
    bad = [c for c in cases if c["outcome"] in ("traceback", "crash", "silent garbage", "timeout")]
    assert not bad, bad
    assert all(c["outcome"] == "clear error" for c in cases), [c for c in cases if c["outcome"] != "clear error"]
    assert r.returncode == 0, r.stdout[-2000:]
