"""Complex convolution as one real convolution of twice the channels (the real embedding).

A complex product ``(a + ib)(c + id) = (ac - bd) + i(ad + bc)`` is four real products, so
a complex convolution of x (N, C, H, W) with w (F, C/g, kh, kw) is the real convolution of

    x' (N, 2C, H, W)        each group's C/g real parts, then its C/g imaginary parts
    w' (2F, 2C/g, kh, kw)   per group the blocks [[Re w, -Im w], [Im w, Re w]]

whose output y' (N, 2F, Ho, Wo) holds, per group, the F/g real parts of y then its F/g
imaginary parts. Every strategy (and the dispatcher, the workspace budget, the chunking)
then serves complex data unchanged, with the arithmetic of a complex multiply-add: the
real convolution does the same 4 real MACs per complex MAC as a complex GEMM would.

The backward is the real backward of the embedding: with ``gy`` given as torch's complex
gradients (``dL/dRe y + i dL/dIm y`` of a real loss L), its embedding ``gy'`` is the real
gradient of y', and the real gradients of x' and w' fold back to ``dL/dRe + i dL/dIm`` of
x and w: ``gx = conv_transpose(gy, conj(w))`` and ``gw = correlate(conj(x), gy)``, what
torch autograd gives for its complex ``conv2d``.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import array_api_compat

Array = Any

__all__ = [
    "complex_from_parts",
    "embed_channels",
    "embed_weights",
    "fold_channels",
    "fold_weight_grad",
    "is_complex",
]


def is_complex(a: Array, xp: ModuleType) -> bool:
    """True if ``a`` has a complex floating dtype."""
    return bool(xp.isdtype(a.dtype, "complex floating"))


def complex_from_parts(re: Array, im: Array, *, xp: ModuleType) -> Array:
    """The complex array ``re + i im`` (real arrays of one shape and float dtype).

    Exact on NumPy, CuPy, torch and JAX (their constructors set each part); elsewhere
    (array-api-strict) it is ``re + im * 1j`` in complex arithmetic, which turns the real
    part of an infinite imaginary part into NaN.
    """
    if array_api_compat.is_torch_namespace(xp):
        return xp.complex(re, im)
    if array_api_compat.is_jax_namespace(xp):
        return sys.modules["jax"].lax.complex(re, im)  # jax arrays: jax is imported
    cdtype = xp.complex64 if re.dtype == xp.float32 else xp.complex128
    out = xp.astype(re, cdtype)
    if array_api_compat.is_numpy_namespace(xp) or array_api_compat.is_cupy_namespace(xp):
        out.imag = im
        return out
    return out + xp.astype(im, cdtype) * 1j


def embed_channels(a: Array, groups: int, *, xp: ModuleType) -> Array:
    """Complex (N, K, H, W) -> real (N, 2K, H, W): each group's K/g real parts, then its
    K/g imaginary parts (inputs x, and output gradients gy with K = F)."""
    n, k, h, w = a.shape
    a = xp.reshape(a, (n, groups, k // groups, h, w))  # (N, K, H, W) -> (N, g, K/g, H, W)
    parts = xp.stack([xp.real(a), xp.imag(a)], axis=2)  # (N, g, 2, K/g, H, W)
    return xp.reshape(parts, (n, 2 * k, h, w))  # -> (N, 2K, H, W)


def fold_channels(a: Array, groups: int, *, xp: ModuleType) -> Array:
    """Real (N, 2K, H, W) laid out as :func:`embed_channels` -> complex (N, K, H, W)."""
    n, k2, h, w = a.shape
    k = k2 // 2
    parts = xp.reshape(a, (n, groups, 2, k // groups, h, w))  # (N, 2K, ...) -> (N, g, 2, K/g, ...)
    re = xp.reshape(parts[:, :, 0, ...], (n, k, h, w))  # (N, g, K/g, H, W) -> (N, K, H, W)
    im = xp.reshape(parts[:, :, 1, ...], (n, k, h, w))
    return complex_from_parts(re, im, xp=xp)


def embed_weights(w: Array, groups: int, *, xp: ModuleType) -> Array:
    """Complex (F, Cg, kh, kw) -> real (2F, 2Cg, kh, kw): per group, output rows of the real
    parts ``[Re w, -Im w]`` then of the imaginary parts ``[Im w, Re w]`` (columns: the
    input's real parts, then its imaginary parts)."""
    f, cg, kh, kw = w.shape
    w = xp.reshape(w, (groups, f // groups, cg, kh, kw))  # (F, ...) -> (g, F/g, Cg, kh, kw)
    wr, wi = xp.real(w), xp.imag(w)
    real_rows = xp.concat([wr, -wi], axis=2)  # (g, F/g, 2Cg, kh, kw)
    imag_rows = xp.concat([wi, wr], axis=2)  # (g, F/g, 2Cg, kh, kw)
    blocks = xp.stack([real_rows, imag_rows], axis=1)  # (g, 2, F/g, 2Cg, kh, kw)
    return xp.reshape(blocks, (2 * f, 2 * cg, kh, kw))  # -> (2F, 2Cg, kh, kw)


def fold_weight_grad(gw: Array, groups: int, *, xp: ModuleType) -> Array:
    """Real gradient (2F, 2Cg, kh, kw) of :func:`embed_weights`' output -> the complex
    gradient ``dL/dRe w + i dL/dIm w`` (F, Cg, kh, kw): Re w sits in both diagonal blocks,
    Im w in the lower-left block and negated in the upper-right one."""
    f2, cg2, kh, kw = gw.shape
    f, cg = f2 // 2, cg2 // 2
    blocks = xp.reshape(gw, (groups, 2, f // groups, 2, cg, kh, kw))  # (g, out, F/g, in, Cg, ..)
    d_re = blocks[:, 0, :, 0, ...] + blocks[:, 1, :, 1, ...]  # (g, F/g, Cg, kh, kw)
    d_im = blocks[:, 1, :, 0, ...] - blocks[:, 0, :, 1, ...]
    shape = (f, cg, kh, kw)
    return complex_from_parts(xp.reshape(d_re, shape), xp.reshape(d_im, shape), xp=xp)
