"""The Triton kernels' source (``triton_kernels`` launches them and says what they compute).

The same source runs compiled (CUDA tensors) or under Triton's interpreter (CPU tensors) in one
process. Triton's own ``@jit`` helpers (``tl.sum``, ``tl.zeros``) are fixed to one of the two
when ``triton`` is first imported (``import torch`` imports it), so these kernels use only
builtins: ``tl.full`` for zeros, and ``tl.reduce`` with Triton's sum combiner for sums (what
``tl.sum`` does, and what the interpreter runs as one ``numpy.sum``).
"""

import triton.language as tl


def sparse_rows(rows_ptr, coef_ptr, mask_ptr, scale_ptr, threshold_ptr, partial_ptr,
                        threshold, R, C, ROWS_PER_SPLIT: tl.constexpr, BLOCK_R: tl.constexpr,
                        BLOCK_C: tl.constexpr, HAS_SCALE: tl.constexpr,
                        THRESHOLD_PTR: tl.constexpr):  # fmt: skip
    # One program: columns [pid_c * BLOCK_C, +BLOCK_C) of rows [pid_s * ROWS_PER_SPLIT, +...).
    pid_c = tl.program_id(0)
    pid_s = tl.program_id(1)
    if THRESHOLD_PTR:
        threshold = tl.load(threshold_ptr).to(tl.float32)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < C
    acc = tl.full((BLOCK_C,), 0.0, tl.float32)
    start = pid_s * ROWS_PER_SPLIT
    for r0 in range(start, start + ROWS_PER_SPLIT, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        in_range = r < R
        m = tl.load(mask_ptr + r, mask=in_range, other=0.0).to(tl.float32)
        keep = in_range & (tl.abs(m) >= threshold)
        coef = tl.load(coef_ptr + r, mask=keep, other=0.0).to(tl.float32)
        # A row whose entry was dropped is never loaded: that is the saving.
        w = tl.load(
            rows_ptr + r[:, None] * C + cols[None, :],
            mask=keep[:, None] & col_ok[None, :],
            other=0.0,
        ).to(tl.float32)
        acc += tl.reduce(w * coef[:, None], 0, tl.standard._sum_combine)
    if HAS_SCALE:
        acc = acc * tl.load(scale_ptr + cols, mask=col_ok, other=0.0)
    tl.store(partial_ptr + pid_s * C + cols, acc, mask=col_ok)


def masked_rows_dot(rows_ptr, x_ptr, coef_ptr, mask_ptr, scale_ptr, threshold_ptr,
                            out_ptr, threshold, R, D, BLOCK_R: tl.constexpr,
                            BLOCK_D: tl.constexpr, HAS_MASK: tl.constexpr,
                            HAS_COEF: tl.constexpr, HAS_SCALE: tl.constexpr,
                            THRESHOLD_PTR: tl.constexpr):  # fmt: skip
    # One program: BLOCK_R rows of a row-major [R, D] matrix, each dotted with x if kept.
    pid = tl.program_id(0)
    r = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    keep = r < R
    if HAS_MASK:
        if THRESHOLD_PTR:
            threshold = tl.load(threshold_ptr).to(tl.float32)
        m = tl.load(mask_ptr + r, mask=keep, other=0.0).to(tl.float32)
        keep = keep & (tl.abs(m) >= threshold)
    acc = tl.full((BLOCK_R,), 0.0, tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        d_ok = d < D
        x = tl.load(x_ptr + d, mask=d_ok, other=0.0).to(tl.float32)
        w = tl.load(
            rows_ptr + r[:, None] * D + d[None, :], mask=keep[:, None] & d_ok[None, :], other=0.0
        ).to(tl.float32)
        acc += tl.reduce(w * x[None, :], 1, tl.standard._sum_combine)
    if HAS_SCALE:
        acc = acc * tl.load(scale_ptr + r, mask=keep, other=0.0)
    if HAS_COEF:
        acc = acc * tl.load(coef_ptr + r, mask=keep, other=0.0).to(tl.float32)
    tl.store(out_ptr + r, tl.where(keep, acc, 0.0), mask=r < R)
