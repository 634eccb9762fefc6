"""Fused CPU kernels for the paper's network, compiled from C the first time they are used.

Where the time goes (benchmarks/README.md): at batch 5 and 257 x 257 px, PyTorch spends
most of a training step in the first two Conv3x3 + ReLU + MaxPool blocks, whose 3-8
channel maps suit neither oneDNN nor the NCHW max-pool kernel, and in the augmentation
(uint8 -> float, affine_grid, grid_sample, copies). Three C functions replace them:

- `block_forward`: Conv3x3 (valid) + bias, MaxPool 2x2 and ReLU in one pass over the input
  (ReLU after the pool: relu(max(a)) == max(relu(a)) exactly, and the gradient is the same),
  keeping for each pooled value which of the 4 window positions won;
- `block_backward`: the gradients of that block from the pooled gradient: the winner of
  each window gets it (first maximum wins, as in PyTorch's max_pool2d), then the weight,
  bias and (for blocks 2-6) input gradients, vectorised over image columns;
- `augment_u8`: the paper's flips + rotation (bilinear, nearest-edge fill) straight from the
  uint8 training images, the same sampling as `F.affine_grid` + `F.grid_sample`.

They compute the same functions as the PyTorch layers up to float rounding (the summation
order differs); tests/test_speed_equivalence.py checks outputs and gradients against
PyTorch. Everything is deterministic for a given thread count.

The C source (`fused.c` beside this file, package data) is compiled with the first C
compiler that builds it, of `$CC`, `cc`, `gcc` and `clang`, into
`<cache root>/kernels/<hash>.so` (see `leukolearn.data.cache.cache_root`), once per source,
compiler, flags and CPU; about a second (`leukolearn.native` builds and loads it). It uses
only vector extensions that GCC and clang both accept, so Apple clang gets the fast path too.
When no compiler builds it, one warning says which were tried and why, and PyTorch's own
layers run instead (same results, slower); they also run on other devices than the CPU and
with `LEUKOLEARN_KERNELS=0` (no warning).
"""
from __future__ import annotations

import contextlib
import ctypes
import logging

import torch
import torch.nn.functional as F

from leukolearn.native import NativeLibrary

# -ffp-contract=fast is GCC's default in GNU C mode (so GCC builds exactly what it did
# before the flag was spelled out); clang's default fuses a multiply-add only inside one
# expression, so spelling it out lets clang fuse the same ones (its results then differ
# from GCC's only where the two schedule the sums differently).
_COMMON_FLAGS = ["-std=gnu11", "-ffp-contract=fast", "-fPIC", "-shared", "-pthread"]

_log = logging.getLogger(__name__)
_off = 0  # > 0 inside `disabled()`


def enabled() -> bool:
    """True when the compiled kernels can be used in this process."""
    return not _off and _library() is not None


def problem() -> str | None:
    """Why the kernels are not available in this process (None when they are); tries to
    build them first if that has not been tried yet."""
    return _native.problem()


def compiler() -> str | None:
    """The compiler command that built the loaded library; None when none is loaded."""
    return _native.compiler()


@contextlib.contextmanager
def disabled():
    """Run PyTorch's layers instead of the kernels inside this block (benchmarks, tests)."""
    global _off
    _off += 1
    try:
        yield
    finally:
        _off -= 1


def usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the C block can compute this conv/pool/ReLU block (float32 on the CPU,
    output channels a multiple of 4, input channels too when the input needs a gradient)."""
    out_ch, in_ch = weight.shape[:2]
    needs_input_grad = x.requires_grad and torch.is_grad_enabled()
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.dim() == 4 and min(x.shape[2:]) >= 4 and out_ch % 4 == 0
            and (not needs_input_grad or in_ch % 4 == 0) and enabled())


def conv_pool_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """relu(max_pool2d(conv2d(x, weight, bias), 2)) for x (B, C, H, W): (B, O, (H-2)//2, (W-2)//2)."""
    if bias is None or not usable(x, weight):
        return F.relu(F.max_pool2d(F.conv2d(x, weight, bias), 2))
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad):
        return _Block.apply(x, weight, bias)
    out, _ = _forward(x, weight, bias, keep_winners=False)
    return out


def conv_pool_relu_uint8(images: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor) -> torch.Tensor:
    """conv_pool_relu(images / 255) for uint8 images stored (B, H, W, C), without making
    the float (B, C, H, W) copy; no gradient (inference). Needs `enabled()`."""
    lib = _library()
    assert lib is not None and images.dtype == torch.uint8 and images.dim() == 4
    weight, bias = weight.detach().float().contiguous(), bias.detach().float().contiguous()
    b, h, w, c = images.shape
    o = weight.shape[0]
    out = torch.empty(b, o, (h - 2) // 2, (w - 2) // 2)
    s = images.stride()
    lib.block_forward_u8(images.data_ptr(), s[0], s[3], s[1], s[2], b, c, h, w,
                         weight.data_ptr(), bias.data_ptr(), o, out.data_ptr(), _threads())
    return out


def augment_uint8(images: torch.Tensor, index: torch.Tensor, theta: torch.Tensor,
                  out_size: int) -> torch.Tensor:
    """images[index] / 255 resampled through theta (B, 2, 3) as `leukolearn.training.augment`
    does it; images: uint8 (N, C, H, W) on the CPU. Returns float (B, C, out_size,
    out_size), the top-left corner of the full result (the network never reads the rest)."""
    lib = _library()
    assert lib is not None and images.dtype == torch.uint8 and images.stride(3) == 1
    index = index.to(torch.int64).contiguous()
    theta = theta.to(torch.float32).contiguous()
    n, c, h, w = images.shape
    out = torch.empty(len(index), c, out_size, out_size)
    lib.augment_u8(images.data_ptr(), images.stride(0), images.stride(1), images.stride(2),
                   index.data_ptr(), len(index), c, h, w, theta.data_ptr(), out_size, out_size,
                   out.data_ptr(), _threads())
    return out


# ---- autograd ---------------------------------------------------------------------------
def _forward(x, weight, bias, keep_winners: bool):
    lib = _library()
    if x.stride(3) != 1:
        x = x.contiguous()
    weight, bias = weight.detach().contiguous(), bias.detach().contiguous()
    b, c, h, w = x.shape
    o = weight.shape[0]
    out = torch.empty(b, o, (h - 2) // 2, (w - 2) // 2)
    winners = torch.empty(out.shape, dtype=torch.uint8) if keep_winners else None
    lib.block_forward(x.data_ptr(), x.stride(0), x.stride(1), x.stride(2), b, c, h, w,
                      weight.data_ptr(), bias.data_ptr(), o, out.data_ptr(),
                      winners.data_ptr() if winners is not None else None, _threads())
    return out, winners


class _Block(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        x_in = x if x.stride(3) == 1 else x.contiguous()
        out, winners = _forward(x_in, weight, bias, keep_winners=True)
        ctx.save_for_backward(x_in, weight, out, winners)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, out, winners = ctx.saved_tensors
        if grad_out.stride(3) != 1 or grad_out.dtype != torch.float32:
            grad_out = grad_out.contiguous().float()
        b, c, h, w = x.shape
        o = weight.shape[0]
        w_c = weight.detach().contiguous()
        grad_w = torch.zeros(o, c, 3, 3)
        grad_b = torch.zeros(o)
        grad_x = torch.empty(b, c, h, w) if ctx.needs_input_grad[0] else None
        _library().block_backward(
            x.data_ptr(), x.stride(0), x.stride(1), x.stride(2), b, c, h, w, w_c.data_ptr(), o,
            out.data_ptr(), winners.data_ptr(), grad_out.data_ptr(), grad_out.stride(0),
            grad_out.stride(1), grad_out.stride(2), grad_w.data_ptr(), grad_b.data_ptr(),
            grad_x.data_ptr() if grad_x is not None else None, _threads())
        return grad_x, grad_w, grad_b


def _threads() -> int:
    return max(1, torch.get_num_threads())


# ---- building and loading ---------------------------------------------------------------
def _library() -> ctypes.CDLL | None:
    return _native.load()


def _folder():
    from leukolearn.data.cache import cache_root

    return cache_root() / "kernels"


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    lib.block_forward.argtypes = [p, i64, i64, i64, i32, i32, i32, i32, p, p, i32, p, p, i32]
    lib.block_backward.argtypes = [p, i64, i64, i64, i32, i32, i32, i32, p, i32, p, p,
                                   p, i64, i64, i64, p, p, p, i32]
    lib.block_forward_u8.argtypes = [p, i64, i64, i64, i64, i32, i32, i32, i32, p, p, i32, p,
                                     i32]
    lib.augment_u8.argtypes = [p, i64, i64, i64, p, i32, i32, i32, i32, p, i32, i32, p, i32]
    for fn in (lib.block_forward, lib.block_forward_u8, lib.block_backward, lib.augment_u8):
        fn.restype = None
    return lib


_native = NativeLibrary(
    __name__, "fused.c", folder=_folder, declare=_declare, switch="LEUKOLEARN_KERNELS",
    log=_log, common_flags=_COMMON_FLAGS,
    # Loud: the fallback is correct but several times slower, which is worth knowing before
    # a sweep of hours.
    warning="leukolearn's fused C kernels are not available: %s. PyTorch's layers run "
            "instead (slower; equal up to float rounding). Install gcc or clang, or point "
            "$CC at a C compiler; LEUKOLEARN_KERNELS=0 turns them off without this warning.")
