"""Reading architecture files into a :class:`~fgp_ext.data.dataset.Dataset`.

Supported inputs (``.gz`` compression is handled transparently):

* **JSON Lines** (``.jsonl`` / ``.ndjson``, or any file whose first character is ``{``): one
  architecture per line, e.g. ``{"ops": ["input", "conv", "output"], "edges": [[0, 1], [1, 2]],
  "cifar10": 93.1, "latency_ms": 4.2, "name": "net-a"}`` or with ``"matrix": [[...]]`` instead of
  ``"edges"``. Every other field must be numeric (or ``null`` = missing) and becomes a target;
  ``"name"`` (string) and ``"index"`` (integer id) are metadata; ``"sources"`` (list of node ids)
  is optional. Records may also be NAS-Bench records (``"arch_str"``, ``"genotype"``,
  NAS-Bench-101 ``"matrix"`` + ``"ops"``). Blank lines are skipped. Errors name the line.
* **JSON array** of such records (``.json`` whose first character is ``[``); errors name the
  record number (0-based). This is the format of the NASLib-derived files ``nb201_zc_725.json``,
  ``nb101_500.json``, ``nb101_unlabeled_1000.json`` and ``nb301_725.json``.
* **CSV** with an NAS-Bench-201 ``arch_str`` column (``.csv``): an ``index`` column becomes the
  dataset index, a ``name`` column the graph names, every other column must be numeric (empty /
  ``nan`` = missing) and becomes a target. Errors name the line (the header is line 1). This is
  the format of ``nb201.csv``.
* **CSV of a graph space** (``.csv`` with an ``ops`` column instead of ``arch_str``): the columns
  ``ops``, ``edges``, ``matrix``, ``sources`` (and ``genotype``) hold the JSON text of the same
  field of a JSON Lines record, quoted as CSV requires, e.g.
  ``"[""in"", ""conv"", ""out""]","[[0, 1], [1, 2]]",93.1`` under ``ops,edges,acc``; an empty cell
  is an absent field (a file may have both ``edges`` and ``matrix`` columns, each row filling one).
  ``name``, ``index`` and the numeric columns are read as in the NAS-Bench-201 CSV. Each row then
  goes through the JSON Lines checks (space inference, op vocabulary, edges, cycles), so a CSV and
  the equivalent JSON Lines file give the same dataset. Errors name the line, and the column where
  a cell is at fault (invalid JSON, a non-number).

The search space is taken from the ``space=`` argument (a name or a
:class:`~fgp_ext.data.spaces.SearchSpace`) or inferred from the first record: ``arch_str`` ->
NAS-Bench-201, ``genotype`` -> DARTS/NAS-Bench-301, ``matrix`` + ``ops`` that look like a
NAS-Bench-101 cell (input ... output, NB101 op names, <= 7 nodes) -> NAS-Bench-101 (with pruning),
anything else with ``ops`` -> a new :class:`~fgp_ext.data.spaces.GenericSpace`. Such a space's
vocabulary is the sorted list of the file's op names (so op ids never depend on line order).
``vocabulary=[...]`` (e.g. a checkpoint's) fixes it instead: ops are numbered by their position in
it and an op outside it is a :class:`DataFormatError` naming the op and the line; for NB201, NB101
and DARTS it must be the space's own vocabulary.

``load("nb201")`` returns the NAS-Bench-201 table embedded in the package (all 15,625 cells).

What every reader accepts and refuses:

* Files are UTF-8 text; a leading byte-order mark is removed. A directory, an unreadable file, a
  truncated or corrupt gzip stream, bytes that are not UTF-8 and NUL bytes are
  :class:`DataFormatError` errors naming the file (and the line where there is one).
* An empty file, or one without a single architecture, is "FILE holds no architectures".
* Targets are numbers; ``null`` / ``NaN`` (JSON) and empty / ``nan`` (CSV) mark a missing value
  and stay NaN (an unlabelled architecture). Integers beyond float range are errors naming the
  line and the column. ``Infinity`` / ``inf`` is read (the shared ``nb201_zc_725.json`` holds a
  ``-Infinity`` nwot proxy) and its first line per column kept in ``Dataset.nonfinite``;
  :func:`check_target` refuses it, naming that line, in a column used as a target.
* JSON nested too deeply to parse, integers that do not fit in 64 bits (indices, edges) and
  ``"sources": []`` (a graph with no source node) are errors naming the line.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import zlib
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path

import numpy as np

from fgp_ext.data import spaces as _spaces
from fgp_ext.data.arch import ArchGraph
from fgp_ext.data.dataset import Dataset
from fgp_ext.data.spaces import SearchSpace, get_space

__all__ = [
    "Dataset",
    "DataFormatError",
    "load",
    "load_nb201",
    "read_jsonl",
    "read_json",
    "read_csv",
    "read_text",
    "check_target",
    "parse_jsonl",
    "from_records",
    "infer_space",
    "EMBEDDED_NB201_FILE",
    "EMBEDDED_NAMES",
]

#: File name of the embedded NAS-Bench-201 table inside the ``fgp_ext.data`` package.
EMBEDDED_NB201_FILE = "nb201.npz"
#: Names accepted by :func:`load` for the embedded NAS-Bench-201 dataset.
EMBEDDED_NAMES = frozenset({"nb201", "nasbench201", "nas-bench-201", "nats-tss"})
_META_KEYS = frozenset({"name", "index"})
#: Fields that describe an architecture in some search space (never targets).
_STRUCTURE_KEYS = frozenset({"arch_str", "genotype", "ops", "edges", "matrix", "sources"})
_MISSING = frozenset({"", "nan", "na", "n/a", "null", "none"})


class DataFormatError(ValueError):
    """A malformed architecture file. ``source`` is the file, ``where`` e.g. ``"line 3"``."""

    def __init__(self, message: str, source: str | None = None, where: str | None = None):
        self.source = source
        self.where = where
        prefix = ": ".join(p for p in (source, where) if p)
        super().__init__(f"{prefix}: {message}" if prefix else message)


# ----------------------------------------------------------------------------------------------
# records -> Dataset


def _looks_nb101(rec: Mapping) -> bool:
    ops = rec.get("ops")
    m = rec.get("matrix")
    if not isinstance(ops, list) or not isinstance(m, list) or not 2 <= len(ops) <= 7:
        return False
    return (ops[0] == "input" and ops[-1] == "output"
            and all(isinstance(o, str) and o in _spaces.NB101_VOCAB for o in ops))


def infer_space(record) -> SearchSpace:
    """Guess the search space of a record (see the module docstring for the rules)."""
    if isinstance(record, str):
        return _spaces.NB201Space()
    if not isinstance(record, Mapping):
        raise ValueError(f"an architecture record must be a JSON object, got "
                         f"{type(record).__name__}")
    if "arch_str" in record:
        return _spaces.NB201Space()
    if "genotype" in record:
        return _spaces.DartsSpace()
    if "ops" in record and "matrix" in record and "edges" not in record and _looks_nb101(record):
        return _spaces.NB101Space()
    if "ops" in record:
        return _spaces.GenericSpace()
    raise ValueError("cannot tell the search space of the record: it has none of the fields "
                     "'arch_str', 'genotype', 'ops' (with 'edges' or 'matrix')")


def _number(v, key: str) -> float:
    """A target value: a number, NaN for missing (``null`` / ``NaN``); integers beyond float range
    are errors naming the field. Infinities are kept (a proxy column may hold ``-Infinity``) and
    recorded in ``Dataset.nonfinite``: :func:`check_target` refuses them in a column trained on."""
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"target field {key!r} must be a number or null, got {v!r}")
    try:
        x = float(v)
    except OverflowError:
        raise ValueError(f"target field {key!r}: integer {_short(v)} is too large for a float") from None
    return x


def _short(v) -> str:
    t = str(v)
    return t if len(t) <= 24 else f"{t[:10]}...{t[-6:]} ({len(t)} digits)"


_INT64 = (-(2 ** 63), 2 ** 63 - 1)


class _Builder:
    """Accumulates converted records; shared by the JSON, JSONL and in-memory readers."""

    def __init__(self, space, source: str | None, vocabulary=None):
        self.vocabulary = None if vocabulary is None else list(vocabulary)
        # A space this builder makes itself (inferred, or named "generic") gets a sorted vocabulary.
        self.owns_space = space is None or isinstance(space, str)
        self.space = None if space is None else get_space(space)
        if self.space is not None and self.vocabulary is not None:
            try:
                self.space = self.space.with_vocabulary(self.vocabulary)
            except ValueError as e:
                raise DataFormatError(str(e), source) from None
        self.source = source
        self.graphs = []
        self.index: list[int] = []
        self.has_index = False
        self.columns: dict[str, list[float]] = {}
        self.nonfinite: dict[str, str] = {}

    def add(self, rec, where: str) -> None:
        try:
            if not isinstance(rec, Mapping):
                raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
            if self.space is None:
                self.space = infer_space(rec)
                if self.vocabulary is not None:
                    self.space = self.space.with_vocabulary(self.vocabulary)
            structure = self.space.structure_keys
            targets = {}
            for k, v in rec.items():
                if k in structure or k in _META_KEYS:
                    continue
                if k in _STRUCTURE_KEYS:
                    raise ValueError(f"field {k!r} describes an architecture of another search space than "
                                     f"{self.space.name!r} (the space of the file's first record, or the one "
                                     f"asked for); one file holds one space")
                targets[k] = _number(v, k)
            name = rec.get("name")
            if name is not None and not isinstance(name, str):
                if isinstance(name, bool) or not isinstance(name, int):
                    raise ValueError(f"'name' must be a string, got {name!r}")
                name = str(name)
            idx = rec.get("index")
            if idx is not None:
                if isinstance(idx, bool) or not isinstance(idx, int):
                    raise ValueError(f"'index' must be an integer, got {idx!r}")
                if not _INT64[0] <= idx <= _INT64[1]:
                    raise ValueError(f"'index' {_short(idx)} does not fit in 64 bits")
                self.has_index = True
            try:
                graph = self.space.to_graph(rec, targets=targets, name=name)
            except OverflowError:
                raise ValueError("an integer in the architecture (edges, matrix or sources) does not "
                                 "fit in 64 bits") from None
            if graph.sources is not None and len(graph.sources) == 0:
                raise ValueError("'sources' is empty: a graph needs at least one source node (omit "
                                 "'sources' to use every node without predecessors)")
        except DataFormatError:
            raise
        except (ValueError, TypeError) as e:
            raise DataFormatError(str(e), self.source, where) from e
        n = len(self.graphs)
        for k, v in targets.items():
            if math.isinf(v) and k not in self.nonfinite:
                self.nonfinite[k] = ": ".join(p for p in (self.source, where) if p)
            col = self.columns.get(k)
            if col is None:
                col = self.columns[k] = [math.nan] * n
            col.append(v)
        for k, col in self.columns.items():
            if len(col) == n:  # this record lacks target k
                col.append(math.nan)
        self.index.append(-1 if idx is None else idx)
        self.graphs.append(graph)

    def finish(self, space_hint) -> Dataset:
        space = self.space if self.space is not None else (
            get_space(space_hint) if space_hint is not None else _spaces.GenericSpace())
        index = self.index if self.has_index else None
        ds = Dataset(self.graphs, space, {k: np.asarray(v, dtype=np.float64)
                                          for k, v in self.columns.items()}, index)
        ds.nonfinite = dict(self.nonfinite)
        ds.source = self.source
        if self.owns_space and isinstance(space, _spaces.GenericSpace) and not space.frozen:
            ds = ds.remap_ops(*space.sorted_vocabulary())
        return ds


def from_records(records: Iterable, space=None, *, source: str | None = None,
                 vocabulary=None) -> Dataset:
    """Build a :class:`Dataset` from in-memory records (dicts as in a JSON file).

    Errors are :class:`DataFormatError` naming the record number (0-based).
    """
    b = _Builder(space, source, vocabulary)
    for i, rec in enumerate(records):
        b.add(rec, f"record {i}")
    return b.finish(space)


def parse_jsonl(lines: Iterable[str], space=None, *, source: str | None = None,
                vocabulary=None) -> Dataset:
    """Parse JSON Lines text (an iterable of lines, e.g. an open file or ``text.splitlines()``).

    Blank lines are skipped; errors are :class:`DataFormatError` naming the 1-based line number.
    """
    b = _Builder(space, source, vocabulary)
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if lineno == 1 and line.startswith(_BOM):
            line = line[1:]
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"invalid JSON ({e.msg} at column {e.colno})", source,
                                  f"line {lineno}") from None
        except RecursionError:
            raise DataFormatError("JSON nested too deeply", source, f"line {lineno}") from None
        b.add(rec, f"line {lineno}")
    return b.finish(space)


# ----------------------------------------------------------------------------------------------
# files


_BOM = "\ufeff"
_GZIP_MAGIC = b"\x1f\x8b"


def read_text(path) -> str:
    """The text of an architecture file: gzip-decompressed (by content, or a ``.gz`` name), UTF-8
    decoded, a leading byte-order mark removed.

    Anything that is not readable UTF-8 text is a one-line :class:`DataFormatError` naming the file
    (and the line where it can): a directory, an unreadable file, a truncated or corrupt gzip
    stream, bytes that are not UTF-8, NUL bytes (a binary file).
    """
    path = Path(path)
    src = str(path)
    if path.is_dir():
        raise DataFormatError("a directory, not an architecture file", src)
    if path.is_char_device() or path.is_block_device() or path.is_socket():
        # /dev/zero and the like never end; pipes (``--data <(zcat f.gz)``) are read as files
        raise DataFormatError("a device or socket, not an architecture file", src)
    try:
        data = path.read_bytes()
        gz = data[:2] == _GZIP_MAGIC
        if path.suffix.lower() == ".gz" and not gz:
            raise DataFormatError("named .gz but not gzip-compressed", src)
        if gz:
            data = gzip.decompress(data)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataFormatError(f"a truncated or corrupt gzip file ({e})", src) from None
    except OSError as e:
        raise DataFormatError(f"cannot be read ({e.strerror or type(e).__name__})", src) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataFormatError(f"not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}; a "
                              f"binary file?)", src, f"line {line}") from None
    nul = text.find("\x00")
    if nul >= 0:
        raise DataFormatError("NUL bytes: a binary file, not JSON, JSON Lines or CSV text", src,
                              f"line {text.count(chr(10), 0, nul) + 1}")
    return text[1:] if text.startswith(_BOM) else text


def _no_architectures(src: str, detail: str = "") -> DataFormatError:
    err = DataFormatError(f"{src} holds no architectures{detail}")
    err.source = src
    return err


def _nonempty(ds: Dataset, src: str) -> Dataset:
    if len(ds) == 0:
        raise _no_architectures(src)
    return ds


def read_jsonl(path, space=None, *, vocabulary=None) -> Dataset:
    """Read a JSON Lines file (one architecture per line); see the module docstring."""
    return _jsonl_text(read_text(path), space, str(path), vocabulary)


def _jsonl_text(text: str, space, src: str, vocabulary=None) -> Dataset:
    return _nonempty(parse_jsonl(text.split("\n"), space, source=src, vocabulary=vocabulary), src)


def read_json(path, space=None, *, vocabulary=None) -> Dataset:
    """Read a JSON file holding an array of architecture records; see the module docstring."""
    return _json_text(read_text(path), space, str(path), vocabulary)


def _json_text(text: str, space, src: str, vocabulary=None) -> Dataset:
    if not text.strip():
        raise _no_architectures(src, " (the file is empty)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataFormatError(f"invalid JSON ({e.msg} at line {e.lineno} column {e.colno})",
                              src) from None
    except RecursionError:
        raise DataFormatError("JSON nested too deeply", src) from None
    if not isinstance(data, list):
        raise DataFormatError(f"expected a JSON array of records, got {type(data).__name__}", src)
    return _nonempty(from_records(data, space, source=src, vocabulary=vocabulary), src)


#: Columns of a graph-space CSV whose cells hold JSON text (the record's field of that name).
_CSV_JSON_COLUMNS = frozenset({"ops", "edges", "matrix", "sources", "genotype"})


def read_csv(path, space=None, *, vocabulary=None) -> Dataset:
    """Read a CSV file with a NAS-Bench-201 ``arch_str`` column, or a graph space's ``ops`` column
    (JSON text in the cells); see the module docstring."""
    return _csv_text(read_text(path), space, str(path), vocabulary)


def _csv_text(text: str, space, src: str, vocabulary=None) -> Dataset:
    with io.StringIO(text, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise _no_architectures(src, " (the file is empty)")
        header = [h.strip() for h in header]
        graph_csv = "arch_str" not in header and ("ops" in header or "genotype" in header)
        if "arch_str" not in header and not graph_csv:
            raise DataFormatError(f"CSV header has no 'arch_str' column (NAS-Bench-201 cells) and no "
                                  f"'ops' column (a graph space: JSON text in 'ops' and 'edges' or "
                                  f"'matrix') (columns: {header})", src, "line 1")
        dup = sorted({h for h in header if header.count(h) > 1})
        if dup:
            raise DataFormatError(f"duplicate CSV column(s) {dup}", src, "line 1")
        rows, lines = [], []
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise DataFormatError(f"expected {len(header)} fields, got {len(row)}", src,
                                      f"line {reader.line_num}")
            rows.append(row)
            lines.append(reader.line_num)
    if not rows:
        raise _no_architectures(src, " (a header and no rows)")
    if graph_csv:
        return _csv_graph(header, rows, lines, space, src, vocabulary)
    sp = get_space("nb201" if space is None else space)
    if not isinstance(sp, _spaces.NB201Space):
        raise DataFormatError(f"a CSV with an 'arch_str' column is read as NAS-Bench-201; space "
                              f"{sp.name!r} was asked for (a graph space's CSV has an 'ops' column)",
                              src)
    if vocabulary is not None:
        try:
            sp.with_vocabulary(vocabulary)
        except ValueError as e:
            raise DataFormatError(str(e), src) from None
    a_col = header.index("arch_str")
    strs = [r[a_col].strip() for r in rows]
    try:
        ops = _spaces.nb201_batch_ops(strs)
    except ValueError:
        for r, line in zip(strs, lines):  # find the line of the first bad string
            try:
                _spaces._nb201_parse(r)
            except ValueError as e:
                raise DataFormatError(str(e), src, f"line {line}") from None
        raise  # pragma: no cover
    index = None
    names = [None] * len(rows)
    cols: dict[str, np.ndarray] = {}
    nonfinite: dict[str, str] = {}
    for j, h in enumerate(header):
        if j == a_col:
            continue
        if h == "name":
            names = [r[j].strip() or None for r in rows]
            continue
        vals = np.empty(len(rows), dtype=np.float64)
        for i, r in enumerate(rows):
            s = r[j].strip()
            if s.lower() in _MISSING:
                vals[i] = math.nan
                continue
            try:
                vals[i] = float(s)
            except ValueError:
                raise DataFormatError(f"column {h!r}: {s!r} is not a number", src,
                                      f"line {lines[i]}") from None
            if math.isinf(vals[i]) and h not in nonfinite:
                nonfinite[h] = f"{src}: line {lines[i]}"
        if h == "index":
            big = np.flatnonzero(np.abs(vals) >= 2.0 ** 63)
            if big.size:
                raise DataFormatError(f"column 'index': {rows[big[0]][j].strip()!r} does not fit in "
                                      f"64 bits", src, f"line {lines[big[0]]}")
            if np.isnan(vals).any() or (vals != np.round(vals)).any():
                bad = int(np.flatnonzero(np.isnan(vals) | (vals != np.round(vals)))[0])
                raise DataFormatError(f"column 'index' must hold integers, got "
                                      f"{rows[bad][j]!r}", src, f"line {lines[bad]}")
            index = vals.astype(np.int64)
        else:
            cols[h] = vals
    ds = _nb201_dataset(ops, cols, index, names, sp)
    ds.nonfinite = nonfinite
    ds.source = src
    return ds


def _csv_cell_number(s: str, column: str, src: str, where: str) -> float:
    """A numeric CSV cell: empty / ``nan`` / ``null`` ... is missing (NaN)."""
    if s.lower() in _MISSING:
        return math.nan
    try:
        return float(s)
    except ValueError:
        raise DataFormatError(f"column {column!r}: {s!r} is not a number", src, where) from None


def _csv_graph(header: list[str], rows: list[list[str]], lines: list[int], space, src: str,
               vocabulary=None) -> Dataset:
    """Rows of a graph-space CSV -> records (JSON cells parsed) -> the JSON Lines builder, so the
    CSV gets every check the JSON Lines reader makes and the same dataset."""
    b = _Builder(space, src, vocabulary)
    for row, line in zip(rows, lines):
        where = f"line {line}"
        rec: dict = {}
        for h, cell in zip(header, row):
            s = cell.strip()
            if h in _CSV_JSON_COLUMNS:
                if not s:
                    continue  # an absent field (e.g. 'matrix' in a row that fills 'edges')
                try:
                    rec[h] = json.loads(s)
                except json.JSONDecodeError as e:
                    raise DataFormatError(f"column {h!r}: invalid JSON ({e.msg} at character "
                                          f"{e.pos + 1} of the cell)", src, where) from None
                except RecursionError:
                    raise DataFormatError(f"column {h!r}: JSON nested too deeply", src, where) from None
            elif h == "name":
                rec[h] = s or None
            elif h == "index":
                try:
                    rec[h] = int(s)
                except ValueError:
                    x = _csv_cell_number(s, h, src, where)
                    if not (math.isfinite(x) and x == round(x)):
                        raise DataFormatError(f"column 'index' must hold integers, got {s!r}", src,
                                              where) from None
                    rec[h] = int(x)
            else:
                rec[h] = _csv_cell_number(s, h, src, where)
        if "ops" not in rec and "genotype" not in rec:
            raise DataFormatError("the architecture's cell is empty (column 'ops'"
                                  + (" or 'genotype')" if "genotype" in header else ")"), src, where)
        b.add(rec, where)
    return _nonempty(b.finish(space), src)


def check_target(ds: Dataset, column: str) -> None:
    """Refuse a target column holding +-inf, or no value at all (NaN alone is fine: an
    unlabelled architecture).

    ``DataFormatError`` naming the file, line and column when ``ds`` was read from a file (its
    ``nonfinite`` record), else the architecture.
    """
    y = np.asarray(ds.targets(column), dtype=np.float64)
    if y.size and np.isnan(y).all():
        raise DataFormatError(f"{getattr(ds, 'source', None) or 'the data'}: target {column!r} has no "
                              f"value (every architecture is unlabelled)")
    bad = np.flatnonzero(np.isinf(y))
    if not bad.size:
        return
    i = int(bad[0])
    where = getattr(ds, "nonfinite", {}).get(column)
    if where is None:
        name = ds.names[i] if ds.names and ds.names[i] else None
        where = f"architecture {i}" + (f" ({name})" if name else "")
    raise DataFormatError(f"{where}: target {column!r} is {y[i]}; targets must be finite (null, NaN "
                          f"or an empty CSV cell marks an unlabelled architecture)")


def _nb201_dataset(ops: np.ndarray, cols: Mapping[str, np.ndarray], index, names,
                   space) -> Dataset:
    """Build NB201 graphs from an ``[N, 8]`` op-id matrix and columnar targets."""
    keys = list(cols)
    per_row = (np.column_stack([cols[k] for k in keys]).tolist() if keys
               else [[] for _ in range(ops.shape[0])])
    if ops.size and (ops[:, 0].any() or (ops[:, 7] != 1).any()
                     or (ops[:, 1:7] < 2).any() or (ops[:, 1:7] > 6).any()):
        raise ValueError("invalid NB201 op-id matrix")
    # ops were validated as a whole: build the graphs directly (the I/O-time hot loop)
    edges = _spaces.NB201_EDGES
    graphs = [ArchGraph(ops=o, edges=edges, sources=(0,), targets=dict(zip(keys, t)), name=nm)
              for o, t, nm in zip(ops, per_row, names)]
    return Dataset(graphs, space, cols, index)


def _sniff(head: str, path: Path) -> str:
    s = head.lstrip()
    if s.startswith("["):
        return "json"
    if s.startswith("{"):
        return "jsonl"
    first_line = head.splitlines()[0] if head else ""
    columns = {c.strip() for c in next(csv.reader([first_line]), [])}
    if "arch_str" in first_line or columns & {"ops", "genotype"}:
        return "csv"
    raise DataFormatError("unrecognised file format (expected JSON, JSON Lines or a CSV with "
                          "an 'arch_str' or 'ops' column)", str(path))


def load(path_or_name, space=None, *, vocabulary=None) -> Dataset:
    """Load a dataset from a file, or the embedded NAS-Bench-201 table by name (``"nb201"``).

    The format is chosen from the extension (``.csv``, ``.jsonl``/``.ndjson``, ``.json``; an
    optional ``.gz``) or, failing that, from the content. ``space`` (a name such as ``"nb101"``,
    ``"nb201"``, ``"nb301"``, ``"generic"``, or a :class:`SearchSpace`) overrides inference.
    ``vocabulary`` (a list of op names, e.g. a checkpoint's) fixes the op ids: an op not in it is
    a :class:`DataFormatError` naming the op and the line.
    """
    if isinstance(path_or_name, str) and not os.path.exists(path_or_name) \
            and path_or_name.strip().lower() in EMBEDDED_NAMES:
        if space is not None and not isinstance(get_space(space), _spaces.NB201Space):
            raise ValueError(f"the embedded {path_or_name!r} dataset is NAS-Bench-201, not "
                             f"{space!r}")
        ds = load_nb201()
        if vocabulary is not None:
            ds.space.with_vocabulary(vocabulary)
        return ds
    if not isinstance(path_or_name, (str, os.PathLike)):
        raise TypeError(f"expected a path or a dataset name, got {type(path_or_name).__name__}")
    path = Path(path_or_name)
    if not path.exists() and path.is_symlink():
        raise DataFormatError("a symbolic link that leads nowhere (a loop, or a missing target)", str(path))
    if not path.exists():
        raise FileNotFoundError(f"no such file: {str(path)!r} (embedded datasets: "
                                f"{sorted(EMBEDDED_NAMES)})")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    src = str(path)
    text = read_text(path)
    if not text.strip():
        raise _no_architectures(src, " (the file is empty)")
    if ext == ".csv":
        return _csv_text(text, space, src, vocabulary)
    if ext in (".jsonl", ".ndjson"):
        return _jsonl_text(text, space, src, vocabulary)
    kind = _sniff(text[:4096], path)
    if kind == "json":
        return _json_text(text, space, src, vocabulary)
    if kind == "jsonl":
        return _jsonl_text(text, space, src, vocabulary)
    return _csv_text(text, space, src, vocabulary)


# ----------------------------------------------------------------------------------------------
# embedded NAS-Bench-201


@lru_cache(maxsize=1)
def _embedded_arrays():
    from importlib import resources

    ref = resources.files("fgp_ext.data").joinpath(EMBEDDED_NB201_FILE)
    with ref.open("rb") as fh, np.load(fh, allow_pickle=False) as z:
        if int(z["format_version"]) != 1:
            raise RuntimeError(f"unsupported embedded {EMBEDDED_NB201_FILE} format version "
                               f"{int(z['format_version'])}")
        op_names = [str(s) for s in z["op_names"]]
        codes = z["ops"]
        index = z["index"].astype(np.int64)
        columns = [str(s) for s in z["columns"]]
        mant = z["mantissa"]
        expo = z["exponent"]
    # decimal value = mantissa / 10**exponent: one correctly rounded division per value, which
    # gives bit-for-bit the same float64 as parsing the original decimal string.
    values = mant.astype(np.float64) / np.power(10.0, expo.astype(np.float64))
    lut = np.array([_spaces.NB201_VOCAB.index(o) for o in op_names], dtype=np.int64)
    ops = np.empty((codes.shape[0], 8), dtype=np.int64)
    ops[:, 0], ops[:, 7] = 0, 1
    ops[:, 1:7] = lut[codes]
    for a in (ops, index, values):
        a.setflags(write=False)
    return ops, index, columns, values


def load_nb201() -> Dataset:
    """The full NAS-Bench-201 table shipped with the package (15,625 cells).

    ``index`` is the official NAS-Bench-201 index. Targets: ``cifar10_test_200ep``,
    ``cifar100_test_200ep`` (test accuracy after 200 epochs, mean over seeds, %),
    ``cifar10_val_12ep`` (CIFAR-10 validation accuracy after 12 epochs) and latencies in ms
    ``lat_<device>[_<batch>]`` (1080ti at batch 1/32/256, silver_4114, silver_4210r, samsung_a50,
    pixel3, essential_ph_1, samsung_s7). Sources: NATS-Bench topology (MIT) and HELP /
    HW-NAS-Bench latencies (MIT).
    """
    ops, index, columns, values = _embedded_arrays()
    cols = {c: values[j] for j, c in enumerate(columns)}
    names = [str(i) for i in index.tolist()]
    return _nb201_dataset(ops, cols, index, names, _spaces.NB201Space())
