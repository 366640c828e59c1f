"""Every op is registered for CPU, CUDA (compiled kernel or composite fallback) and Meta (fake)."""
from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from fgp_ext.sparse import CSR
from fgp_ext import ops

# Read from the dispatcher, not kept by hand: an op added to csrc/ops is checked here automatically.
ALL_OPS = sorted(n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("fgp::"))
PUBLIC_OPS = [n for n in ALL_OPS if not n.startswith("_")]
# The public ops that are composites of an internal op (no kernels of their own).
COMPOSITE_OPS = ["flow_pass"]
KERNEL_OPS = [n for n in ALL_OPS if n not in COMPOSITE_OPS]
# ops whose fake kernels are exercised here (the data-dependent-size ones go through torch.compile in opcheck)
META_OPS = ["segment_sum_csr", "gather_segment_sum", "edge_dot", "csr_transpose", "topo_levels", "flow_surrogate",
            "gather_attention", "flow_pass", "gated_aggregate"]


def test_the_library_registers_the_ops():
    assert len(PUBLIC_OPS) >= 14, PUBLIC_OPS
    assert set(META_OPS + COMPOSITE_OPS) <= set(ALL_OPS)
    # internal ops (backward passes, intermediates) are underscored, so the public list is the surface
    assert not [n for n in PUBLIC_OPS if "backward" in n or "forward" in n], PUBLIC_OPS


@pytest.mark.parametrize("name", KERNEL_OPS)
@pytest.mark.parametrize("key", ["CPU", "CUDA"])
def test_kernel_registered(name, key):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fgp::{name}", key), f"fgp::{name} has no {key} kernel"


@pytest.mark.parametrize("name", PUBLIC_OPS)
def test_public_op_has_a_documented_wrapper(name):
    """Every public op is exported by fgp_ext.ops under its own name, with a docstring."""
    assert name in ops.__all__, f"fgp::{name} has no wrapper in fgp_ext.ops.__all__"
    assert (getattr(ops, name).__doc__ or "").strip(), f"fgp_ext.ops.{name} has no docstring"
    assert name in ops.public_op_names()


@pytest.mark.parametrize("name", KERNEL_OPS)
def test_every_kernel_op_has_a_fake_kernel(name):
    entry = torch._library.simple_registry.singleton.find(f"fgp::{name}")
    assert entry.fake_impl.kernel is not None, f"fgp::{name} has no register_fake"


def test_flow_pass_is_a_composite_with_python_autograd():
    """No C++ autograd node: the public op decomposes into the internal forward, whose autograd
    formula is registered from Python (fgp_ext/ops/flow.py)."""
    assert torch._C._dispatch_has_kernel_for_dispatch_key("fgp::flow_pass", "CompositeImplicitAutograd")
    for key in ("CPU", "CUDA"):
        assert not torch._C._dispatch_has_kernel_for_dispatch_key("fgp::flow_pass", key)
    assert torch._C._dispatch_has_kernel_for_dispatch_key("fgp::_flow_pass_forward", "Autograd")


@pytest.mark.parametrize("name", META_OPS)
def test_meta_tensors_give_shapes(name):
    m = torch.device("meta")
    idx = torch.empty(5, dtype=torch.int64, device=m)
    ptr = torch.empty(4, dtype=torch.int64, device=m)
    x = torch.empty(6, 3, device=m)
    calls = {
        "segment_sum_csr": lambda: ops.segment_sum_csr(torch.empty(5, 3, device=m), ptr),
        "gather_segment_sum": lambda: ops.gather_segment_sum(x, CSR(ptr, idx)),
        "edge_dot": lambda: ops.edge_dot(torch.empty(3, 3, device=m), x, CSR(ptr, idx)),
        "csr_transpose": lambda: ops.csr_transpose(CSR(ptr, idx), 6).indptr,
        "topo_levels": lambda: ops.topo_levels(CSR(ptr, idx), torch.empty(2, dtype=torch.int64, device=m)),
        "flow_surrogate": lambda: ops.flow_surrogate(
            torch.empty(3, dtype=torch.int64, device=m), CSR(ptr, idx), torch.empty(2, dtype=torch.int64, device=m),
            torch.empty(3, dtype=torch.bool, device=m), torch.empty(4, device=m), torch.empty(2, 4, device=m),
            torch.empty(8, 4, device=m)),
        "gather_attention": lambda: ops.gather_attention(torch.empty(6, 2, 3, device=m), torch.empty(5, 2, device=m),
                                                         CSR(ptr, idx)),
        "flow_pass": lambda: torch.ops.fgp.flow_pass(
            torch.empty(6, 3, device=m), *(torch.empty(4, dtype=torch.int64, device=m) for _ in range(7)),
            torch.empty(3, device=m), torch.empty(3, device=m), torch.empty(1, device=m), torch.empty(9, 3, device=m),
            torch.empty(9, 3, device=m), torch.empty(9, device=m), torch.empty(9, device=m)),
        "gated_aggregate": lambda: ops.gated_aggregate(torch.empty(3, 2, device=m), x[:, :2], x[:, :2],
                                                       ops.CSR(ptr, idx)),
    }
    expected = {"segment_sum_csr": (3, 3), "gather_segment_sum": (3, 3), "edge_dot": (5,), "csr_transpose": (7,),
                "topo_levels": (3,), "flow_surrogate": (1, 4), "gather_attention": (3, 2, 3), "flow_pass": (6, 3),
                "gated_aggregate": (3, 2)}
    assert tuple(calls[name]().shape) == expected[name]


def test_cuda_fallback_flag_matches_build():
    """Every fgp op has a CUDA kernel: the compiled one when the module was built with CUDA, else
    the plain-PyTorch fallback registered from Python (never "no kernel for CUDA")."""
    if torch.version.cuda is None:
        assert ops.CUDA_KERNELS is False            # a CPU torch cannot have built CUDA kernels
    for name in (f"fgp::{n}" for n in KERNEL_OPS):
        cuda = [line for line in torch._C._dispatch_dump(name).splitlines() if line.startswith("CUDA:")]
        assert len(cuda) == 1, f"{name} has no CUDA kernel"
        from_python = "torch/library.py" in cuda[0]
        assert from_python != ops.CUDA_KERNELS, (name, cuda[0])
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the CUDA path is verified by compilation only")
    x = torch.randn(4, 3, device="cuda")
    out = ops.gather_segment_sum(x, CSR(torch.tensor([0, 1, 2], device="cuda"), torch.tensor([0, 3], device="cuda")))
    torch.testing.assert_close(out.cpu(), x.cpu()[[0, 3]])


def test_library_links_only_to_torchs_stable_c_abi():
    """The compiled library may take nothing from torch but its C shim (aoti_torch_* / torch_*): a
    C++ symbol of libtorch or c10 (at::, c10::, torch::) would tie the wheel to one torch release."""
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) not installed")
    out = subprocess.run([nm, "-D", "-C", "--undefined-only", str(ops.LIBRARY_PATH)], capture_output=True, text=True,
                         check=True).stdout
    symbols = [line.split(None, 1)[-1].strip() for line in out.splitlines() if line.strip()]
    assert any(s.startswith("torch_") for s in symbols), symbols  # the stable shim is what it uses
    from_torch_cpp = [s for s in symbols if s.startswith(("at::", "c10::", "torch::", "caffe2::", "aoti::"))
                      or " at::" in s or "c10::" in s or "torch::" in s]
    assert not from_torch_cpp, f"C++ symbols of torch (not its stable C ABI): {from_torch_cpp[:10]}"
