"""Zero-cost proxies of real networks (:mod:`fgp_ext.networks`), data-free or on synthetic inputs.

Proxies (all "higher = predicted better" except where noted; names as in NASLib's published data):

``params``     number of parameters (units; the published files use millions).
``flops``      forward FLOPs per image, counted with the torchstat/tensorwatch convention that
               NASLib used for its published ``flops`` (conv: ``k*k*C_in/groups*C_out*H_out*W_out``
               (+bias); BN: 2 per input element (affine) else 1; ReLU: 1 per element; Avg/MaxPool:
               ``k*k`` per output element; adaptive avg pool: ``C*(dy+1)*(dx+1)`` per output cell;
               Linear: ``in*out`` (no bias term)). Units: FLOPs (published: millions).
``synflow``    SynFlow: all weights made positive, float64, BN in eval mode (fresh statistics, i.e.
               identity), input = all-ones image; ``sum |w * dR/dw|`` over Conv/Linear weights with
               ``R = sum(output)``. Reported as ``log(max(sum, 1))`` (it spans hundreds of orders of
               magnitude; ranks are unchanged). Data-free.
``nwot``       NASWOT: binary codes of every ReLU input over a batch; ``K = sum c c^T + (1-c)(1-c)^T``;
               ``log|det K|`` (0 when K is singular, e.g. no ReLU input depends on the image).
``jacov``      Jacobian covariance: ``J = d sum(out)/d x`` per image; eigenvalues ``v`` of the
               correlation matrix of ``J``; ``-sum(log(v + 1e-5) + 1/(v + 1e-5))``.
``grad_norm``  ``sum ||dL/dw||_2`` over Conv/Linear weights, cross-entropy ``L`` on random labels.
``snip``       ``sum |w * dL/dw|`` over Conv/Linear weights (same loss).
``meco``       MeCo (Jiang et al., NeurIPS 2023): one forward pass of ONE standard-normal image
               (train-mode BN, no gradient); for the output of every module, the Pearson
               correlation matrix of its channels over the spatial positions (a channel with no
               variance gets a zero row and column); the score is the sum over modules of that
               matrix's smallest eigenvalue. Data-free; running BN statistics are left untouched.

nwot, jacov, grad_norm and snip share one forward pass (train-mode BN) on a synthetic batch (standard
normal images, random labels, fixed seed) and two backward passes; synflow and FLOPs share one
batch-1 pass on a float64 copy. Networks are initialised with ``torch.manual_seed(seed)`` right
before construction (PyTorch default init), so results are deterministic for a fixed seed.

NAS-Bench-201 for all 15,625 cells: :func:`nb201_all_proxies` computes params/FLOPs once per op
multiset and every other proxy once per *isomorphism class* of cells (``none`` edges carry
nothing, so when edge 1->2 is ``none`` swapping intermediate nodes 1 and 2 gives the same network
with its parameters permuted), with a shared slot-seeded weight bank and a small synthetic batch
(16 images of 16x16 by default); see its docstring.
:func:`load_nb201_proxies` returns the shipped table (``fgp_ext/data/nb201_proxies.npz``, made by
``scripts/compute_nb201_proxies.py``), aligned with ``formats.load("nb201")``.

Default auxiliary target of FGP pre-training on NB201 (``--aux-target auto``):
:data:`DEFAULT_AUX_TARGET` (MeCo, also the best single proxy :data:`DEFAULT_AUX_PROXY`).
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PROXIES", "CHEAP_PROXIES", "DEFAULT_AUX_PROXY", "DEFAULT_AUX_TARGET", "compute_proxies", "count_flops",
    "synthetic_batch", "nb201_canonical", "nb201_all_proxies", "load_nb201_proxies",
    "nb201_proxy", "NB201_PROXIES_FILE",
]

#: every proxy name, in table order
PROXIES: tuple[str, ...] = ("params", "flops", "synflow", "nwot", "jacov", "grad_norm", "snip",
                            "meco")
#: proxies that need no gradient and no data (instant)
CHEAP_PROXIES: tuple[str, ...] = ("params", "flops")
#: The best single shipped proxy (and :func:`nb201_proxy`'s default): MeCo, the proxy with the best rank
#: correlation with CIFAR-10 test accuracy (200 epochs) over all 15,625 NB201 cells in the shipped
#: table: Kendall 0.722 / Spearman 0.900 (its paper reports Spearman 0.89; synflow 0.584 / 0.778,
#: params 0.578 / 0.753, flops 0.541 / 0.732, nwot 0.510 / 0.693, jacov 0.507 / 0.682, snip 0.498 /
#: 0.667, grad_norm 0.496 / 0.667). Data-free: one forward pass of one random image, ~55 ms per
#: NB201 network on one core. Outside NB201, ``params`` is the free runner-up.
DEFAULT_AUX_PROXY = "meco"
#: What ``--aux-target auto`` uses on NB201: MeCo (chosen from its paper's NB201 result, then
#: confirmed on ours). It beats the zero-cost "vote" of Abdelfattah et al., 2021
#: (``synflow+jacov+snip``, Kendall 0.662) and adding it to MeCo gains nothing (0.726). FGP follows the
#: proxy's quality (results/fgp_nb201.md).
DEFAULT_AUX_TARGET = "meco"
NB201_PROXIES_FILE = "nb201_proxies.npz"

_GRAD_PROXIES = frozenset({"nwot", "jacov", "grad_norm", "snip"})
#: MeCo's input image seed offset (one image, drawn like :func:`synthetic_batch`'s)
_MECO_SEED_OFFSET = 104_729


def _check_names(names) -> list[str]:
    if names is None:
        return list(PROXIES)
    if isinstance(names, str):
        names = [names]
    out = list(names)
    bad = [n for n in out if n not in PROXIES]
    if bad:
        raise ValueError(f"unknown proxy name(s) {bad}; known: {list(PROXIES)}")
    if not out:
        raise ValueError("no proxy requested")
    return out


def _pos_int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{what} must be a positive integer, got {v!r}")
    return int(v)


def synthetic_batch(batch_size: int = 32, input_shape: Sequence[int] = (3, 32, 32),
                    num_classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic synthetic data: standard normal images and uniform random labels."""
    batch_size = _pos_int(batch_size, "batch_size")
    g = torch.Generator().manual_seed(int(seed) + 7919)
    x = torch.randn((batch_size, *input_shape), generator=g)
    y = torch.randint(0, num_classes, (batch_size,), generator=g)
    return x, y


# ----------------------------------------------------------------------------------------------
# FLOPs


def _flop_hook(acc: list):
    def hook(m, inp, out):
        x = inp[0]
        b = x.shape[0]
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            hw = out.shape[2] * out.shape[3]
            f = k * x.shape[1] * (m.out_channels // m.groups) * hw
            if m.bias is not None:
                f += m.out_channels * hw
            acc[0] += f
        elif isinstance(m, nn.BatchNorm2d):
            acc[0] += (2 if m.affine else 1) * x[0].numel()
        elif isinstance(m, nn.ReLU):
            acc[0] += x[0].numel()
        elif isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
            ks = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            ks2 = ks * ks if isinstance(m.kernel_size, int) else m.kernel_size[0] * m.kernel_size[1]
            acc[0] += out[0].numel() * ks2
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            h, w = x.shape[2], x.shape[3]
            oh, ow = out.shape[2], out.shape[3]
            f = 0
            for i in range(oh):
                dy = math.ceil((i + 1) * h / oh) - math.floor(i * h / oh)
                for j in range(ow):
                    dx = math.ceil((j + 1) * w / ow) - math.floor(j * w / ow)
                    f += (dy + 1) * (dx + 1)
            acc[0] += x.shape[1] * f
        elif isinstance(m, nn.Linear):
            acc[0] += m.in_features * m.out_features
        del b
    return hook


_FLOP_TYPES = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.AvgPool2d, nn.MaxPool2d,
               nn.AdaptiveAvgPool2d, nn.Linear)


class _ModesRestored:
    """Restores every submodule's train/eval flag on exit (``model.train(was)`` alone would reset
    a deliberately frozen submodule, e.g. an eval-mode BatchNorm inside a training model)."""

    def __init__(self, model: nn.Module):
        self.flags = [(m, m.training) for m in model.modules()]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for m, flag in self.flags:
            m.training = flag
        return False


def _attach_flop_hooks(model: nn.Module, acc: list) -> list:
    hook = _flop_hook(acc)
    return [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _FLOP_TYPES)]


def count_flops(model: nn.Module, input_shape: Sequence[int] = (3, 32, 32)) -> int:
    """FLOPs per image (convention in the module docstring); runs one batch-1 forward pass."""
    acc = [0]
    hooks = _attach_flop_hooks(model, acc)
    try:
        with _ModesRestored(model):
            model.eval()
            p = next(model.parameters(), None)
            dtype = p.dtype if p is not None else torch.float32
            with torch.no_grad():
                model(torch.zeros((1, *input_shape), dtype=dtype))
    finally:
        for h in hooks:
            h.remove()
    return int(acc[0])


# ----------------------------------------------------------------------------------------------
# proxies on one network


def _weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _synflow(model: nn.Module, input_shape) -> float:
    """SynFlow via ``torch.func.functional_call`` on |parameters| in float64: the module itself is
    not modified (no copy needed); BN runs in eval mode with fresh statistics (identity)."""
    from torch.func import functional_call

    params = {n: p.detach().double().abs().requires_grad_(True)
              for n, p in model.named_parameters()}
    buffers = {}
    for n, b in model.named_buffers():
        if n.endswith("running_var"):
            buffers[n] = torch.ones_like(b, dtype=torch.float64)
        elif n.endswith("running_mean"):
            buffers[n] = torch.zeros_like(b, dtype=torch.float64)
        elif b.is_floating_point():
            buffers[n] = b.double()
        else:
            buffers[n] = b
    with _ModesRestored(model):
        model.eval()
        y = functional_call(model, {**params, **buffers},
                            (torch.ones((1, *input_shape), dtype=torch.float64),))
        if isinstance(y, tuple):
            y = y[0]
        names = [f"{mn}.weight" if mn else "weight" for mn, m in model.named_modules()
                 if isinstance(m, (nn.Conv2d, nn.Linear))]
        ws = [params[n] for n in names if n in params]
        if not ws or not y.requires_grad:
            return 0.0
        grads = torch.autograd.grad(y.sum(), ws, allow_unused=True)
        tot = 0.0
        for w, g in zip(ws, grads):
            if g is not None:
                tot += float((w.detach() * g).abs().sum())
    return math.log(max(tot, 1.0))


def _channel_correlation(feat: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of the rows of ``feat`` [C, P] in float64. A row with zero variance
    gets a zero row and column (diagonal included), as ``corrcoef``'s NaNs zeroed would give."""
    f = feat.double()
    f = f - f.mean(dim=1, keepdim=True)
    norm = f.norm(dim=1)
    live = norm > 0
    f = torch.where(live[:, None], f / norm.clamp_min(torch.finfo(torch.float64).tiny)[:, None],
                    torch.zeros_like(f))
    # non-finite activations (a diverging network) would make the eigensolver fail: such entries
    # count as no correlation, as the published recipe's NaN/inf -> 0 does
    return torch.nan_to_num((f @ f.t()).clamp_(-1.0, 1.0), nan=0.0)


def _meco(model: nn.Module, input_shape, seed: int) -> float:
    """MeCo: sum over module outputs of the smallest eigenvalue of the channel correlation matrix
    of the first (only) image. Runs through ``functional_call`` with copied buffers so train-mode
    BatchNorm does not touch the module's running statistics; dropout is switched off (MeCo is
    deterministic for a seed) and the global RNG is left as it was."""
    from torch.func import functional_call

    p = next(model.parameters(), None)
    g = torch.Generator().manual_seed(int(seed) + _MECO_SEED_OFFSET)
    x = torch.randn((1, *input_shape), generator=g)
    if p is not None:  # the network's dtype and device
        x = x.to(dtype=p.dtype if p.is_floating_point() else x.dtype, device=p.device)
    mats: dict[int, list[torch.Tensor]] = {}

    def hook(m, inp, out):
        o = out[0] if isinstance(out, (tuple, list)) and len(out) else out
        # channels x positions of the first image. Skipped: vectors (logits, pooled features: one
        # position per channel, no correlation to measure) and single-channel maps (a 1x1 matrix,
        # eigenvalue 1 for every network, which the published code cannot evaluate either)
        if not torch.is_tensor(o) or o.dim() < 3 or o.shape[0] < 1:
            return
        f = o[0].detach().reshape(o.shape[1], -1)
        if f.shape[0] < 2 or f.shape[1] < 2:
            return
        mats.setdefault(f.shape[0], []).append(_channel_correlation(f))

    hooks = [m.register_forward_hook(hook) for m in model.modules()]
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    try:
        with _ModesRestored(model), torch.random.fork_rng(devices=[]), torch.no_grad():
            model.train()
            for m in model.modules():
                if isinstance(m, nn.modules.dropout._DropoutNd):
                    m.eval()
            try:
                functional_call(model, buffers, (x,), strict=False)
            except (RuntimeError, ValueError, TypeError, IndexError) as e:
                raise RuntimeError(f"MeCo: the forward pass of one image of shape {list(x.shape)} "
                                   f"(train-mode BatchNorm, batch 1) failed: {e}") from e
    finally:
        for h in hooks:
            h.remove()
    # one batched symmetric eigensolve per channel count instead of one call per module
    return float(sum(torch.linalg.eigvalsh(torch.stack(lst))[:, 0].sum() for lst in mats.values()))


def _jacov_score(jac: torch.Tensor) -> float:
    j = jac.reshape(jac.shape[0], -1).double()
    corr = torch.corrcoef(j)
    corr = torch.nan_to_num(corr, nan=0.0)
    v = torch.linalg.eigvalsh(corr)
    k = 1e-5
    return float(-(torch.log(v.clamp_min(0) + k) + 1.0 / (v.clamp_min(0) + k)).sum())


def _grad_proxies(model: nn.Module, x: torch.Tensor, y: torch.Tensor, names: set) -> dict:
    model.train()
    model.zero_grad(set_to_none=True)
    out: dict[str, float] = {}
    hooks = []
    K = None
    if "nwot" in names:
        K = torch.zeros((x.shape[0], x.shape[0]), dtype=torch.float64)

        def relu_hook(m, inp, o):
            c = (inp[0].detach().reshape(inp[0].shape[0], -1) > 0).float()
            # c c^T + (1-c)(1-c)^T = 2 c c^T - s_i - s_j + n  (s = row sums): one matmul;
            # float32 sums of 0/1 products are exact below 2^24 elements per ReLU
            cc = (c @ c.t()).double()
            rs = c.sum(1, dtype=torch.float64)
            K.add_(2.0 * cc - rs[:, None] - rs[None, :] + c.shape[1])

        hooks = [m.register_forward_hook(relu_hook) for m in model.modules()
                 if isinstance(m, nn.ReLU)]
    need_grad = bool(names & {"jacov", "grad_norm", "snip"})
    xin = x.clone().requires_grad_("jacov" in names)
    try:
        with torch.set_grad_enabled(need_grad):
            logits = model(xin)
            if isinstance(logits, tuple):
                logits = logits[0]
    finally:
        for h in hooks:
            h.remove()
    if K is not None:
        sign, logdet = torch.linalg.slogdet(K)
        # singular K (no ReLU input depends on the image, e.g. an NB201 cell without any conv on
        # a live path): the worst score, 0 (a non-singular K of counts has log|det| >> 0)
        out["nwot"] = float(logdet) if float(sign) != 0 and math.isfinite(float(logdet)) else 0.0
    if "jacov" in names:
        if logits.requires_grad:
            (jac,) = torch.autograd.grad(logits.sum(), xin, allow_unused=True,
                                         retain_graph=bool(names & {"grad_norm", "snip"}))
        else:
            jac = None
        # output independent of the input (e.g. an NB201 cell whose output node only has `none`
        # inputs): zero Jacobian, the worst possible score
        out["jacov"] = _jacov_score(torch.zeros_like(xin) if jac is None else jac)
    if names & {"grad_norm", "snip"}:
        loss = F.cross_entropy(logits, y)
        if loss.requires_grad:
            loss.backward()
        gn = sn = 0.0
        for m in _weight_layers(model):
            g = m.weight.grad
            if g is None:
                continue
            gn += float(g.norm())
            sn += float((m.weight.detach() * g).abs().sum())
        if "grad_norm" in names:
            out["grad_norm"] = gn
        if "snip" in names:
            out["snip"] = sn
    model.zero_grad(set_to_none=True)
    return out


def _timed(timings: dict | None, key: str, fn, *args):
    """``fn(*args)``, adding its wall time to ``timings[key]`` when ``timings`` is a dict."""
    t0 = time.perf_counter()
    out = fn(*args)
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
    return out


def compute_proxies(model: nn.Module, names: Iterable[str] | None = None, *,
                    batch: tuple[torch.Tensor, torch.Tensor] | None = None, batch_size: int = 32,
                    input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10,
                    seed: int = 0, flops_shape: Sequence[int] | None = None,
                    meco_shape: Sequence[int] | None = None,
                    timings: dict | None = None) -> dict[str, float]:
    """Zero-cost proxies of one network (``names``: subset of :data:`PROXIES`, default all).

    ``batch``: ``(images, labels)`` to use instead of :func:`synthetic_batch` (``batch_size``,
    ``seed``). ``input_shape``: one image's shape for the data-dependent proxies and SynFlow;
    ``flops_shape`` / ``meco_shape`` (default ``input_shape``) the ones FLOPs and MeCo use
    (MeCo depends on the channels-to-positions ratio, so give it the network's native input
    size). MeCo's one image is always its own standard-normal draw from ``seed`` (``batch`` is not
    used by it). The network's
    parameters are not modified (SynFlow uses ``functional_call`` on |w|); gradients are cleared
    afterwards. ``timings`` (a dict) accumulates seconds per pass (``"grad_pass"``,
    ``"synflow_pass"``, ``"meco_pass"``, ``"flops_pass"``). Returns ``{name: float}``.
    """
    want = _check_names(names)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    res: dict[str, float] = {}
    if "params" in want:
        res["params"] = float(sum(p.numel() for n, p in model.named_parameters()
                                  if "auxiliary" not in n))
    gset = set(want) & _GRAD_PROXIES
    if gset:
        if batch is None:
            batch = synthetic_batch(batch_size, input_shape, num_classes, seed)

        def grad_pass():
            with _ModesRestored(model):
                return _grad_proxies(model, batch[0], batch[1], gset)

        res.update(_timed(timings, "grad_pass", grad_pass))
    if "synflow" in want:
        res["synflow"] = _timed(timings, "synflow_pass", _synflow, model, input_shape)
    if "meco" in want:
        res["meco"] = _timed(timings, "meco_pass", _meco, model, meco_shape or input_shape, seed)
    if "flops" in want:
        res["flops"] = float(_timed(timings, "flops_pass", count_flops, model, flops_shape or input_shape))
    return {k: res[k] for k in want}


# ----------------------------------------------------------------------------------------------
# NAS-Bench-201: all cells


def nb201_canonical(ops: Sequence[str]) -> tuple[str, ...]:
    """Canonical representative (six edge ops, string order) of an NB201 cell's isomorphism class.

    Edge order: 0->1, 0->2, 1->2, 0->3, 1->3, 2->3. When 1->2 is ``none``, nodes 1 and 2 are
    interchangeable (swap 0->1 with 0->2 and 1->3 with 2->3); the canonical form is the smaller
    of the two tuples.
    """
    ops = tuple(ops)
    if len(ops) != 6:
        raise ValueError(f"NB201 cell needs 6 edge ops, got {len(ops)}")
    if ops[2] != "none":
        return ops
    sw = (ops[1], ops[0], ops[2], ops[3], ops[5], ops[4])
    return min(ops, sw)


class _WeightBank:
    """Module factory for :class:`~fgp_ext.networks.nb201.NB201Network`: the module of each slot
    (stem, reduction blocks, head, and every (cell, edge, op)) is built once, seeded by
    ``(seed, slot)``, and shared by every network that uses it (common random numbers)."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self.modules: dict[str, nn.Module] = {}

    def __call__(self, slot: str, build):
        m = self.modules.get(slot)
        if m is None:
            import zlib

            torch.manual_seed((self.seed * 1_000_003 + zlib.crc32(slot.encode())) % (2 ** 63))
            m = self.modules[slot] = build()
        return m


def nb201_all_proxies(arch_strs: Sequence[str], names: Iterable[str] | None = None, *,
                      batch_size: int = 16, resolution: int = 16, seed: int = 0,
                      meco_resolution: int = 32, progress: bool = False,
                      timings: dict | None = None
                      ) -> dict[str, np.ndarray]:
    """Proxies of many NB201 cells (the fast path used for the shipped table).

    * ``params`` / ``flops`` depend only on the multiset of the six ops: computed once per
      multiset at the real 32x32 input (exact, equal to the published values).
    * the other proxies are computed once per isomorphism class (:func:`nb201_canonical`) on a
      synthetic batch of ``batch_size`` images of ``resolution`` x ``resolution`` pixels (default
      16 x 16: 4x cheaper than 32 x 32; SynFlow is unchanged by it, rank correlations of the others
      change little), with weights from a shared, slot-seeded weight bank (every network that has a
      ``nor_conv_3x3`` on edge 1->2 of cell 7 uses the same tensor), so differences between
      cells come from the architecture, not from the draw.
    * ``meco`` uses one image of ``meco_resolution`` pixels (default 32, the networks' native
      input: its matrices compare channel counts with spatial positions, so a smaller image would
      change which stages are rank-deficient).

    Returns ``{name: float64 [len(arch_strs)]}``; ``timings`` receives seconds per pass and the
    number of classes.
    """
    from fgp_ext.networks.nb201 import NB201Network, parse_nb201

    want = _check_names(names)
    batch_size = _pos_int(batch_size, "batch_size")
    resolution = _pos_int(resolution, "resolution")
    meco_resolution = _pos_int(meco_resolution, "meco_resolution")
    cells = [parse_nb201(s) for s in arch_strs]
    t = timings if timings is not None else {}
    out: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    cheap = [n for n in want if n in CHEAP_PROXIES]
    if cheap:
        ms_keys = [tuple(sorted(c)) for c in cells]
        cache: dict[tuple, dict] = {}
        for k in ms_keys:
            if k not in cache:
                cache[k] = compute_proxies(NB201Network(list(k)), cheap)
        for n in cheap:
            out[n] = np.array([cache[k][n] for k in ms_keys], dtype=np.float64)
        t["params+flops"] = time.perf_counter() - t0
        t["multisets"] = len(cache)
    rest = [n for n in want if n not in CHEAP_PROXIES]
    if rest:
        keys = [nb201_canonical(c) for c in cells]
        uniq = sorted(set(keys))
        pos = {k: i for i, k in enumerate(uniq)}
        vals = np.full((len(uniq), len(rest)), np.nan)
        batch = synthetic_batch(batch_size, (3, resolution, resolution), 10, seed)
        bank = _WeightBank(seed)
        t1 = time.perf_counter()
        for i, k in enumerate(uniq):
            tb = time.perf_counter()
            net = NB201Network(list(k), factory=bank)
            t["build"] = t.get("build", 0.0) + time.perf_counter() - tb
            r = compute_proxies(net, rest, batch=batch, input_shape=(3, resolution, resolution),
                                meco_shape=(3, meco_resolution, meco_resolution), seed=seed,
                                timings=t)
            vals[i] = [r[n] for n in rest]
            if progress and (i + 1) % 500 == 0:
                el = time.perf_counter() - t1
                print(f"  {i + 1}/{len(uniq)} classes, {el:.0f}s elapsed, "
                      f"~{el / (i + 1) * (len(uniq) - i - 1):.0f}s left", flush=True)
        t["classes"] = len(uniq)
        rows = np.array([pos[k] for k in keys], dtype=np.int64)
        for j, n in enumerate(rest):
            out[n] = vals[rows, j].copy()
    t["total"] = time.perf_counter() - t0
    return {n: out[n] for n in want}


def _read_shipped():
    from importlib import resources

    ref = resources.files("fgp_ext.data").joinpath(NB201_PROXIES_FILE)
    if not ref.is_file():
        raise FileNotFoundError(f"the NB201 proxy table {NB201_PROXIES_FILE} is not shipped with "
                                f"this installation; run scripts/compute_nb201_proxies.py")
    with ref.open("rb") as fh, np.load(fh, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


_CACHE: dict = {}


def load_nb201_proxies(names: Iterable[str] | None = None, *, dataset=None
                       ) -> dict[str, np.ndarray]:
    """The shipped NB201 proxies, aligned with ``formats.load("nb201")`` (or ``dataset``: any
    NB201 :class:`~fgp_ext.data.dataset.Dataset` whose ``index`` holds official indices).

    Returns ``{name: float64 [N]}`` (copies). The table is checked against the dataset: every
    official index must exist and its stored cell string must equal the dataset's cell.
    """
    want = _check_names(names)
    if "z" not in _CACHE:
        _CACHE["z"] = _read_shipped()
    z = _CACHE["z"]
    if dataset is None:
        from fgp_ext.data.formats import load

        dataset = load("nb201")
    from fgp_ext.data.spaces import nb201_to_string

    index = np.asarray(dataset.index, dtype=np.int64)
    table_index = z["index"].astype(np.int64)
    lookup = np.full(int(max(table_index.max(), index.max())) + 1, -1, dtype=np.int64)
    lookup[table_index] = np.arange(table_index.shape[0])
    if index.min() < 0 or (lookup[index] < 0).any():
        bad = index[(index < 0) | (lookup[np.clip(index, 0, None)] < 0)][:5]
        raise ValueError(f"NB201 indices {bad.tolist()} are not in the shipped proxy table")
    rows = lookup[index]
    strs = z["arch_str"][rows]
    for i in range(len(dataset)):
        s = nb201_to_string(dataset[i].ops)
        if s != strs[i]:
            raise ValueError(f"proxy table mismatch at official index {int(index[i])}: table has "
                             f"{strs[i]!r}, dataset has {s!r}")
    return {n: z[n][rows].astype(np.float64) for n in want}


def nb201_proxy(name: str = DEFAULT_AUX_PROXY, dataset=None) -> np.ndarray:
    """One shipped NB201 proxy by name (default :data:`DEFAULT_AUX_PROXY`), aligned with the
    dataset; e.g. ``pretrain(..., aux_target=nb201_proxy("nwot"))``."""
    return load_nb201_proxies([name], dataset=dataset)[name]
