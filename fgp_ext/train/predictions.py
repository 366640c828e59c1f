"""Every run's test predictions, one score per model, in one file (``predictions.npz``).

``fgp run`` writes this file beside ``summary.json``. The summary keeps metrics only; this file keeps
what they were computed from, so that other metrics, other combinations of models (a subset of an
ensemble's members, or the models of two runs with different encoders) and paired comparisons can
be computed later without training again (``scripts/combine_predictions.py``, and
``fgp run --combine-with``, which adds another job's recorded models to the job's own).

Layout (NumPy ``.npz``, no pickled objects, so it loads with ``allow_pickle=False``):

* ``format``: ``"fgp_ext.predictions"``; ``version``: :data:`PREDICTIONS_VERSION`.
* ``seeds``, ``perm_seeds``: ``[R]`` int64, run ``r``'s seed and split permutation (``-1``: none).
* ``methods``: the methods with scores (``"fgp"``, ``"fgp_aux_head"``, ``"supervised"``,
  ``"fgp_self_train"``), as strings.
* ``run<r>.test_index``: ``[T]`` int64, the test architectures, as indices into the dataset the
  run used (after ``--limit``); ``run<r>.true``: ``[T]`` float64, their labels.
* ``run<r>.train_index``, ``run<r>.val_index``: int64, the run's own training and validation
  architectures (the labelled ones; the folds of ``--folds`` are drawn from them). Layout 1 files
  (from before these entries) lack them and load with ``None``.
* ``run<r>.<method>``: ``[M, T]`` float64, one row per model of the method. For ``fgp``,
  ``fgp_aux_head`` and ``supervised`` the rows are in the protocol's member order: member ``j`` is
  seed ``seed + j // folds`` (the pre-training seed; for ``supervised`` the initialisation seed),
  fine-tuned on fold ``j % folds`` (with ``--reshuffle-folds``, of partition ``j // folds``:
  :func:`~fgp_ext.train.config.cross_fit_folds`); row 0 is the plain run. With ``T - 1``
  ``--ensemble-aux-target`` targets, the FGP methods' member ``j`` is seed ``seed + j // (T * folds)``
  pre-trained on auxiliary target ``(j // folds) % T`` (0: ``--aux-target``, then the others in
  order), fine-tuned on fold ``j % folds``; ``supervised`` keeps one row per seed and fold.
  ``fgp_self_train`` has one student per FGP head and pre-training, head first: row ``j`` is head
  ``j // (ensemble * T)`` (``fgp``, then ``fgp_aux_head``) with seed ``seed + (j // T) % ensemble``
  on auxiliary target ``j % T``, trained on all the run's labels (no folds).
  A method's reported score is :func:`combine_scores` of its rows; the ``fgp_both_heads`` score is
  that of the ``fgp`` and ``fgp_aux_head`` rows together, and ``fgp_teacher_students`` that of every
  FGP head's rows and the ``fgp_self_train`` rows.
"""
from __future__ import annotations

import glob
import re
import zipfile
from pathlib import Path

import numpy as np

#: the value of the file's ``format`` entry
PREDICTIONS_FORMAT = "fgp_ext.predictions"
#: the layout version this code writes; it also reads the versions of :data:`PREDICTIONS_READS`
PREDICTIONS_VERSION = 2
#: layout 1 is layout 2 without the runs' training and validation indices
PREDICTIONS_READS = (1, 2)


def run_order(key: tuple) -> tuple:
    """Sort key of a ``(seed, perm_seed)`` run: by seed, then permutation, a run without one
    (``None``, stored as ``-1``) first."""
    seed, perm_seed = key
    return seed, -1 if perm_seed is None else perm_seed


def save_predictions(path, runs: list[dict]) -> Path:
    """Write ``runs`` (one dict per run: ``seed``, ``perm_seed`` (``None`` for no permutation),
    ``train_index``, ``val_index``, ``test_index`` ``[T]``, ``true`` ``[T]``, ``scores``: method ->
    ``[M, T]`` model scores) to ``path`` in the layout above, atomically. Every run must have the
    same methods."""
    from fgp_ext import _io

    if not runs:
        raise ValueError("no runs to save")
    methods = list(runs[0]["scores"])
    arrays: dict[str, np.ndarray] = {
        "format": np.array(PREDICTIONS_FORMAT), "version": np.array(PREDICTIONS_VERSION, dtype=np.int64),
        "methods": np.array(methods, dtype=str),
        "seeds": np.array([int(r["seed"]) for r in runs], dtype=np.int64),
        "perm_seeds": np.array([-1 if r["perm_seed"] is None else int(r["perm_seed"]) for r in runs], dtype=np.int64),
    }
    for i, run in enumerate(runs):
        if run["perm_seed"] is not None and int(run["perm_seed"]) < 0:
            raise ValueError(f"run {i}: perm_seed {run['perm_seed']} is negative (-1 stands for no permutation)")
        if list(run["scores"]) != methods:
            raise ValueError(f"run {i} has methods {list(run['scores'])}, run 0 has {methods}")
        for part in ("train", "val", "test"):
            arrays[f"run{i}.{part}_index"] = np.asarray(run[f"{part}_index"], dtype=np.int64).reshape(-1)
        arrays[f"run{i}.true"] = np.asarray(run["true"], dtype=np.float64)
        for method, scores in run["scores"].items():
            arrays[f"run{i}.{method}"] = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    _check(arrays, "the runs to save")
    return _io.np_savez(path, **arrays)


def load_predictions(path) -> list[dict]:
    """The runs of a ``predictions.npz`` file, as :func:`save_predictions` takes them (``perm_seed``
    ``None`` where the file says ``-1``). A file that is not one, is damaged or is inconsistent
    (a missing entry, a score row of the wrong length, a non-finite score) raises ``ValueError``
    naming the file and the problem."""
    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable predictions file ({type(e).__name__}: {e})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):     # a .npy file: one array, not an archive
        raise ValueError(f"{path}: not a predictions file (one array, not an .npz archive)")
    try:
        with loaded as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise ValueError(f"{path}: not a readable predictions file ({type(e).__name__}: {e})") from None
    _check(arrays, str(path))
    runs = []
    for i, (seed, perm) in enumerate(zip(arrays["seeds"].tolist(), arrays["perm_seeds"].tolist())):
        runs.append({"seed": seed, "perm_seed": None if perm == -1 else perm,
                     "train_index": arrays.get(f"run{i}.train_index"), "val_index": arrays.get(f"run{i}.val_index"),
                     "test_index": arrays[f"run{i}.test_index"], "true": arrays[f"run{i}.true"],
                     "scores": {m: arrays[f"run{i}.{m}"] for m in arrays["methods"].tolist()}})
    return runs


def _check(arrays: dict, where: str) -> None:
    """Raise ``ValueError`` unless ``arrays`` hold a consistent file of this layout."""
    def need(key):
        if key not in arrays:
            raise ValueError(f"{where}: no '{key}' entry (not a complete predictions file)")
        return arrays[key]

    fmt, version = need("format"), need("version")
    if fmt.shape != () or str(fmt) != PREDICTIONS_FORMAT:
        raise ValueError(f"{where}: format {str(fmt)!r}, expected {PREDICTIONS_FORMAT!r}")
    if version.shape != () or version.dtype.kind not in "iu" or int(version) not in PREDICTIONS_READS:
        raise ValueError(f"{where}: layout version {str(version)!r}; this fgp_ext reads versions "
                         f"{', '.join(map(str, PREDICTIONS_READS))}")
    seeds, perms, methods = need("seeds"), need("perm_seeds"), need("methods")
    if seeds.ndim != 1 or perms.shape != seeds.shape or methods.ndim != 1 or methods.dtype.kind != "U" \
            or seeds.dtype.kind not in "iu" or perms.dtype.kind not in "iu":
        raise ValueError(f"{where}: seeds {list(seeds.shape)}, perm_seeds {list(perms.shape)} (integers) and "
                         f"methods {list(methods.shape)} (strings) must be vectors, one seed and permutation "
                         "per run")
    if seeds.size == 0 or methods.size == 0:
        raise ValueError(f"{where}: no runs or no methods")
    for i in range(seeds.size):
        index, true = need(f"run{i}.test_index"), need(f"run{i}.true")
        if index.ndim != 1 or true.shape != index.shape or index.dtype.kind not in "iu" or true.dtype.kind != "f":
            raise ValueError(f"{where}: run {i}: test_index {list(index.shape)} (integers) and true "
                             f"{list(true.shape)} (floats) must be vectors of the same length")
        if index.size and (index.min() < 0 or np.unique(index).size != index.size):
            raise ValueError(f"{where}: run {i}: test_index has negative or repeated indices")
        if not np.isfinite(true).all():
            raise ValueError(f"{where}: run {i}: the labels (true) are not all finite")
        if int(version) >= 2:
            for part in ("train", "val"):
                other = need(f"run{i}.{part}_index")
                if other.ndim != 1 or other.dtype.kind not in "iu" or (other.size and other.min() < 0):
                    raise ValueError(f"{where}: run {i}: {part}_index must be a vector of non-negative integers")
        for m in methods.tolist():
            scores = need(f"run{i}.{m}")
            if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] != index.size:
                raise ValueError(f"{where}: run {i}: {m} scores have shape {list(scores.shape)}, expected "
                                 f"[models, {index.size}]")
            if not np.isfinite(scores).all():
                raise ValueError(f"{where}: run {i}: {m} scores are not all finite")


_SPEC_PATH = re.compile(r"(?P<path>.+\.npz)(?::(?P<spec>.*))?")
_SPEC_MODELS = re.compile(r"(?P<methods>\w+(?:,\w+)*)?(?:\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?")
#: the form of a models spec, for messages
MODELS_SPEC_FORM = "PATH.npz[:METHOD[,METHOD...]][[START:STOP]]"


def parse_models_spec(text: str) -> tuple[str, list[str] | None, slice]:
    """A models spec ``PATH.npz[:METHOD,...][START:STOP]`` as (path, methods or None for all, row
    slice). PATH may be a glob pattern; the slice bounds are Python's (negative counts from the
    end) and apply to the methods' rows concatenated in the order given."""
    m = _SPEC_PATH.fullmatch(text)
    if m is None:
        raise ValueError(f"cannot read the models {text!r}: expected {MODELS_SPEC_FORM} (the path ends in .npz)")
    if m["spec"] is None:
        return m["path"], None, slice(None)
    spec = _SPEC_MODELS.fullmatch(m["spec"])
    if not m["spec"] or spec is None:
        raise ValueError(f"cannot read {m['spec']!r} after the path in {text!r}: expected {MODELS_SPEC_FORM}")
    methods = spec["methods"].split(",") if spec["methods"] else None
    if "-" in (spec["start"], spec["stop"]):
        raise ValueError(f"cannot read the slice in {text!r}: a bound is '-' alone")
    start, stop = (int(b) if b else None for b in (spec["start"], spec["stop"]))
    return m["path"], methods, slice(start, stop)


def load_job_runs(pattern: str) -> dict[tuple, dict]:
    """(seed, perm_seed) -> run of every file ``pattern`` names: a path, or a glob pattern taking
    the files of one job's ``fgp run --seeds`` processes together. Every file must have the same
    methods and no run may appear twice."""
    is_glob = any(c in pattern for c in "*?[")
    paths = sorted(glob.glob(pattern)) if is_glob else [pattern]
    if not paths:
        raise ValueError(f"no file matches {pattern!r}")
    if not is_glob and not Path(pattern).is_file():
        raise ValueError(f"no predictions file {pattern!r}")
    runs: dict[tuple, dict] = {}
    methods = None      # the first file's; every file of the pattern must have the same
    for path in paths:
        for run in load_predictions(path):
            key = (run["seed"], run["perm_seed"])
            if key in runs:
                raise ValueError(f"{pattern}: run seed {key[0]} perm {key[1]} appears twice")
            methods = methods or list(run["scores"])
            if list(run["scores"]) != methods:
                raise ValueError(f"{path} has methods {list(run['scores'])}, the other files of {pattern!r} "
                                 f"have {methods}")
            runs[key] = dict(run, path=str(path))
    return runs


def recorded_models(specs: list[str], cache: dict | None = None,
                    default_methods: tuple[str, ...] | None = None) -> dict[tuple, dict]:
    """(seed, perm_seed) -> ``{"test_index", "true", "train_index", "val_index", "scores": [M, T],
    "paths"}``: the rows every models spec of ``specs`` (:func:`parse_models_spec`) names, stacked
    in order, for the runs that every spec holds, and the files they came from. A spec without
    methods takes every method of its file, or with ``default_methods`` those of them the file has.
    The specs' test sets and labels (and, where the files record them, training and validation
    sets) must agree run by run: ``ValueError`` otherwise, as the files then come from different
    splits, datasets or targets. ``cache`` maps paths to loaded runs across calls."""
    if not specs:
        raise ValueError("no models to load")
    cache = {} if cache is None else cache
    chosen_runs = []
    for text in specs:
        path, methods, rows = parse_models_spec(text)
        if path not in cache:
            cache[path] = load_job_runs(path)
        runs = cache[path]
        known = list(next(iter(runs.values()))["scores"])
        if methods is not None:
            chosen = methods
        elif default_methods is not None:
            chosen = [m for m in known if m in default_methods]
            if not chosen:
                raise ValueError(f"{path} has none of the methods {list(default_methods)}; it has {known}")
        else:
            chosen = known
        unknown = [m for m in chosen if m not in known]
        if unknown:
            raise ValueError(f"{path} has no method {unknown}; it has {known}")
        chosen_runs.append((text, runs, chosen, rows))
    keys = set.intersection(*(set(runs) for _, runs, _, _ in chosen_runs))
    out = {}
    for key in sorted(keys, key=run_order):
        first = chosen_runs[0][1][key]
        split = {part: None for part in ("train_index", "val_index")}
        models, paths = [], []
        for text, runs, chosen, rows in chosen_runs:
            run = runs[key]
            if not np.array_equal(first["test_index"], run["test_index"]):
                raise ValueError(f"{text}: run seed {key[0]} perm {key[1]} has another test set than {specs[0]}")
            if not np.array_equal(first["true"], run["true"]):     # same split of another target or file
                raise ValueError(f"{text}: run seed {key[0]} perm {key[1]} has other labels than {specs[0]}")
            for part in split:
                if run.get(part) is None:           # a layout 1 file
                    continue
                if split[part] is not None and not np.array_equal(split[part], run[part]):
                    raise ValueError(f"{text}: run seed {key[0]} perm {key[1]} has another "
                                     f"{'training' if part == 'train_index' else 'validation'} set than the "
                                     "other sources")
                split[part] = run[part]
            picked = np.concatenate([run["scores"][m] for m in chosen])[rows]
            if picked.shape[0] == 0:
                total = sum(run["scores"][m].shape[0] for m in chosen)
                raise ValueError(f"{text}: the slice keeps no model (the methods have {total})")
            models.append(picked)
            paths.append(run["path"])
        out[key] = {"test_index": first["test_index"], "true": first["true"], **split,
                    "scores": np.concatenate(models), "paths": paths}
    return out


def missing_runs(specs: list[str], cache: dict) -> set[tuple]:
    """The (seed, perm_seed) runs some but not all of ``specs`` hold (after :func:`recorded_models`
    has filled ``cache``)."""
    sets = [set(cache[parse_models_spec(t)[0]]) for t in specs]
    return set.union(*sets) - set.intersection(*sets)
