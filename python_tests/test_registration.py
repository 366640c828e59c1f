"""Every op is registered for CPU, CUDA (compiled kernel or composite fallback) and Meta (fake)."""
from __future__ import annotations

import pytest
import torch

from fgp_ext import ops

OPS = ["segment_sum_csr", "gather_segment_sum", "edge_dot", "csr_transpose", "topo_levels", "flow_surrogate",
       "level_schedule", "flow_pairs", "gather_attention", "gather_attention_backward", "flow_pass", "flow_pass_train",
       "flow_pass_backward", "select_graphs", "dot_attention", "dot_attention_backward",
       "gated_aggregate", "gated_aggregate_backward", "dropout"]
# ops whose fake kernels are exercised here (the data-dependent-size ones go through torch.compile in opcheck)
META_OPS = OPS[:6] + ["gather_attention", "flow_pass", "gated_aggregate"]


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("key", ["CPU", "CUDA"])
def test_kernel_registered(name, key):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fgp::{name}", key), f"fgp::{name} has no {key} kernel"


def test_flow_pass_has_a_cpp_autograd_kernel():
    assert torch._C._dispatch_has_kernel_for_dispatch_key("fgp::flow_pass", "Autograd")


@pytest.mark.parametrize("name", META_OPS)
def test_meta_tensors_give_shapes(name):
    m = torch.device("meta")
    idx = torch.empty(5, dtype=torch.int64, device=m)
    ptr = torch.empty(4, dtype=torch.int64, device=m)
    x = torch.empty(6, 3, device=m)
    calls = {
        "segment_sum_csr": lambda: ops.segment_sum_csr(torch.empty(5, 3, device=m), ptr),
        "gather_segment_sum": lambda: ops.gather_segment_sum(x, idx, ptr),
        "edge_dot": lambda: ops.edge_dot(torch.empty(3, 3, device=m), x, idx, ptr),
        "csr_transpose": lambda: ops.csr_transpose(idx, ptr, 6).indptr,
        "topo_levels": lambda: ops.topo_levels(ptr, idx, torch.empty(2, dtype=torch.int64, device=m)),
        "flow_surrogate": lambda: ops.flow_surrogate(
            torch.empty(3, dtype=torch.int64, device=m), ptr, idx, torch.empty(2, dtype=torch.int64, device=m),
            torch.empty(3, dtype=torch.bool, device=m), torch.empty(4, device=m), torch.empty(2, 4, device=m),
            torch.empty(8, 4, device=m)),
        "gather_attention": lambda: ops.gather_attention(torch.empty(6, 2, 3, device=m), torch.empty(5, 2, device=m),
                                                         idx, ptr),
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
    names = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("fgp::"))
    assert len(names) >= 10, names
    for name in names:
        cuda = [line for line in torch._C._dispatch_dump(name).splitlines() if line.startswith("CUDA:")]
        assert len(cuda) == 1, f"{name} has no CUDA kernel"
        from_python = "torch/library.py" in cuda[0]
        assert from_python != ops.CUDA_KERNELS, (name, cuda[0])
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the CUDA path is verified by compilation only")
    x = torch.randn(4, 3, device="cuda")
    out = ops.gather_segment_sum(x, torch.tensor([0, 3], device="cuda"), torch.tensor([0, 1, 2], device="cuda"))
    torch.testing.assert_close(out.cpu(), x.cpu()[[0, 3]])
