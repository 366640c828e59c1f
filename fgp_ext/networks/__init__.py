"""Real PyTorch networks from architecture specs: NAS-Bench-201, NAS-Bench-101, DARTS/NAS-Bench-301.

:func:`build_network` dispatches on the space name; :func:`count_params` counts parameters (in
units, excluding an auxiliary head as DARTS/NAS-Bench-201 do). Parameter counts equal the
published ones (see the submodules and ``python_tests/test_networks.py``).
"""
from __future__ import annotations

from torch import nn

from fgp_ext.networks.darts import DartsNetwork
from fgp_ext.networks.nb101 import NB101Network
from fgp_ext.networks.nb201 import NB201Network

__all__ = ["NB201Network", "NB101Network", "DartsNetwork", "build_network", "count_params",
           "SPACES"]

SPACES = ("nb201", "nb101", "nb301")
_ALIASES = {"nb201": "nb201", "nasbench201": "nb201", "nb101": "nb101", "nasbench101": "nb101",
            "nb301": "nb301", "nasbench301": "nb301", "darts": "nb301"}


def _space(space) -> str:
    key = _ALIASES.get(str(space).strip().lower().replace("-", "").replace("_", "")) \
        if isinstance(space, str) else None
    if key is None:
        raise ValueError(f"unknown search space {space!r}; known: nb201, nb101, nb301 (darts)")
    return key


def build_network(space: str, spec, **kwargs) -> nn.Module:
    """Build the network of ``spec`` in ``space``.

    ``nb201``: cell string (or 6 op names, or a record with ``arch_str``); ``nb101``: a record
    ``{"matrix", "ops"}`` or a ``(matrix, ops)`` pair; ``nb301``/``darts``: a genotype (or a record
    with ``genotype``). ``kwargs`` go to the network class (e.g. ``C``, ``layers``,
    ``num_classes``). ``ValueError`` for a malformed spec.
    """
    key = _space(space)
    if key == "nb201":
        if isinstance(spec, dict):
            if "arch_str" not in spec:
                raise ValueError("NB201 record needs an 'arch_str' field")
            spec = spec["arch_str"]
        return NB201Network(spec, **kwargs)
    if key == "nb101":
        if isinstance(spec, dict):
            missing = [k for k in ("matrix", "ops") if k not in spec]
            if missing:
                raise ValueError(f"NB101 record is missing field(s) {missing}")
            return NB101Network(spec["matrix"], spec["ops"], **kwargs)
        if isinstance(spec, (tuple, list)) and len(spec) == 2:
            return NB101Network(spec[0], spec[1], **kwargs)
        raise ValueError("NB101 spec must be {'matrix': ..., 'ops': ...} or (matrix, ops)")
    return DartsNetwork(spec, **kwargs)


def count_params(model: nn.Module) -> int:
    """Number of parameters (units), excluding any ``auxiliary`` head."""
    return sum(p.numel() for n, p in model.named_parameters() if "auxiliary" not in n)
