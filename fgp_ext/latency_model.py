"""Few-shot latency prediction for a new device (NAS-Bench-201): train over source devices, adapt
from K measured architectures, predict every other cell.

The model (a Gaussian-process / Bayesian linear model whose prior is learned from the source
devices)::

    log latency_new(a) = c + phi(a) . theta,      theta ~ N(m, P),   noise ~ N(0, s2)

* ``phi(a)`` = the cell's architecture features: the one-hot op of each of the six edges (the
  cheap, exact description of an NB201 cell) and its log FLOPs and log parameter count (z-scored
  over the space; the shipped proxy table), followed, where the architecture is in the training
  table, by its log latency on every source device, z-scored per device.
* the prior over the architecture block is the mean and covariance of the per-device weights
  fitted on the source devices (plus an isotropic part), so ten shots only have to choose *which
  kind of device* the new one is; the source-latency block has an isotropic prior (a ridge on the
  other devices' latencies, the HELP-style hardware embedding seen from the other side). ``c`` has
  a flat prior (a device's speed is free), ``s2`` is the source devices' residual variance.
* the prior's scales are chosen at training time by leave-one-device-out *within the source
  devices* (the target device is never seen), see :func:`train`.
* a shot whose leave-one-out residual under the prior is far outside the others' (more than 5
  robust standard deviations and a factor 2) is set aside as a failed measurement: HELP's pixel3
  column holds 0.003 ms next to 10 ms cells.
* which K architectures to measure is part of the method: :meth:`LatencyPredictor.choose_shots`
  picks them greedily where the prior is least certain (the largest posterior predictive variance,
  a sequential D-optimal design). On NB201 the choice over all 15,625 cells is fixed once trained
  and stored in the model (:meth:`LatencyPredictor.reference_architectures`): the measured set is a
  shipped list, as HELP's reference architectures.

Python API::

    from fgp_ext import latency_model as lm
    pred = lm.train(fgp_ext.load("nb201"), devices=None)          # every lat_* column
    pred.save("lat.npz"); pred = lm.LatencyPredictor.load("lat.npz")
    shots = pred.reference_architectures(10)                       # measure these on your device
    pred.adapt({arch: latency_ms for arch, latency_ms in ...})
    pred.predict(["|nor_conv_3x3~0|+|...|", ...])                  # ms

Command line: ``fgp latency-train`` and ``fgp latency-adapt`` (:func:`add_latency_model_parsers`).
The embedded NB201 table (``fgp_ext.load("nb201")``) holds the nine ``lat_*`` columns, so
``--data nb201`` needs nothing outside the package.

Other search spaces (:class:`GraphLatencyPredictor`): a JSONL/JSON/CSV file of graphs (``ops`` +
``edges`` or ``matrix``, e.g. chains of MBConv blocks) with ``lat_*`` columns, where no network can
be built. The same Bayesian model reads the features of
:class:`~fgp_ext.latency_features.GraphFeatureSchema` (op counts, op counts per position in the
graph, graph size, and the file's cheap columns such as params and FLOPs); the schema (space,
vocabulary, cheap columns) is stored in the model, so a file of another space is a one-line
error. Shots: the same greedy design over the file's architectures that have a value in the
target column (no fixed reference set: such a space is not enumerated)::

    pred = lm.train(fgp_ext.load("mbconv.jsonl"))                   # every lat_* column
    idx = pred.choose_shots(ds, 10)                                   # measure these
    pred.adapt(ds.subset(idx), latencies_ms).predict(ds)              # ms
"""
from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

# LatencyModelError is defined with the graph-space features (which raise it too): one class
from fgp_ext.latency_features import GraphFeatureSchema, LatencyModelError

__all__ = ["LatencyPredictor", "GraphLatencyPredictor", "LatencyModelError", "Hyper", "train", "cost_baseline",
           "load_model", "nb201_codes", "latency_metrics", "add_latency_model_parsers", "MODEL_FORMAT",
           "MODEL_VERSION"]

MODEL_FORMAT = "fgp-latency-model"
MODEL_VERSION = 1
NB201_CELLS = 5 ** 6
#: prior variance of the intercept (log ms): effectively flat
_INTERCEPT_VAR = 1e4


# ----------------------------------------------------------------------------------------------
# architectures and features


def _codes_from_ops(ops: np.ndarray) -> np.ndarray:
    """Base-5 code (0..15624) of ``[N, 6]`` edge-op ids in 2..6."""
    e = np.asarray(ops, dtype=np.int64) - 2
    return (e * (5 ** np.arange(5, -1, -1))).sum(axis=1)


def _ops_from_codes(codes: np.ndarray) -> np.ndarray:
    c = np.asarray(codes, dtype=np.int64).reshape(-1, 1)
    return (c // (5 ** np.arange(5, -1, -1))) % 5 + 2


def nb201_codes(archs) -> np.ndarray:
    """Base-5 codes (0..15624) of NB201 cells given as cell strings, :class:`ArchGraph`\\ s, a
    :class:`~fgp_ext.data.dataset.Dataset`, or six edge-op ids (2..6) each.
    ``LatencyModelError`` naming the first architecture that is not an NB201 cell."""
    from fgp_ext.data.arch import ArchGraph
    from fgp_ext.data.spaces import nb201_from_string

    graphs = getattr(archs, "graphs", None)
    items = graphs if graphs is not None else (list(archs) if not isinstance(archs, str) else [archs])
    ops = np.empty((len(items), 6), dtype=np.int64)
    cache: dict[str, np.ndarray] = {}
    for i, a in enumerate(items):
        if isinstance(a, str):
            row = cache.get(a)
            if row is None:
                try:
                    row = cache[a] = np.asarray(nb201_from_string(a).ops[1:7])
                except ValueError as e:
                    raise LatencyModelError(f"architecture {i}: {e}") from None
        elif isinstance(a, ArchGraph):
            row = np.asarray(a.ops, dtype=np.int64).reshape(-1)
            if row.shape[0] != 8 or row[0] != 0 or row[7] != 1:
                raise LatencyModelError(f"architecture {i} is not an NB201 cell (8 nodes: input, six "
                                        f"edge ops, output)")
            row = row[1:7]
        else:
            row = np.asarray(a, dtype=np.int64).reshape(-1)
            if row.shape[0] != 6:
                raise LatencyModelError(f"architecture {i}: expected an NB201 cell string, an ArchGraph "
                                        f"or six edge-op ids, got {a!r}")
        if ((row < 2) | (row > 6)).any():
            raise LatencyModelError(f"architecture {i}: NB201 edge-op ids must be in 2..6, got {row.tolist()}")
        ops[i] = row
    return _codes_from_ops(ops)


def nb201_strings(codes) -> list[str]:
    """Cell strings of base-5 codes."""
    from fgp_ext.data.spaces import nb201_to_string

    return [nb201_to_string(r) for r in _ops_from_codes(codes)]


def _onehot(codes: np.ndarray) -> np.ndarray:
    """One-hot op of each of the six edges, ``float64 [N, 30]``."""
    ops = _ops_from_codes(codes) - 2
    n = ops.shape[0]
    x = np.zeros((n, 30))
    for e in range(6):
        x[np.arange(n), e * 5 + ops[:, e]] = 1.0
    return x


@lru_cache(maxsize=1)
def _cheap_table() -> np.ndarray:
    """log FLOPs and log parameter count of every NB201 cell by code, z-scored over the space,
    ``float32 [15625, 2]`` (from the shipped proxy table)."""
    from fgp_ext.data.formats import load
    from fgp_ext.proxies import load_nb201_proxies

    ds = load("nb201")
    pr = load_nb201_proxies(["flops", "params"], dataset=ds)
    t = np.full((NB201_CELLS, 2), np.nan)
    t[nb201_codes(ds)] = np.log(np.column_stack([pr["flops"], pr["params"]]))
    t = ((t - t.mean(0)) / t.std(0)).astype(np.float32)
    t.setflags(write=False)
    return t


# ----------------------------------------------------------------------------------------------
# metrics


def cost_baseline(log_cost_shots, log_latency_shots, log_cost_rest) -> np.ndarray:
    """The one-feature baseline every few-shot latency predictor is compared with: log latency =
    a + b * log(cost) (cost: FLOPs or a parameter count) fitted by least squares on the shots,
    evaluated at ``log_cost_rest``. Returns log latencies; its ranking is the cost's own."""
    x = np.asarray(log_cost_shots, dtype=np.float64).reshape(-1)
    y = np.asarray(log_latency_shots, dtype=np.float64).reshape(-1)
    rest = np.asarray(log_cost_rest, dtype=np.float64).reshape(-1)
    if x.size != y.size:
        raise ValueError(f"{x.size} shot costs but {y.size} shot latencies")
    if np.unique(x).size < 2:
        raise ValueError("the cost baseline needs shots of at least 2 different costs to fit a line")
    if not (np.isfinite(x).all() and np.isfinite(y).all() and np.isfinite(rest).all()):
        raise ValueError("log costs and log latencies must be finite (a cost or latency of 0 or below?)")
    A = np.column_stack([np.ones(x.size), x])
    w = np.linalg.lstsq(A, y, rcond=None)[0]
    return np.column_stack([np.ones(rest.size), rest]) @ w


def latency_metrics(pred, true) -> dict[str, float]:
    """``spearman``, ``kendall``, ``mape`` (mean absolute percentage error, %), ``acc10`` (share of
    predictions within 10% of the truth) and ``n``."""
    from fgp_ext.metrics import kendall_tau, spearman

    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    rel = np.abs(p - t) / np.abs(t)
    return {"spearman": float(spearman(p, t)), "kendall": float(kendall_tau(p, t)),
            "mape": float(100.0 * rel.mean()), "acc10": float((rel <= 0.10).mean()), "n": int(t.size)}


# ----------------------------------------------------------------------------------------------
# the model


@dataclass(frozen=True)
class Hyper:
    """Prior scales: ``cov_scale`` multiplies the source weights' covariance, ``iso`` is the
    isotropic variance added to it (architecture block), ``src_var`` the prior variance of each
    source-latency weight, ``noise_scale`` multiplies the source residual variance, ``cheap_var``
    is added to the prior variance of the log-FLOPs and log-params weights."""

    cov_scale: float = 4.0
    iso: float = 3e-3
    src_var: float = 3e-3
    noise_scale: float = 1.0
    cheap_var: float = 0.3


class _Posterior:
    """Bayesian linear regression with a Gaussian prior ``N(m, P)`` on the features' weights, a
    near-flat intercept and noise variance ``s2``; fitted on ``(F, y)`` (Woodbury: K x K solves)."""

    def __init__(self, m: np.ndarray, P: np.ndarray, s2: float):
        self.m = np.concatenate([[0.0], m])
        self.P = np.zeros((P.shape[0] + 1,) * 2)
        self.P[0, 0] = _INTERCEPT_VAR
        self.P[1:, 1:] = P
        self.s2 = float(s2)
        self.mean = self.m.copy()
        self.cov = self.P.copy()

    @staticmethod
    def design(F: np.ndarray) -> np.ndarray:
        return np.column_stack([np.ones(F.shape[0]), F])

    def fit(self, F: np.ndarray, y: np.ndarray) -> "_Posterior":
        X = self.design(F)
        PX = self.P @ X.T
        S = X @ PX + self.s2 * np.eye(X.shape[0])
        G = np.linalg.solve(S, np.column_stack([y - X @ self.m, PX.T]))
        self.mean = self.m + PX @ G[:, 0]
        self.cov = self.P - PX @ G[:, 1:]
        return self

    def loo(self, F: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Leave-one-out residuals of the observations under the prior and their predictive
        standard deviations (GP identities: ``[S^-1 (y - X m)]_i / [S^-1]_ii`` and
        ``[S^-1]_ii ** -0.5``)."""
        X = self.design(F)
        Si = np.linalg.inv(X @ self.P @ X.T + self.s2 * np.eye(X.shape[0]))
        d = np.diag(Si)
        return (Si @ (y - X @ self.m)) / d, 1.0 / np.sqrt(d)

    def predict(self, F: np.ndarray) -> np.ndarray:
        return self.design(F) @ self.mean

    def variance(self, F: np.ndarray) -> np.ndarray:
        X = self.design(F)
        return np.einsum("ij,jk,ik->i", X, self.cov, X)


def _greedy_design(prior: _Posterior, F: np.ndarray, k: int) -> list[int]:
    """Rows of ``F`` picked one at a time where the posterior predictive variance is largest (the
    posterior covariance updated after each pick; no labels needed). Ties: the lowest row."""
    X = prior.design(F)
    C = prior.cov.copy()
    var = np.einsum("ij,jk,ik->i", X, C, X)
    picked: list[int] = []
    for _ in range(min(k, F.shape[0])):
        v = var.copy()
        v[picked] = -np.inf
        j = int(np.argmax(v))
        picked.append(j)
        cx = C @ X[j]
        denom = float(X[j] @ cx) + prior.s2
        C = C - np.outer(cx, cx) / denom
        var = var - (X @ cx) ** 2 / denom
    return picked


class LatencyPredictor:
    """A latency predictor trained over source devices (:func:`train`), adapted to a new device
    from a few measurements (:meth:`adapt`), then predicting any NB201 cell (:meth:`predict`)."""

    def __init__(self, *, space: str, devices: Sequence[str], mu: np.ndarray, cov: np.ndarray,
                 noise: float, hyper: Hyper, src_table: np.ndarray, src_mean: np.ndarray,
                 src_std: np.ndarray, reference: np.ndarray, cheap: np.ndarray,
                 meta: Mapping | None = None):
        self.space = space
        self.devices = list(devices)
        self.mu = np.asarray(mu, dtype=np.float64)
        self.cov = np.asarray(cov, dtype=np.float64)
        self.noise = float(noise)
        self.hyper = hyper
        self.src_table = np.asarray(src_table, dtype=np.float32)     # [15625, n_src] z-scored log ms, NaN = unknown
        self.src_mean = np.asarray(src_mean, dtype=np.float64)
        self.src_std = np.asarray(src_std, dtype=np.float64)
        self.reference = np.asarray(reference, dtype=np.int64)       # codes, in pick order
        self.cheap = np.asarray(cheap, dtype=np.float32)             # [15625, 2] z-scored log FLOPs, log params
        self.meta = dict(meta or {})
        self._post_full: _Posterior | None = None
        self._post_arch: _Posterior | None = None
        self.shots: np.ndarray | None = None
        #: drop shots that look like failed measurements before adapting (see _adapt_codes)
        self.robust = True
        self.outliers: np.ndarray | None = None

    # -- priors ------------------------------------------------------------------------------------
    def _arch_cov(self) -> np.ndarray:
        h = self.hyper
        P = h.cov_scale * self.cov + h.iso * np.eye(self.cov.shape[0])
        P[-2:, -2:] += h.cheap_var * np.eye(2)
        return P

    def _prior_arch(self) -> _Posterior:
        return _Posterior(self.mu, self._arch_cov(), self.hyper.noise_scale * self.noise)

    def _prior_full(self) -> _Posterior:
        h = self.hyper
        n_src = len(self.devices)
        p = self.cov.shape[0]
        P = np.zeros((p + n_src, p + n_src))
        P[:p, :p] = self._arch_cov()
        P[p:, p:] = h.src_var * np.eye(n_src)
        return _Posterior(np.concatenate([self.mu, np.zeros(n_src)]), P, h.noise_scale * self.noise)

    def _features(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Architecture features, source features and the mask of rows that have source latencies."""
        xa = np.hstack([_onehot(codes), self.cheap[codes].astype(np.float64)])
        xs = self.src_table[codes].astype(np.float64) if len(self.devices) else np.zeros((len(codes), 0))
        has = np.isfinite(xs).all(axis=1) if xs.shape[1] else np.zeros(len(codes), dtype=bool)
        return xa, np.nan_to_num(xs), has

    # -- shots -------------------------------------------------------------------------------------
    def choose_shots(self, candidates, k: int = 10, *, rule: str = "design", seed: int = 0) -> np.ndarray:
        """Indices into ``candidates`` (architectures) of the ``k`` to measure: ``"design"`` (the
        method's choice: greedy largest posterior predictive variance) or ``"random"`` (seeded)."""
        return self._choose(nb201_codes(candidates), k, rule, seed)

    def _choose(self, codes: np.ndarray, k: int, rule: str = "design", seed: int = 0) -> np.ndarray:
        if k < 1:
            raise LatencyModelError(f"the number of shots must be >= 1, got {k}")
        if k > len(codes):
            raise LatencyModelError(f"{k} shots asked for, but only {len(codes)} architectures are available")
        if rule == "random":
            return np.sort(np.random.default_rng(seed).choice(len(codes), k, replace=False))
        if rule != "design":
            raise LatencyModelError(f"unknown shot rule {rule!r} (design or random)")
        xa, xs, has = self._features(codes)
        if has.all() and xs.shape[1]:
            return np.asarray(_greedy_design(self._prior_full(), np.hstack([xa, xs]), k))
        return np.asarray(_greedy_design(self._prior_arch(), xa, k))

    def reference_architectures(self, k: int = 10) -> list[str]:
        """The shipped measurement set: the first ``k`` cells of the design over all NB201 cells
        (stored at training time, up to 50)."""
        if not 1 <= k <= len(self.reference):
            raise LatencyModelError(f"the model stores {len(self.reference)} reference architectures; "
                                    f"asked for {k}")
        return nb201_strings(self.reference[:k])

    # -- adapt / predict ---------------------------------------------------------------------------
    def adapt(self, measurements: Mapping) -> "LatencyPredictor":
        """Fit the device from ``{architecture: latency in ms}`` (>= 2 positive, finite values);
        returns ``self``. Architectures: cell strings, ArchGraphs or six op ids (hashable)."""
        if not isinstance(measurements, Mapping) or len(measurements) < 2:
            raise LatencyModelError("adapt needs a mapping of at least 2 {architecture: latency_ms} measurements")
        archs = list(measurements.keys())
        try:
            y = np.array([float(measurements[a]) for a in archs], dtype=np.float64)
        except (TypeError, ValueError):
            raise LatencyModelError("adapt needs numeric latencies (ms) as the mapping's values") from None
        bad = np.flatnonzero(~np.isfinite(y) | (y <= 0))
        if bad.size:
            raise LatencyModelError(f"latency of measured architecture {int(bad[0])} is {y[bad[0]]}: "
                                    f"latencies must be finite and > 0 (ms)")
        codes = nb201_codes(archs)
        return self._adapt_codes(codes, np.log(y))

    def _adapt_codes(self, codes: np.ndarray, logy: np.ndarray) -> "LatencyPredictor":
        xa, xs, has = self._features(codes)
        self.outliers = np.zeros(len(codes), dtype=bool)
        if self.robust and len(codes) >= 5:
            # a failed measurement (pixel3 holds 0.04 and 0.003 ms cells next to 10 ms ones) would
            # bend the whole device: set aside, one at a time, the shot whose leave-one-out residual
            # is more than OUTLIER_Z predictive standard deviations and a factor 2 off (at most K/4)
            keep = np.ones(len(codes), dtype=bool)
            prior = self._prior_arch()
            for _ in range(len(codes) // 4):
                idx = np.flatnonzero(keep)
                r, sd = prior.loo(xa[idx], logy[idx])
                z = np.abs(r) / sd
                k = int(np.argmax(z))
                if z[k] <= OUTLIER_Z or abs(r[k]) <= math.log(2.0):
                    break
                keep[idx[k]] = False
            if not keep.all():
                self.outliers = ~keep
                xa, xs, has, logy = xa[keep], xs[keep], has[keep], logy[keep]
        self._post_arch = self._prior_arch().fit(xa, logy)
        self._post_full = (self._prior_full().fit(np.hstack([xa, xs]), logy)
                           if has.all() and xs.shape[1] else None)
        self.shots = codes
        return self

    @property
    def adapted(self) -> bool:
        return self._post_arch is not None

    def predict_log(self, codes: np.ndarray) -> np.ndarray:
        if not self.adapted:
            raise LatencyModelError("the predictor is not adapted to a device yet: call adapt() first")
        xa, xs, has = self._features(codes)
        out = self._post_arch.predict(xa)
        if self._post_full is not None and has.any():
            out[has] = self._post_full.predict(np.hstack([xa[has], xs[has]]))
        return out

    def predict(self, archs) -> np.ndarray:
        """Predicted latency (ms) of ``archs`` on the adapted device, ``float64 [N]``."""
        return np.exp(self.predict_log(nb201_codes(archs)))

    # -- files -------------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the trained predictor (not its adaptation) to ``path`` (a ``.npz``, atomically)."""
        from fgp_ext import _io

        header = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "space": self.space,
                  "devices": self.devices, "noise": self.noise, "hyper": asdict(self.hyper),
                  "meta": self.meta}
        _io.np_savez(path, header=np.array(json.dumps(header)), mu=self.mu, cov=self.cov,
                     src_table=self.src_table, src_mean=self.src_mean, src_std=self.src_std,
                     reference=self.reference, cheap=self.cheap)

    @classmethod
    def load(cls, path) -> "LatencyPredictor":
        """Read a NAS-Bench-201 model written by :meth:`save`; ``LatencyModelError`` (one line) for
        anything else (a graph-space model included: :func:`load_model` reads either kind)."""
        pred = load_model(path)
        if not isinstance(pred, cls):
            raise LatencyModelError(f"{path}: a latency model of the graph space {pred.space!r}, not of "
                                    f"NAS-Bench-201 (read it with load_model)")
        return pred

    @classmethod
    def _from_file(cls, path, header: dict, z) -> "LatencyPredictor":
        arrays = {k: z[k] for k in ("mu", "cov", "src_table", "src_mean", "src_std", "reference", "cheap")}
        n_src = len(header["devices"])
        p = arrays["mu"].shape[0] if arrays["mu"].ndim == 1 else -1
        if (header.get("space") != "nb201" or p != 32 or arrays["cov"].shape != (p, p)
                or arrays["src_table"].shape != (NB201_CELLS, n_src)
                or arrays["cheap"].shape != (NB201_CELLS, 2)):
            raise LatencyModelError(f"{path}: inconsistent latency model (space {header.get('space')!r}, "
                                    f"shapes do not match)")
        return cls(space=header["space"], devices=header["devices"], noise=header["noise"],
                   hyper=Hyper(**header["hyper"]), meta=header.get("meta"), **arrays)


def load_model(path) -> "LatencyPredictor | GraphLatencyPredictor":
    """Read a latency model written by :meth:`LatencyPredictor.save` (NAS-Bench-201) or
    :meth:`GraphLatencyPredictor.save` (any graph space); ``LatencyModelError`` (one line) for any
    other file, ``FileNotFoundError`` for a missing one."""
    import os
    import zipfile

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    if os.path.isdir(path):
        raise LatencyModelError(f"{path}: is a directory, not a latency model")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as e:
        raise LatencyModelError(f"{path}: cannot read ({e.strerror or e})") from None
    if magic != b"PK\x03\x04":
        raise LatencyModelError(f"{path}: not an fgp latency model (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files") or "header" not in z.files:
                raise LatencyModelError(f"{path}: not an fgp latency model (no header)")
            header = json.loads(str(z["header"]))
            if not isinstance(header, dict) or header.get("format") != MODEL_FORMAT:
                raise LatencyModelError(f"{path}: not an fgp latency model (format "
                                        f"{header.get('format') if isinstance(header, dict) else None!r})")
            if header.get("version") != MODEL_VERSION:
                raise LatencyModelError(f"{path}: latency model format version {header.get('version')!r}; "
                                        f"this fgp_ext reads version {MODEL_VERSION}")
            kind = GraphLatencyPredictor if header.get("kind") == "graph" else LatencyPredictor
            return kind._from_file(path, header, z)
    except LatencyModelError:
        raise
    except (ValueError, OSError, EOFError, KeyError, TypeError, zipfile.BadZipFile, json.JSONDecodeError,
            UnicodeDecodeError) as e:
        raise LatencyModelError(f"{path}: not a readable fgp latency model ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else 'corrupt'})") from None


# ----------------------------------------------------------------------------------------------
# training


def _device_weights(xa: np.ndarray, logy: np.ndarray, ridge: float = 1e-3) -> tuple[np.ndarray, float]:
    """Ridge weights of the architecture features for one device's log latency, and the residual
    variance. With ``ROBUST_SOURCES``, cells more than 5 robust standard deviations off the first
    fit (failed measurements: pixel3's 0.003 ms cells weigh like thousands of normal ones in log
    space) are left out of a second fit."""
    keep = np.ones(len(logy), dtype=bool)
    for _ in range(2 if ROBUST_SOURCES else 1):
        xm, ym = xa[keep].mean(0), logy[keep].mean()
        xc, yc = xa[keep] - xm, logy[keep] - ym
        w = np.linalg.solve(xc.T @ xc + ridge * len(yc) * np.eye(xa.shape[1]), xc.T @ yc)
        r_all = (logy - ym) - (xa - xm) @ w
        med = np.median(r_all)
        mad = 1.4826 * np.median(np.abs(r_all - med))
        keep = np.abs(r_all - med) <= 5.0 * max(mad, 1e-12)
    return w, float(r_all[keep].var())


#: leave a source device's failed measurements out of the prior (see _device_weights)
ROBUST_SOURCES = True


def _fit_prior(xa: np.ndarray, logY: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean and covariance of the per-device weights, mean residual variance (columns of logY:
    devices; NaN rows of a device left out of its fit)."""
    ws, noises = [], []
    for j in range(logY.shape[1]):
        ok = np.isfinite(logY[:, j])
        w, s2 = _device_weights(xa[ok], logY[ok, j])
        ws.append(w)
        noises.append(s2)
    W = np.array(ws)
    mu = W.mean(0)
    cov = (W - mu).T @ (W - mu) / max(len(W) - 1, 1) if len(W) > 1 else np.zeros((W.shape[1],) * 2)
    return mu, cov, float(np.mean(noises))


#: a shot this many predictive standard deviations off the others' prediction is a failed measurement
OUTLIER_Z = 4.0

#: the grid searched at training time (leave one source device out), one scale at a time from the
#: defaults (its middle); on the nine NB201 devices the search often ends at an edge (cov_scale 8,
#: iso 1e-3): a line search that walks past the edges was tried and scored the same (0.951 / 0.933
#: at K = 10, design / random shots) at 1.5x the training time
HYPER_GRID = {"cov_scale": (2.0, 4.0, 8.0), "iso": (1e-3, 3e-3, 1e-2), "src_var": (1e-3, 3e-3, 3e-2),
              "noise_scale": (0.5, 1.0, 2.0), "cheap_var": (0.1, 0.3, 1.0)}


def _build(codes_all, logY, devices, hyper, design_k, meta, cheap=None) -> LatencyPredictor:
    cheap = _cheap_table() if cheap is None else cheap
    xa = np.hstack([_onehot(codes_all), cheap[codes_all].astype(np.float64)])
    mu, cov, noise = _fit_prior(xa, logY)
    table = np.full((NB201_CELLS, len(devices)), np.nan, dtype=np.float32)
    mean = np.nanmean(logY, axis=0)
    std = np.nanstd(logY, axis=0)
    table[codes_all] = ((logY - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
    pred = LatencyPredictor(space="nb201", devices=devices, mu=mu, cov=cov, noise=noise, hyper=hyper,
                            src_table=table, src_mean=mean, src_std=std, reference=np.zeros(0, np.int64),
                            cheap=cheap, meta=meta)
    if design_k:
        all_codes = np.arange(NB201_CELLS)
        pool = all_codes[np.isfinite(table).all(axis=1)] if len(devices) else all_codes
        pred.reference = pool[pred._choose(pool, min(design_k, len(pool)))]
    return pred


def _inner_score(codes_all, logY, devices, hyper, shots: int, draws: int, seed: int) -> float:
    """Mean Spearman of leave-one-source-device-out adaptation with ``shots`` random shots."""
    from fgp_ext.metrics import spearman

    rng = np.random.default_rng(seed)
    scores = []
    for j in range(len(devices)):
        keep = [i for i in range(len(devices)) if i != j]
        pred = _build(codes_all, logY[:, keep], [devices[i] for i in keep], hyper, 0, {})
        ok = np.flatnonzero(np.isfinite(logY[:, j]))
        for _ in range(draws):
            s = rng.choice(ok, shots, replace=False)
            pred._adapt_codes(codes_all[s], logY[s, j])
            rest = np.setdiff1d(ok, s)
            sub = rng.choice(rest, min(2000, len(rest)), replace=False)
            scores.append(spearman(pred.predict_log(codes_all[sub]), logY[sub, j]))
    return float(np.mean(scores))


def train(dataset, devices: Sequence[str] | None = None, *, tune: bool = True, shots: int = 10,
          draws: int = 3, seed: int = 0, design_k: int = 50, cheap: Sequence[str] | None = None,
          verbose: bool = False) -> "LatencyPredictor | GraphLatencyPredictor":
    """Train a predictor on the latency columns ``devices`` of ``dataset`` (default: every ``lat_*``
    column): a :class:`LatencyPredictor` for NAS-Bench-201 cells, a :class:`GraphLatencyPredictor`
    for any other space read from a file (``cheap``: its feature columns, see :func:`train_graph`).
    With ``tune``, the prior scales (:data:`HYPER_GRID`, one coordinate at a time) are chosen by
    leave-one-source-device-out with ``shots`` random shots (``draws`` per device); needs >= 3
    devices. Latencies must be positive (NaN = not measured)."""
    space = getattr(getattr(dataset, "space", None), "name", None)
    if space is None or not hasattr(dataset, "graphs"):
        raise LatencyModelError("train needs a dataset of architectures (fgp_ext.load(FILE))")
    if space != "nb201" and not getattr(dataset.space, "vocab", None):
        raise LatencyModelError(f"the data's space {space!r} has no op vocabulary")
    if space == "nb201" and cheap is not None:
        raise LatencyModelError("cheap feature columns are read from files of graph spaces; NAS-Bench-201 "
                                "cells use the shipped FLOPs and parameter counts")
    if devices is None:
        devices = [c for c in dataset.target_names if c.startswith("lat_")]
        if not devices:
            raise LatencyModelError(f"the data has no lat_* column; columns: {dataset.target_names}")
    devices = list(devices)
    if not devices:
        raise LatencyModelError("no source devices given")
    for d in devices:
        if d not in dataset.target_names:
            raise LatencyModelError(f"unknown device column {d!r}; available: {dataset.target_names}")
    if space != "nb201":
        Y = np.column_stack([dataset.targets(d) for d in devices])
    else:
        codes = nb201_codes(dataset)
        codes, first = np.unique(codes, return_index=True)   # a repeated cell counts once
        Y = np.column_stack([dataset.targets(d)[first] for d in devices])
    if (Y[np.isfinite(Y)] <= 0).any() or np.isinf(Y).any():
        j = int(np.flatnonzero(((Y <= 0) | np.isinf(Y)).any(axis=0))[0])
        raise LatencyModelError(f"column {devices[j]!r} holds latencies <= 0 or infinite; they must be > 0 ms")
    for j, d in enumerate(devices):
        if np.isfinite(Y[:, j]).sum() < 50:
            raise LatencyModelError(f"column {d!r} has {int(np.isfinite(Y[:, j]).sum())} measured "
                                    f"architectures; at least 50 are needed to train on it")
    if space != "nb201":
        return train_graph(dataset, devices, cheap=cheap, tune=tune, shots=shots, draws=draws, seed=seed,
                           verbose=verbose)
    logY = np.log(Y)
    t0 = time.perf_counter()
    hyper = Hyper()
    if tune and len(devices) >= 3:
        best = _inner_score(codes, logY, devices, hyper, shots, draws, seed)
        hyper, best = _coordinate_search(hyper, best, HYPER_GRID, verbose,
                                         lambda h: _inner_score(codes, logY, devices, h, shots, draws, seed))
    meta = {"trained_on": getattr(dataset, "source", None) or "nb201", "n_archs": int(len(codes)),
            "train_s": None}
    pred = _build(codes, logY, devices, hyper, design_k, meta)
    pred.meta["train_s"] = round(time.perf_counter() - t0, 2)
    return pred


def _coordinate_search(hyper: Hyper, best: float, grid: dict, verbose: bool, score) -> tuple[Hyper, float]:
    """Prior scales by coordinate search: one scale of ``grid`` at a time, in grid order, each
    value scored by ``score(hyper)`` (higher is better; a change must gain more than 1e-4).
    Returns the chosen scales and their score; ``best`` is the score of ``hyper`` as given."""
    for name, values in grid.items():
        base = hyper
        for v in values:
            h = Hyper(**{**asdict(base), name: v})
            if h == base:
                continue
            sc = score(h)
            if sc > best + 1e-4:
                best, hyper = sc, h
        if verbose:
            print(f"  tuned {name}: {getattr(hyper, name)} (inner Spearman {best:.4f})", flush=True)
    return hyper, best


# ----------------------------------------------------------------------------------------------
# any graph space: the file's op graph and cheap columns as features


def _screen_shots(prior: _Posterior, F: np.ndarray, logy: np.ndarray) -> np.ndarray:
    """Mask of the shots to keep: the worst is set aside while its leave-one-out residual under the
    prior is more than OUTLIER_Z predictive standard deviations and a factor 2 off (at most K/4)."""
    keep = np.ones(len(logy), dtype=bool)
    if len(logy) < 5:
        return keep
    for _ in range(len(logy) // 4):
        idx = np.flatnonzero(keep)
        r, sd = prior.loo(F[idx], logy[idx])
        z = np.abs(r) / sd
        k = int(np.argmax(z))
        if z[k] <= OUTLIER_Z or abs(r[k]) <= math.log(2.0):
            break
        keep[idx[k]] = False
    return keep


class GraphLatencyPredictor:
    """The latency predictor for a search space given as graphs in a JSONL/JSON/CSV file (chains of
    MBConv blocks, NAS-Bench-101 or DARTS cells, any op-on-node DAG), where no network is built.

    The same model as :class:`LatencyPredictor` (log latency linear in the architecture features,
    a Gaussian prior over the weights learned from the source devices, a flat device offset,
    posterior from K shots), with the features of :class:`~fgp_ext.latency_features.GraphFeatureSchema`:
    op counts, op counts per position, graph size and the file's cheap columns (params, FLOPs...).
    ``schema`` records the space, its vocabulary and the cheap columns, so a file of another space
    is refused. Train with :func:`train` on such a dataset; then :meth:`choose_shots`,
    :meth:`adapt` and :meth:`predict` take :class:`~fgp_ext.data.dataset.Dataset` s of the space.
    """

    def __init__(self, *, schema: GraphFeatureSchema, devices: Sequence[str], mu: np.ndarray,
                 cov: np.ndarray, noise: float, hyper: Hyper, meta: Mapping | None = None):
        self.schema = schema
        self.space = schema.space
        self.devices = list(devices)
        self.mu = np.asarray(mu, dtype=np.float64)
        self.cov = np.asarray(cov, dtype=np.float64)
        self.noise = float(noise)
        self.hyper = hyper
        self.meta = dict(meta or {})
        self._post: _Posterior | None = None
        #: drop shots that look like failed measurements before adapting (see _screen_shots)
        self.robust = True
        self.outliers: np.ndarray | None = None
        self.shots: np.ndarray | None = None

    def _prior(self) -> _Posterior:
        h = self.hyper
        P = h.cov_scale * self.cov + h.iso * np.eye(self.cov.shape[0])
        cs = self.schema.cheap_slice
        P[cs, cs] += h.cheap_var * np.eye(cs.stop - cs.start)
        return _Posterior(self.mu, P, h.noise_scale * self.noise)

    def features(self, dataset, what: str = "the data") -> np.ndarray:
        """Scaled architecture features of ``dataset`` (``LatencyModelError`` for another space)."""
        return self.schema(dataset, what)

    # -- shots -------------------------------------------------------------------------------------
    def choose_shots(self, dataset, k: int = 10, *, rule: str = "design", seed: int = 0) -> np.ndarray:
        """Indices into ``dataset`` of the ``k`` architectures to measure: ``"design"`` (greedy
        largest posterior predictive variance among them, no labels needed) or ``"random"``."""
        return self._choose(self.features(dataset), k, rule, seed)

    def _choose(self, F: np.ndarray, k: int, rule: str = "design", seed: int = 0) -> np.ndarray:
        if k < 1:
            raise LatencyModelError(f"the number of shots must be >= 1, got {k}")
        if k > len(F):
            raise LatencyModelError(f"{k} shots asked for, but only {len(F)} architectures are available")
        if rule == "random":
            return np.sort(np.random.default_rng(seed).choice(len(F), k, replace=False))
        if rule != "design":
            raise LatencyModelError(f"unknown shot rule {rule!r} (design or random)")
        return np.asarray(_greedy_design(self._prior(), F, k))

    # -- adapt / predict ---------------------------------------------------------------------------
    def adapt(self, dataset, latency_ms) -> "GraphLatencyPredictor":
        """Fit the device from the measured latencies (ms) of the architectures of ``dataset``
        (>= 2, positive and finite, one per architecture); returns ``self``."""
        try:
            y = np.asarray(latency_ms, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise LatencyModelError("adapt needs numeric latencies (ms)") from None
        if len(y) != len(dataset) or len(y) < 2:
            raise LatencyModelError(f"adapt needs one latency per architecture and at least 2; got {len(y)} "
                                    f"for {len(dataset)} architectures")
        bad = np.flatnonzero(~np.isfinite(y) | (y <= 0))
        if bad.size:
            raise LatencyModelError(f"latency of measured architecture {int(bad[0])} is {y[bad[0]]}: "
                                    f"latencies must be finite and > 0 (ms)")
        return self._adapt_F(self.features(dataset), np.log(y))

    def _adapt_F(self, F: np.ndarray, logy: np.ndarray) -> "GraphLatencyPredictor":
        keep = _screen_shots(self._prior(), F, logy) if self.robust else np.ones(len(logy), dtype=bool)
        self.outliers = ~keep
        self._post = self._prior().fit(F[keep], logy[keep])
        return self

    @property
    def adapted(self) -> bool:
        return self._post is not None

    def predict_log_F(self, F: np.ndarray) -> np.ndarray:
        if self._post is None:
            raise LatencyModelError("the predictor is not adapted to a device yet: call adapt() first")
        return self._post.predict(F)

    def predict(self, dataset) -> np.ndarray:
        """Predicted latency (ms) of every architecture of ``dataset`` on the adapted device."""
        return np.exp(self.predict_log_F(self.features(dataset)))

    # -- files -------------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the trained predictor (not its adaptation) to ``path`` (a ``.npz``, atomically)."""
        from fgp_ext import _io

        header = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "kind": "graph", "space": self.space,
                  "schema": self.schema.to_json(), "devices": self.devices, "noise": self.noise,
                  "hyper": asdict(self.hyper), "meta": self.meta}
        _io.np_savez(path, header=np.array(json.dumps(header)), mu=self.mu, cov=self.cov)

    @classmethod
    def _from_file(cls, path, header: dict, z) -> "GraphLatencyPredictor":
        schema = GraphFeatureSchema.from_json(header["schema"])
        mu, cov = z["mu"], z["cov"]
        if mu.shape != (schema.dim,) or cov.shape != (schema.dim, schema.dim) or header.get("space") != schema.space:
            raise LatencyModelError(f"{path}: inconsistent latency model (space {header.get('space')!r}, "
                                    f"shapes do not match)")
        return cls(schema=schema, devices=header["devices"], mu=mu, cov=cov, noise=header["noise"],
                   hyper=Hyper(**header["hyper"]), meta=header.get("meta"))


def _graph_inner_score(F, logY, hyper, shots: int, draws: int, seed: int, schema) -> float:
    """Mean Spearman of leave-one-source-device-out adaptation with ``shots`` random shots."""
    from fgp_ext.metrics import spearman

    rng = np.random.default_rng(seed)
    scores = []
    for j in range(logY.shape[1]):
        keep = [i for i in range(logY.shape[1]) if i != j]
        mu, cov, noise = _fit_prior(F, logY[:, keep])
        pred = GraphLatencyPredictor(schema=schema, devices=[], mu=mu, cov=cov, noise=noise, hyper=hyper)
        ok = np.flatnonzero(np.isfinite(logY[:, j]))
        for _ in range(draws):
            s = rng.choice(ok, shots, replace=False)
            pred._adapt_F(F[s], logY[s, j])
            rest = np.setdiff1d(ok, s)
            sub = rng.choice(rest, min(2000, len(rest)), replace=False)
            scores.append(spearman(pred.predict_log_F(F[sub]), logY[sub, j]))
    return float(np.mean(scores))


#: position bins of the graph features searched at training time, the first without a search
GRAPH_BUCKETS = (2, 1, 4)
#: the grid of the graph-space predictor (it has no source-latency block): NB201's, widened where
#: the search on the MBConv development file ended at its edges (leave-one-device-out mean Spearman
#: at K = 10 with the design's shots 0.914 -> 0.923; results/latency.md)
GRAPH_HYPER_GRID = {"cov_scale": (2.0, 4.0, 8.0, 16.0), "iso": (3e-4, 1e-3, 3e-3),
                    "noise_scale": (1.0, 2.0, 4.0), "cheap_var": (0.03, 0.1, 0.3)}


def train_graph(dataset, devices: Sequence[str], *, cheap: Sequence[str] | None = None, tune: bool = True,
                shots: int = 10, draws: int = 3, seed: int = 0, verbose: bool = False) -> GraphLatencyPredictor:
    """Train a :class:`GraphLatencyPredictor` on the ``devices`` columns of a graph-space dataset
    (positive latencies, NaN = not measured); ``cheap``: the feature columns (default every
    non-``lat_*`` column with a value everywhere). Called by :func:`train` for such data."""
    t0 = time.perf_counter()
    from fgp_ext.latency_features import default_cheap_columns

    if cheap is None:
        cheap = [c for c in default_cheap_columns(dataset) if c not in devices]
    both = [c for c in cheap if c in devices]
    if both:
        raise LatencyModelError(f"column {both[0]!r} is a source device and a cheap feature column at once")
    logY = np.log(np.column_stack([dataset.targets(d) for d in devices]))
    hyper = Hyper()
    schema = GraphFeatureSchema.fit(dataset, cheap, buckets=GRAPH_BUCKETS[0])
    F = schema(dataset)
    if tune and len(devices) >= 3:
        # how finely the graph position is binned is chosen like the prior's scales: by
        # leave-one-source-device-out (the target device never seen), then the scales
        best = _graph_inner_score(F, logY, hyper, shots, draws, seed, schema)
        for b in GRAPH_BUCKETS[1:]:
            sb = GraphFeatureSchema.fit(dataset, cheap, buckets=b)
            Fb = sb(dataset)
            sc = _graph_inner_score(Fb, logY, hyper, shots, draws, seed, sb)
            if sc > best + 1e-4:
                best, schema, F = sc, sb, Fb
        if verbose:
            print(f"  tuned position bins: {schema.buckets} (inner Spearman {best:.4f})", flush=True)
        hyper, best = _coordinate_search(hyper, best, GRAPH_HYPER_GRID, verbose,
                                         lambda h: _graph_inner_score(F, logY, h, shots, draws, seed, schema))
    mu, cov, noise = _fit_prior(F, logY)
    meta = {"trained_on": getattr(dataset, "source", None), "n_archs": int(len(dataset)),
            "train_s": round(time.perf_counter() - t0, 2)}
    return GraphLatencyPredictor(schema=schema, devices=devices, mu=mu, cov=cov, noise=noise, hyper=hyper,
                                 meta=meta)


# ----------------------------------------------------------------------------------------------
# command line


def _model_data(path: str, what: str, nb201_only: bool = True):
    from fgp_ext.data import formats

    ds = formats.load(path)
    space = getattr(ds.space, "name", None)
    if nb201_only and space != "nb201":
        raise LatencyModelError(f"{what} {path!r} holds architectures of space {space!r}; this latency model "
                                f"was trained on NAS-Bench-201 cells (space 'nb201')")
    return ds


def cmd_latency_train(args) -> int:
    """``fgp latency-train``: train over the source devices, write the model."""
    ds = _model_data(args.data, "--data", nb201_only=False)
    devices = None
    if args.devices is not None:
        devices = [d.strip() for d in args.devices.split(",") if d.strip()]
        if not devices:
            # an empty list is a script's empty variable, not a request for every column
            raise LatencyModelError(f"--devices names no column ({args.devices!r}); leave it out to train on "
                                    f"every lat_* column")
        if len(set(devices)) != len(devices):
            raise LatencyModelError(f"--devices names a column twice: {args.devices!r}")
    cheap = None
    if args.cheap_columns is not None:
        if ds.space.name == "nb201":
            raise LatencyModelError("--cheap-columns is for files of graph spaces; NAS-Bench-201 cells use the "
                                    "shipped FLOPs and parameter counts")
        cheap = [c.strip() for c in args.cheap_columns.split(",") if c.strip()]
    t0 = time.perf_counter()
    pred = train(ds, devices, tune=not args.no_tune, seed=args.seed, cheap=cheap, verbose=True)
    features = (f"; features: op counts in {pred.schema.buckets} position bin(s) of {len(pred.schema.vocab)} ops of space "
                f"{pred.space!r}, cheap columns {pred.schema.cheap or 'none'}"
                if isinstance(pred, GraphLatencyPredictor) else "")
    print(f"trained on {len(pred.devices)} device(s) ({', '.join(pred.devices)}) and "
          f"{pred.meta['n_archs']} architectures in {time.perf_counter() - t0:.1f} s; prior scales "
          f"{asdict(pred.hyper)}{features}")
    pred.save(args.out)
    print(f"wrote {args.out}")
    return 0


def _measure_cells(strings: Sequence[str], args, what: str) -> np.ndarray:
    from fgp_ext.latency import measure_arch_latency

    out = np.empty(len(strings))
    for i, s in enumerate(strings):
        r = measure_arch_latency("nb201", {"arch_str": s}, batch_size=args.batch_size, warmup=args.warmup,
                                 repeats=args.repeats, threads=args.measure_threads)
        out[i] = r.median_ms
        print(f"  {what} {i + 1}/{len(strings)}: {s}  {r.median_ms:.3f} ms", flush=True)
    return out


def _report(metrics: dict, prefix: str = "") -> None:
    print(f"{prefix}spearman {metrics['spearman']:.4f}  kendall {metrics['kendall']:.4f}  "
          f"mape {metrics['mape']:.2f}%  acc10 {metrics['acc10']:.4f}  (n={metrics['n']})")


def _strict(o):
    """NaN/inf as null, numpy scalars as Python numbers (strict JSON)."""
    if isinstance(o, dict):
        return {str(k): _strict(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_strict(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    return o


def cmd_latency_adapt(args) -> int:
    """``fgp latency-adapt``: pick the shots, adapt, predict, score (see the module docstring)."""
    from fgp_ext import _io

    if args.validate and not args.measure:
        raise LatencyModelError("--validate N measures N more cells on this machine and needs --measure; with "
                                "--data/--target every architecture that is not a shot is scored already")
    pred = load_model(args.model)
    out: dict = {"model": args.model, "shots": args.shots, "shot_rule": args.shot_rule, "seed": args.seed}
    t0 = time.perf_counter()
    if isinstance(pred, GraphLatencyPredictor):
        _adapt_graph(pred, args, out)
    elif args.measure:
        if args.data or args.target:
            raise LatencyModelError("--measure measures the shots on this machine: it takes no --data/--target")
        all_codes = np.arange(NB201_CELLS)
        if args.shot_rule == "design" and args.shots <= len(pred.reference):
            shot_codes = pred.reference[: args.shots]
        else:
            shot_codes = all_codes[pred._choose(all_codes, args.shots, args.shot_rule, args.seed)]
        print(f"measuring {len(shot_codes)} NB201 networks on this machine (batch {args.batch_size}, "
              f"{args.warmup} warm-up + {args.repeats} timed runs, median)", flush=True)
        y = _measure_cells(nb201_strings(shot_codes), args, "shot")
        pred._adapt_codes(shot_codes, np.log(y))
        t_adapt = time.perf_counter()
        p_all = np.exp(pred.predict_log(all_codes))
        out.update(target="this machine (measured)", measured={s: float(v) for s, v in zip(nb201_strings(shot_codes), y)},
                   predict_s=time.perf_counter() - t_adapt)
        if args.validate:
            rest = np.setdiff1d(all_codes, shot_codes)
            val = np.sort(np.random.default_rng(args.seed + 1).choice(rest, min(args.validate, len(rest)), replace=False))
            yv = _measure_cells(nb201_strings(val), args, "validation")
            m = latency_metrics(p_all[val], yv)
            out.update(m)
            out["validation"] = {s: float(v) for s, v in zip(nb201_strings(val), yv)}
            _report(m, f"validation on {len(val)} measured cells: ")
        if args.predictions:
            strs = nb201_strings(all_codes)
            shot_set = set(shot_codes.tolist())
            _io.write_csv(args.predictions, ([s, f"{p:.6g}", int(c in shot_set)] for c, s, p in zip(all_codes, strs, p_all)),
                          header=["arch_str", "predicted_ms", "shot"])
            print(f"wrote {args.predictions}")
    else:
        if not args.data or not args.target:
            raise LatencyModelError("fgp latency-adapt needs --data FILE and --target COLUMN (or --measure)")
        ds = _model_data(args.data, "--data")
        if args.target not in ds.target_names:
            raise LatencyModelError(f"unknown column {args.target!r} in {args.data}; columns: {ds.target_names}")
        y = ds.targets(args.target)
        bad = np.flatnonzero(np.isinf(y) | (y <= 0))
        if bad.size:
            raise LatencyModelError(f"{args.data}: architecture {int(bad[0])} has {args.target} = {y[bad[0]]}; "
                                    f"latencies must be > 0 and finite (empty or NaN = not measured)")
        codes = nb201_codes(ds)
        lab = np.flatnonzero(np.isfinite(y))
        if len(lab) < args.shots + 2:
            raise LatencyModelError(f"{args.data}: column {args.target!r} has {len(lab)} measured architectures; "
                                    f"--shots {args.shots} needs at least {args.shots + 2} (shots + 2 to score)")
        if args.target in pred.devices:
            print(f"note: the model was trained on {args.target!r}: this is not a held-out score", file=sys.stderr)
        pick = lab[pred._choose(codes[lab], args.shots, args.shot_rule, args.seed)]
        pred._adapt_codes(codes[pick], np.log(y[pick]))
        t_adapt = time.perf_counter()
        p_all = np.exp(pred.predict_log(codes))
        out["predict_s"] = time.perf_counter() - t_adapt
        rest = np.setdiff1d(lab, pick)
        m = latency_metrics(p_all[rest], y[rest])
        out.update(m)
        out.update(target=args.target, data=args.data,
                   measured={nb201_strings(codes[[i]])[0]: float(y[i]) for i in pick})
        print(f"adapted to {args.target} from {len(pick)} architectures ({args.shot_rule} shots); "
              f"scored on the {len(rest)} others:")
        _report(m)
        if args.predictions:
            strs = nb201_strings(codes)
            shot_set = set(pick.tolist())
            _io.write_csv(args.predictions,
                          ([int(ix), s, f"{p:.6g}", "" if not np.isfinite(t) else f"{t:.6g}", int(i in shot_set)]
                           for i, (ix, s, p, t) in enumerate(zip(ds.index.tolist(), strs, p_all, y))),
                          header=["index", "arch_str", "predicted_ms", args.target, "shot"])
            print(f"wrote {args.predictions}")
    if isinstance(pred, LatencyPredictor) and pred.outliers is not None and pred.outliers.any():
        dropped = nb201_strings(pred.shots[pred.outliers])
        out["dropped_as_outliers"] = dropped
        print(f"note: {len(dropped)} shot(s) set aside as failed measurements (far from what the others "
              f"predict): {', '.join(dropped)}", file=sys.stderr)
    out["wall_s"] = time.perf_counter() - t0
    if args.json:
        _io.write_json(args.json, _strict(out), allow_nan=False)
        print(f"wrote {args.json}")
    return 0


def _adapt_graph(pred: GraphLatencyPredictor, args, out: dict) -> None:
    """``fgp latency-adapt`` with a graph-space model: shots from the file's column, adapt, score."""
    from fgp_ext import _io

    if args.measure or args.validate:
        raise LatencyModelError(f"--measure builds NAS-Bench-201 networks; this latency model is of the graph "
                                f"space {pred.space!r}: give --data FILE --target COLUMN")
    if not args.data or not args.target:
        raise LatencyModelError("fgp latency-adapt needs --data FILE and --target COLUMN")
    ds = _model_data(args.data, "--data", nb201_only=False)
    if args.target not in ds.target_names:
        raise LatencyModelError(f"unknown column {args.target!r} in {args.data}; columns: {ds.target_names}")
    F = pred.features(ds, f"--data {args.data}")
    y = ds.targets(args.target)
    bad = np.flatnonzero(np.isinf(y) | (y <= 0))
    if bad.size:
        raise LatencyModelError(f"{args.data}: architecture {int(bad[0])} has {args.target} = {y[bad[0]]}; "
                                f"latencies must be > 0 and finite (null or NaN = not measured)")
    lab = np.flatnonzero(np.isfinite(y))
    if len(lab) < args.shots + 2:
        raise LatencyModelError(f"{args.data}: column {args.target!r} has {len(lab)} measured architectures; "
                                f"--shots {args.shots} needs at least {args.shots + 2} (shots + 2 to score)")
    if args.target in pred.devices:
        print(f"note: the model was trained on {args.target!r}: this is not a held-out score", file=sys.stderr)
    if args.target in pred.schema.cheap:
        raise LatencyModelError(f"--target {args.target!r} is one of the model's feature columns")
    pick = lab[pred._choose(F[lab], args.shots, args.shot_rule, args.seed)]
    pred._adapt_F(F[pick], np.log(y[pick]))
    t_adapt = time.perf_counter()
    p_all = np.exp(pred.predict_log_F(F))
    out["predict_s"] = time.perf_counter() - t_adapt
    rest = np.setdiff1d(lab, pick)
    m = latency_metrics(p_all[rest], y[rest])
    out.update(m)
    names = [n if n else f"#{i}" for i, n in enumerate(ds.names)]
    out.update(target=args.target, data=args.data, space=pred.space,
               measured={names[i]: float(y[i]) for i in pick})
    print(f"adapted to {args.target} from {len(pick)} architectures ({args.shot_rule} shots); "
          f"scored on the {len(rest)} others:")
    _report(m)
    if pred.outliers is not None and pred.outliers.any():
        dropped = [names[i] for i in pick[pred.outliers]]
        out["dropped_as_outliers"] = dropped
        print(f"note: {len(dropped)} shot(s) set aside as failed measurements (far from what the others "
              f"predict): {', '.join(dropped)}", file=sys.stderr)
    if args.predictions:
        shot_set = set(pick.tolist())
        _io.write_csv(args.predictions,
                      ([int(ix), names[i], f"{p:.6g}", "" if not np.isfinite(t) else f"{t:.6g}", int(i in shot_set)]
                       for i, (ix, p, t) in enumerate(zip(ds.index.tolist(), p_all, y))),
                      header=["index", "name", "predicted_ms", args.target, "shot"])
        print(f"wrote {args.predictions}")


def add_latency_model_parsers(subparsers) -> None:
    """Add ``latency-train`` and ``latency-adapt`` to an ``argparse`` subparsers object."""
    from fgp_ext import _args

    p = subparsers.add_parser("latency-train", help="train the few-shot latency predictor over source devices",
                              description="Train the few-shot latency predictor on the lat_* columns of "
                                          "NAS-Bench-201 data or of a graph-space file (fgp_ext.latency_model).")
    p.add_argument("--data", default="nb201", help="'nb201' (embedded, 9 latency columns; default), a CSV/JSON "
                                                   "file of NB201 cells with lat_* columns, or a JSONL/JSON/CSV file "
                                                   "of any graph space (ops + edges) with lat_* columns")
    p.add_argument("--devices", default=None, help="comma-separated source columns (default: every lat_* column)")
    p.add_argument("--cheap-columns", default=None,
                   help="graph-space files: comma-separated numeric columns read as features (params, flops...; "
                        "default: every non-lat_* column with a value for every architecture; '' for none)")
    p.add_argument("--no-tune", action="store_true", help="default prior scales, no leave-one-device-out search")
    p.add_argument("--seed", type=_args.seed, default=0, help="shot draws of the prior-scale search (0)")
    p.add_argument("--threads", type=_args.threads, default=1, help="torch intra-op threads (1)")
    p.add_argument("--out", required=True, help="model file to write (.npz)")
    p.set_defaults(func=cmd_latency_train)

    p = subparsers.add_parser("latency-adapt", help="adapt the latency predictor to a device from K measurements",
                              description="Adapt a trained latency predictor to a device from --shots measured "
                                          "architectures (taken from --data's --target column, or measured "
                                          "on this machine with --measure), predict the others and score them.")
    p.add_argument("--model", required=True, help="model written by fgp latency-train")
    p.add_argument("--data", default=None, help="file holding the --target column: NB201 cells, or the graph "
                                                "space the model was trained on")
    p.add_argument("--target", default=None, help="the device's latency column (ms)")
    p.add_argument("--shots", type=_args.positive_int, default=10, help="measured architectures K (10)")
    p.add_argument("--shot-rule", choices=["design", "random"], default="design",
                   help="which architectures are measured: the method's design (default; on the full NB201 "
                        "table the model's shipped reference cells) or a seeded random sample")
    p.add_argument("--seed", type=_args.seed, default=0, help="seed of random shots and of --validate (0)")
    p.add_argument("--json", default=None, help="write spearman, kendall, mape, acc10 (top-level keys) and more")
    p.add_argument("--predictions", default=None, help="write every architecture's predicted latency (CSV)")
    m = p.add_argument_group("measuring on this machine")
    m.add_argument("--measure", action="store_true",
                   help="measure the shots on this CPU (fgp_ext.latency probe) and predict all 15,625 cells")
    m.add_argument("--validate", type=_args.non_negative_int, default=0,
                   help="with --measure: also measure N other random cells and score the predictions")
    m.add_argument("--batch-size", type=_args.positive_int, default=1)
    m.add_argument("--warmup", type=_args.non_negative_int, default=3)
    m.add_argument("--repeats", type=_args.positive_int, default=10)
    m.add_argument("--measure-threads", type=_args.threads, default=1, help="threads of the measurement (1)")
    p.add_argument("--threads", type=_args.threads, default=1, help="torch intra-op threads (1)")
    p.set_defaults(func=cmd_latency_adapt)
