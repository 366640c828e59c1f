"""Loads the compiled op library (``fgp_ext/_fgp_ops.so``), which registers ``torch.ops.fgp.*``.

The library is plain C++ on PyTorch's stable ABI (no Python symbols, no pybind11): one file works
with every CPython and every torch from 2.10 on, and is loaded with :func:`torch.ops.load_library`.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

LIBRARY_NAME = "_fgp_ops.so"
#: The oldest torch whose stable ABI the library was compiled for (CMake's TORCH_TARGET_VERSION).
MIN_TORCH = (2, 10)


def _library_path() -> Path:
    override = os.environ.get("FGP_OPS_LIBRARY")  # another build of the library (scripts/sanitize.sh)
    if override:
        if not Path(override).is_file():
            raise ImportError(f"FGP_OPS_LIBRARY={override} is not a file")
        return Path(override)
    beside = Path(__file__).resolve().parent.parent / LIBRARY_NAME
    if beside.is_file():  # an installed wheel, or a build copied into the source tree
        return beside
    # An editable install (scikit-build-core's redirect mode) maps the built file from its build
    # folder; its finder answers for the module name derived from the file name.
    spec = importlib.util.find_spec(f"fgp_ext.{LIBRARY_NAME.split('.')[0]}")
    if spec is not None and spec.origin and Path(spec.origin).is_file():
        return Path(spec.origin)
    raise ImportError(f"fgp_ext: the compiled op library {LIBRARY_NAME} was not found next to {beside.parent} "
                      "(was the package built? `pip install .` or `bash scripts/setup.sh`)")


def _load() -> Path:
    path = _library_path()
    try:
        torch.ops.load_library(str(path))
    except OSError as err:
        version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2] if p.isdigit())
        if version < MIN_TORCH:
            raise ImportError(f"fgp_ext needs torch >= {MIN_TORCH[0]}.{MIN_TORCH[1]} (its ops use the stable ABI of "
                              f"that release); this is torch {torch.__version__}") from err
        raise
    return path


#: Where the loaded library lives.
LIBRARY_PATH: Path = _load()

#: True when the library carries compiled CUDA kernels (read from the dispatcher before any Python
#: fallback is registered): built against a CUDA torch with nvcc present.
CUDA_KERNELS: bool = bool(torch._C._dispatch_has_kernel_for_dispatch_key("fgp::segment_sum_csr", "CUDA"))

#: ``torch.ops.fgp``: the raw ops.
ops = torch.ops.fgp


def public_op_names() -> list[str]:
    """Every op the library registers in the ``fgp`` namespace whose name does not start with
    ``_`` (backward and internal ops do), read from the dispatcher."""
    return sorted(n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names()
                  if n.startswith("fgp::") and not n.split("::", 1)[1].startswith("_"))
