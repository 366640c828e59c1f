"""File formats and loaders (fgp_ext/data/formats.py, fgp_ext/data/dataset.py)."""
import csv
import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fgp_ext.data import formats as F
from fgp_ext.data import spaces as S
from fgp_ext.data.dataset import Dataset

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data absent")

CELL_A = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|"
CELL_B = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def jsonl(*records):
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n"


# ------------------------------------------------------------------------------------ JSONL

def test_jsonl_happy_path(tmp_path):
    text = jsonl(
        {"ops": ["in", "conv", "out"], "edges": [[0, 1], [1, 2]], "cifar10": 93.1,
         "latency_ms": 4.2, "name": "net-a"},
        "",  # blank line skipped
        {"ops": ["in", "pool", "conv", "out"], "matrix": [[0, 1, 1, 0], [0, 0, 0, 1],
                                                          [0, 0, 0, 1], [0, 0, 0, 0]],
         "cifar10": 91},
        "   ",
        {"ops": ["in", "out"], "edges": [[0, 1]], "latency_ms": None, "flops": 7},
    )
    ds = F.load(write(tmp_path, "a.jsonl", text))
    assert len(ds) == 3
    assert isinstance(ds.space, S.GenericSpace)
    assert ds.space.vocab == ["conv", "in", "out", "pool"]  # sorted: ids independent of line order
    assert ds.target_names == ["cifar10", "latency_ms", "flops"]
    np.testing.assert_array_equal(ds.targets("cifar10"), [93.1, 91.0, np.nan])
    np.testing.assert_array_equal(ds.targets("latency_ms"), [4.2, np.nan, np.nan])
    np.testing.assert_array_equal(ds.targets("flops"), [np.nan, np.nan, 7.0])
    assert ds.targets("cifar10").dtype == np.float64
    assert ds.names == ["net-a", None, None]
    assert ds[1].ops.tolist() == [1, 3, 0, 2]
    assert {tuple(e) for e in ds[1].edges.T.tolist()} == {(0, 1), (0, 2), (1, 3), (2, 3)}
    assert ds[0].targets == {"cifar10": 93.1, "latency_ms": 4.2}
    np.testing.assert_array_equal(ds.index, [0, 1, 2])


def test_jsonl_frozen_space_and_gz(tmp_path):
    sp = S.GenericSpace(["in", "conv", "out"])
    text = jsonl({"ops": ["in", "conv", "out"], "edges": [[0, 1], [1, 2]], "acc": 1})
    p = tmp_path / "b.jsonl.gz"
    p.write_bytes(gzip.compress(text.encode()))
    ds = F.load(p, space=sp)
    assert ds.space is sp and len(ds) == 1 and ds[0].ops.tolist() == [0, 1, 2]
    # content sniffing: no extension
    ds2 = F.load(write(tmp_path, "noext", text), space=S.GenericSpace(["in", "conv", "out"]))
    assert ds2[0].ops.tolist() == [0, 1, 2]


GOOD = {"ops": ["a", "b"], "edges": [[0, 1]], "acc": 1.0}


@pytest.mark.parametrize("bad, fragment", [
    ('{"ops": ["a", "b"], "edges": [[0, 1]', "invalid JSON"),
    ({"ops": ["a", "zzz"], "edges": [[0, 1]]}, "unknown op 'zzz'"),
    ({"ops": ["a", "b", "a"], "edges": [[0, 1], [1, 2], [2, 1]]}, "cycle"),
    ({"ops": ["a", "b"], "matrix": [[0, 1], [0]]}, "ragged"),
    ({"ops": ["a", "b"]}, "exactly one of 'edges' or 'matrix'"),
    ({"edges": [[0, 1]]}, "'ops'"),
    ({"ops": ["a", "b"], "edges": [[0, 1]], "acc": "high"}, "'acc' must be a number"),
    ({"ops": ["a", "b"], "edges": [[0, 1]], "acc": True}, "'acc' must be a number"),
    ({"ops": ["a", "b"], "edges": [[0, 5]]}, "out of range"),
    ("[1, 2]", "expected a JSON object"),
    ({"ops": ["a", "b"], "edges": [[0, 1]], "name": [1]}, "'name' must be a string"),
])
def test_jsonl_errors_name_the_line(tmp_path, bad, fragment):
    # line 1 good, line 2 blank, line 3 bad
    text = jsonl(GOOD, "", bad, GOOD)
    sp = S.GenericSpace(["a", "b"])
    with pytest.raises(F.DataFormatError) as ei:
        F.read_jsonl(write(tmp_path, "x.jsonl", text), space=sp)
    msg = str(ei.value)
    assert "line 3" in msg and fragment in msg
    assert ei.value.where == "line 3" and "x.jsonl" in msg
    assert isinstance(ei.value, ValueError)


def test_parse_jsonl_in_memory():
    ds = F.parse_jsonl(jsonl({"arch_str": CELL_A, "acc": 1.0}, {"arch_str": CELL_B}).splitlines())
    assert isinstance(ds.space, S.NB201Space)
    assert ds[0].ops.tolist() == [0, 5, 2, 3, 6, 4, 5, 1]
    np.testing.assert_array_equal(ds.targets("acc"), [1.0, np.nan])
    with pytest.raises(F.DataFormatError, match="line 2: .*malformed NB201"):
        F.parse_jsonl([json.dumps({"arch_str": CELL_A}), json.dumps({"arch_str": "|x~0|"})])


# ------------------------------------------------------------------------------------ JSON array

def test_json_array_and_record_errors(tmp_path):
    recs = [{"matrix": [[0, 1], [0, 0]], "ops": ["input", "output"], "val_accuracy": 80.0},
            {"matrix": [[0, 1, 1], [0, 0, 1], [0, 0, 0]],
             "ops": ["input", "maxpool3x3", "output"], "val_accuracy": 90.5}]
    ds = F.load(write(tmp_path, "r.json", json.dumps(recs)))
    assert isinstance(ds.space, S.NB101Space) and len(ds) == 2
    np.testing.assert_array_equal(ds.targets("val_accuracy"), [80.0, 90.5])
    recs[1]["matrix"][1][0] = 1
    with pytest.raises(F.DataFormatError, match="record 1: .*upper-triangular"):
        F.load(write(tmp_path, "r2.json", json.dumps(recs)))
    with pytest.raises(F.DataFormatError, match="expected a JSON array"):
        F.read_json(write(tmp_path, "r3.json", '{"a": 1}'))
    with pytest.raises(F.DataFormatError, match="invalid JSON"):
        F.read_json(write(tmp_path, "r4.json", "[1, "))


def test_from_records_explicit_generic_space_keeps_dangling_nodes():
    rec = {"matrix": [[0, 1, 1], [0, 0, 0], [0, 0, 0]], "ops": ["input", "maxpool3x3", "output"]}
    assert F.from_records([rec])[0].num_nodes == 2        # NB101: node 1 pruned (dead end)
    assert F.from_records([rec], space="generic")[0].num_nodes == 3


# ------------------------------------------------------------------------------------ CSV

def test_csv_happy_path(tmp_path):
    text = ("index,arch_str,acc,lat,name\n"
            f"7,{CELL_A},93.5,1.25,first\n"
            "\n"
            f"3,{CELL_B},,nan,\n")
    ds = F.load(write(tmp_path, "c.csv", text))
    assert isinstance(ds.space, S.NB201Space) and len(ds) == 2
    assert ds.target_names == ["acc", "lat"]
    np.testing.assert_array_equal(ds.targets("acc"), [93.5, np.nan])
    np.testing.assert_array_equal(ds.targets("lat"), [1.25, np.nan])
    np.testing.assert_array_equal(ds.index, [7, 3])
    assert ds.names == ["first", None]
    assert ds[0].ops.tolist() == [0, 5, 2, 3, 6, 4, 5, 1]
    assert ds[1].ops.tolist() == [0, 2, 2, 2, 2, 2, 2, 1]


@pytest.mark.parametrize("text, fragment", [
    (f"arch_str,acc\n{CELL_A},1\n{CELL_A},fast\n", "line 3: column 'acc': 'fast' is not a number"),
    (f"arch_str,acc\n{CELL_A},1\n|none~0|+|x|,2\n", "line 3: malformed NB201"),
    (f"arch_str,acc\n{CELL_A},1,5\n", "line 2: expected 2 fields, got 3"),
    (f"cell,acc\n{CELL_A},1\n", "line 1: CSV header has no 'arch_str'"),
    (f"index,arch_str\n1.5,{CELL_A}\n", "line 2: column 'index' must hold integers"),
    ("", "bad.csv holds no architectures"),
])
def test_csv_errors(tmp_path, text, fragment):
    with pytest.raises(F.DataFormatError) as ei:
        F.load(write(tmp_path, "bad.csv", text))
    assert fragment in str(ei.value)


# ------------------------------------------------------------------------------------ graph CSV

_STRUCT = ("ops", "edges", "matrix", "sources", "genotype")


def graph_csv(records, columns):
    """The CSV layout of a graph space: structure fields as JSON text, the rest as numbers."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns)
    for r in records:
        w.writerow(["" if r.get(c) is None else json.dumps(r[c]) if c in _STRUCT else r[c]
                    for c in columns])
    return buf.getvalue()


def assert_same_dataset(a, b):
    assert len(a) == len(b) and type(a.space) is type(b.space)
    assert a.space.vocab == b.space.vocab and a.target_names == b.target_names
    assert a.names == b.names
    np.testing.assert_array_equal(a.index, b.index)
    for k in a.target_names:
        np.testing.assert_array_equal(a.targets(k), b.targets(k))
    for ga, gb in zip(a, b):
        assert ga.ops.tolist() == gb.ops.tolist() and ga.edges.tolist() == gb.edges.tolist()
        assert ga.sources == gb.sources and ga.name == gb.name
        assert ga.targets.keys() == gb.targets.keys()
        np.testing.assert_array_equal(list(ga.targets.values()), list(gb.targets.values()))


_GRAPH_RECS = [
    {"index": 4, "name": "net-a", "ops": ["in", "conv", "out"], "edges": [[0, 1], [1, 2]],
     "matrix": None, "sources": None, "acc": 93.1, "flops": 7},
    {"index": 9, "name": None, "ops": ["in", "pool", "conv", "out"], "edges": None,
     "matrix": [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]], "sources": [0],
     "acc": None, "flops": 12.5},
    {"index": 2, "name": "c", "ops": ["in", "zconv", "out"], "edges": [[0, 2], [1, 2]],
     "matrix": None, "sources": [0, 1], "acc": 90.0, "flops": 3},
]


def test_graph_csv_equals_jsonl(tmp_path):
    cols = ["index", "name", "ops", "edges", "matrix", "sources", "acc", "flops"]
    text = graph_csv(_GRAPH_RECS, cols)
    assert '"[""in"", ""conv"", ""out""]"' in text  # JSON cells are CSV-quoted
    recs = [{k: v for k, v in r.items() if not (k in _STRUCT and v is None)} for r in _GRAPH_RECS]
    ds_j = F.load(write(tmp_path, "g.jsonl", jsonl(*recs)))
    ds_c = F.load(write(tmp_path, "g.csv", text))
    assert isinstance(ds_c.space, S.GenericSpace) and ds_c.space.vocab == ["conv", "in", "out", "pool", "zconv"]
    assert_same_dataset(ds_c, ds_j)
    assert ds_c.target_names == ["acc", "flops"] and ds_c.names == ["net-a", None, "c"]
    np.testing.assert_array_equal(ds_c.index, [4, 9, 2])
    np.testing.assert_array_equal(ds_c.targets("acc"), [93.1, np.nan, 90.0])
    assert ds_c[2].sources == (0, 1)
    # gzip, content sniffing (no extension), a fixed vocabulary and read_csv all take the same path
    gz = tmp_path / "g.csv.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    assert_same_dataset(F.load(gz), ds_j)
    assert_same_dataset(F.load(write(tmp_path, "noext", text)), ds_j)
    assert_same_dataset(F.read_csv(tmp_path / "g.csv"), ds_j)
    vocab = ["out", "in", "conv", "pool", "zconv", "extra"]
    assert_same_dataset(F.load(tmp_path / "g.csv", vocabulary=vocab),
                        F.load(tmp_path / "g.jsonl", vocabulary=vocab))


def test_graph_csv_nb101_cells_are_inferred_like_jsonl(tmp_path):
    recs = [{"matrix": [[0, 1, 1], [0, 0, 1], [0, 0, 0]], "ops": ["input", "maxpool3x3", "output"],
             "val_accuracy": 90.5}]
    ds_c = F.load(write(tmp_path, "n.csv", graph_csv(recs, ["ops", "matrix", "val_accuracy"])))
    assert isinstance(ds_c.space, S.NB101Space)
    assert_same_dataset(ds_c, F.load(write(tmp_path, "n.jsonl", jsonl(*recs))))


_G_HEAD = "ops,edges,acc\n"
_G_OK = '"[""a"", ""b""]","[[0, 1]]",1\n'


@pytest.mark.parametrize("row, fragment", [
    ('"[""a"", ""b""]","[[0, 1]",2\n', "column 'edges': invalid JSON"),
    ('"[a, b]","[[0, 1]]",2\n', "column 'ops': invalid JSON"),
    ('"[""a"", ""b"", ""a""]","[[0, 1], [1, 2], [2, 1]]",2\n', "cycle"),
    ('"[""a"", ""b""]","[[0, 5]]",2\n', "edge 0 [0, 5] is out of range for 2 nodes"),
    ('"[""a"", ""b""]","[[0, 1]]",fast\n', "column 'acc': 'fast' is not a number"),
    ('"[""a"", ""b""]",,2\n', "exactly one of 'edges' or 'matrix'"),
    (',"[[0, 1]]",2\n', "cell is empty (column 'ops')"),
    ('"[""a"", ""zzz""]","[[0, 1]]",2\n', "unknown op 'zzz'"),
    ('"[""a"", ""b""]","[[0, 1]]",2,9\n', "expected 3 fields, got 4"),
])
def test_graph_csv_errors_name_file_line_and_column(tmp_path, row, fragment):
    text = _G_HEAD + _G_OK + "\n" + row + _G_OK  # header line 1, good line 2, blank line 3
    with pytest.raises(F.DataFormatError) as ei:
        F.load(write(tmp_path, "bad.csv", text), space=S.GenericSpace(["a", "b"]).freeze())
    msg = str(ei.value)
    assert fragment in msg and "bad.csv: line 4:" in msg and "\n" not in msg


def test_graph_csv_refusals(tmp_path):
    with pytest.raises(F.DataFormatError, match="line 2: column 'index' must hold integers"):
        F.load(write(tmp_path, "i.csv", 'index,ops,edges\n1.5,"[""a""]",[]\n'))
    with pytest.raises(F.DataFormatError, match="holds no architectures"):
        F.load(write(tmp_path, "h.csv", "ops,edges,acc\n"))
    # an arch_str CSV is NAS-Bench-201 whatever space is asked for
    with pytest.raises(F.DataFormatError, match="read as NAS-Bench-201"):
        F.load(write(tmp_path, "a.csv", f"arch_str\n{CELL_A}\n"), space="generic")
    with pytest.raises(F.DataFormatError, match="unrecognised"):
        F.load(write(tmp_path, "x", "opsx,edges\n1,2\n"))


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        F.load(tmp_path / "missing.jsonl")
    with pytest.raises(F.DataFormatError, match="unrecognised"):
        F.load(write(tmp_path, "weird.txt", "hello world\n"))
    with pytest.raises(ValueError, match="NAS-Bench-201"):
        F.load("nb201", space="nb101")


# ------------------------------------------------------------------------------------ Dataset

def test_dataset_indexing_and_subset():
    sp = S.NB201Space()
    graphs = [S.nb201_from_string(c) for c in (CELL_A, CELL_B, CELL_A, CELL_B)]
    ds = Dataset(graphs, sp, {"acc": [1.0, 2.0, 3.0, np.nan]}, index=[10, 11, 12, 13])
    assert len(ds) == 4 and ds[1] is graphs[1] and ds[-1] is graphs[3]
    sub = ds[1:3]
    assert isinstance(sub, Dataset) and len(sub) == 2
    np.testing.assert_array_equal(sub.targets("acc"), [2.0, 3.0])
    np.testing.assert_array_equal(sub.index, [11, 12])
    sub2 = ds[np.array([3, 0])]
    np.testing.assert_array_equal(sub2.targets("acc"), [np.nan, 1.0])
    assert sub2[0] is graphs[3]
    mask = ds[np.array([True, False, False, True])]
    np.testing.assert_array_equal(mask.index, [10, 13])
    assert ds.subset([]).__len__() == 0 and ds.subset([]).target_names == ["acc"]
    # targets() returns a copy
    t = ds.targets("acc")
    t[0] = 99
    assert ds.targets("acc")[0] == 1.0
    with pytest.raises(KeyError, match="unknown target 'x'"):
        ds.targets("x")
    with pytest.raises(IndexError):
        ds[4]
    with pytest.raises(IndexError):
        ds.subset([0, 9])
    with pytest.raises(IndexError):
        ds.subset(np.array([True, False]))
    with pytest.raises(ValueError, match="3 values for 4 graphs"):
        Dataset(graphs, sp, {"acc": [1, 2, 3]})


def test_dataset_collects_targets_from_graphs():
    g1 = S.nb201_from_string(CELL_A, targets={"a": 1.0})
    g2 = S.nb201_from_string(CELL_B, targets={"b": 2.0})
    ds = Dataset([g1, g2], S.NB201Space())
    assert ds.target_names == ["a", "b"]
    np.testing.assert_array_equal(ds.targets("a"), [1.0, np.nan])
    np.testing.assert_array_equal(ds.targets("b"), [np.nan, 2.0])


# ------------------------------------------------------------------------------------ embedded

def test_embedded_nb201():
    F._embedded_arrays.cache_clear()
    ds = F.load("nb201")  # its load time is measured in bench/test_bench_data.py, not asserted here
    assert len(ds) == 15625 and isinstance(ds.space, S.NB201Space)
    np.testing.assert_array_equal(ds.index, np.arange(15625))
    acc = ds.targets("cifar10_test_200ep")
    best = int(np.argmax(acc))
    assert ds.index[best] == 6111 and round(acc[best], 2) == 94.37
    assert ds[best].name == "6111"
    for name in ("cifar100_test_200ep", "cifar10_val_12ep", "lat_1080ti_1", "lat_pixel3"):
        assert name in ds.target_names
        assert np.isfinite(ds.targets(name)).all()
    # every one of the 5^6 cells exactly once
    ops = np.stack([g.ops for g in ds.graphs])
    codes = ((ops[:, 1:7] - 2) * 5 ** np.arange(6)).sum(1)
    assert np.unique(codes).size == 15625
    assert all(g.num_edges == 10 and g.sources == (0,) for g in ds.graphs[:100])


def test_embedded_file_is_package_data():
    p = REPO / "fgp_ext" / "data" / F.EMBEDDED_NB201_FILE
    assert p.is_file() and p.stat().st_size < 1_000_000


def test_modules_do_not_import_torch():
    code = (
        "import sys, types\n"
        f"m = types.ModuleType('fgp_ext'); m.__path__ = [{str(REPO / 'fgp_ext')!r}]\n"
        "sys.modules['fgp_ext'] = m\n"
        "from fgp_ext.data import formats, spaces, dataset\n"
        "import fgp_ext.metrics\n"
        "assert len(formats.load('nb201')) == 15625\n"
        "bad = [k for k in sys.modules if k == 'torch' or k.startswith('fgp_ext.ops')"
        " or k == 'scipy']\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------------------------ shared data

@needs_shared
@pytest.mark.parametrize("fname, count, space, target", [
    ("nb201.csv", 15625, S.NB201Space, "cifar10_test_200ep"),
    ("nb201_zc_725.json", 724, S.NB201Space, "val_accuracy"),
    ("nb101_500.json", 500, S.NB101Space, "val_accuracy"),
    ("nb101_unlabeled_1000.json", 1000, S.NB101Space, None),
    ("nb301_725.json", 725, S.DartsSpace, "val_accuracy"),
])
def test_shared_files_load(fname, count, space, target):
    ds = F.load(SHARED / fname)
    assert len(ds) == count and isinstance(ds.space, space)
    if target is None:
        assert ds.target_names == []
    else:
        assert np.isfinite(ds.targets(target)).all()
        assert "index" not in ds.target_names


@needs_shared
def test_shared_nb101_sanity():
    ds = F.load(SHARED / "nb101_500.json")
    assert abs(ds.targets("val_accuracy").mean() - 89.6) < 0.05  # data README sanity fact
    assert {"synflow", "flops", "params"} <= set(ds.target_names)
    assert all(g.num_nodes <= 7 and g.ops[0] == 0 and g.ops[-1] == 1 for g in ds)


@needs_shared
def test_embedded_matches_shared_csv():
    emb = F.load("nb201")
    ref = F.load(SHARED / "nb201.csv")
    assert emb.target_names == ref.target_names
    for name in ref.target_names:
        np.testing.assert_array_equal(emb.targets(name), ref.targets(name))
    np.testing.assert_array_equal(emb.index, ref.index)
    np.testing.assert_array_equal(np.stack([g.ops for g in emb]), np.stack([g.ops for g in ref]))
    # and against the raw text of the CSV
    with open(SHARED / "nb201.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for i in (0, 1, 6111, 15624):
        assert emb.targets("cifar10_test_200ep")[i] == float(rows[i]["cifar10_test_200ep"])
        assert S.nb201_to_string(emb[i].ops) == rows[i]["arch_str"]


@needs_shared
def test_shared_zc_index_is_official_nb201_index():
    zc = F.load(SHARED / "nb201_zc_725.json")
    emb = F.load("nb201")
    ops = np.stack([g.ops for g in zc])
    np.testing.assert_array_equal(ops, np.stack([emb[int(i)].ops for i in zc.index]))


# -- op vocabulary: deterministic without one, fixed with one ------------------------------------

_GEN = [
    {"ops": ["in", "zconv", "out"], "edges": [[0, 1], [1, 2]], "acc": 1.0, "name": "a"},
    {"ops": ["in", "pool", "aconv", "out"], "edges": [[0, 1], [0, 2], [1, 3], [2, 3]], "acc": 2.0,
     "name": "b"},
    {"ops": ["in", "out"], "edges": [[0, 1]], "acc": 3.0, "name": "c"},
]


def test_generic_op_ids_do_not_depend_on_line_order(tmp_path):
    ds1 = F.load(write(tmp_path, "a.jsonl", jsonl(*_GEN)))
    ds2 = F.load(write(tmp_path, "b.jsonl", jsonl(*_GEN[::-1])))
    assert ds1.space.vocab == ds2.space.vocab == ["aconv", "in", "out", "pool", "zconv"]
    by_name = {g.name: g.ops.tolist() for g in ds2}
    for g in ds1:
        assert g.ops.tolist() == by_name[g.name]
    # first-seen order would have numbered "in" 0 in one file and "out" 0 in the other
    assert ds1[2].ops.tolist() == [1, 2]


def test_fixed_vocabulary_numbers_ops_by_position(tmp_path):
    vocab = ["out", "in", "zconv", "pool", "aconv", "extra"]
    ds = F.load(write(tmp_path, "a.jsonl", jsonl(*_GEN)), vocabulary=vocab)
    assert ds.space.vocab == vocab and ds.space.num_ops == 6
    assert ds[0].ops.tolist() == [1, 2, 0]
    assert ds[1].ops.tolist() == [1, 3, 4, 0]
    ds_json = F.from_records(_GEN[::-1], vocabulary=vocab)
    assert ds_json[2].ops.tolist() == [1, 2, 0]


def test_fixed_vocabulary_refuses_an_unknown_op_naming_it_and_the_line(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl(*_GEN))
    with pytest.raises(F.DataFormatError) as ei:
        F.load(path, vocabulary=["in", "out", "zconv"])
    msg = str(ei.value)
    assert "'pool'" in msg and "line 2" in msg and "\n" not in msg


def test_fixed_spaces_keep_their_vocabulary(tmp_path):
    ds = F.load("nb201")
    assert ds.space.vocab == S.NB201_VOCAB
    assert F.load("nb201", vocabulary=S.NB201_VOCAB).space.vocab == S.NB201_VOCAB
    with pytest.raises(ValueError, match="fixed vocabulary"):
        F.load("nb201", vocabulary=S.NB101_VOCAB)
    rec = {"matrix": [[0, 1, 0], [0, 0, 1], [0, 0, 0]], "ops": ["input", "conv3x3-bn-relu", "output"]}
    assert F.from_records([rec]).space.vocab == S.NB101_VOCAB
    with pytest.raises(F.DataFormatError, match="fixed vocabulary"):
        F.from_records([rec], vocabulary=S.NB201_VOCAB)
    assert S.DartsSpace().with_vocabulary(S.DARTS_VOCAB).vocab == S.DARTS_VOCAB


def test_space_with_vocabulary():
    sp = S.space_with_vocabulary("nb201", S.NB201_VOCAB)
    assert isinstance(sp, S.NB201Space)
    g = S.space_with_vocabulary("mine", ["b", "a"])
    assert isinstance(g, S.GenericSpace) and g.name == "mine" and g.frozen and g.vocab == ["b", "a"]
    with pytest.raises(ValueError, match="'c'"):
        g.from_edges(["a", "c"], [[0, 1]])
