"""Exact gather-free selection kernels, written as plain torch code.

Every function here takes a builder `b` (a `graph.Builder` inside a pass, or a
`graph.EagerBuilder` in tests) and tensors or proxies, and uses only ops every edge chip
has: Equal, Where, Cast, MatMul, ReduceSum, arithmetic, Floor, Reshape, Transpose, Slice,
Concat, Unsqueeze, Expand. Shapes are static Python ints.

Exactness (the traps in design.md):
- A one-hot row has exactly one non-zero, so `onehot @ x` adds `1*x[i]` to exact zeros:
  exact in any accumulation order and precision, for finite `x`.
- Non-finite sources: `0 * inf = NaN` would corrupt every output sharing a reduction with a
  non-finite element. So the value path multiplies `where(isfinite(x), x, 0)` and a second,
  narrow path carries a class code per element (0 finite, 1 NaN, 2 +inf, 3 -inf, 4 -0.0)
  packed eight 3-bit codes per float32 (< 2**24, exact), selected by the same one-hot
  matrix, unpacked with power-of-two divisions and Floor (exact), and restored with Where.
  Its cost is 1/8 of the value path's multiply-adds. Signed zero is restored too: a sum
  starting from +0 turns a selected -0.0 into +0.0.
- Integer sources are reduced in their own dtype (int64 beyond 2**24 stays exact);
  int8/int16/uint8/bool go through int32 and back; bfloat16 through float32 (onnxruntime has
  no bfloat16 MatMul), both exact widenings.
- When the index is a real tensor (known when lowering), the one-hot matrix is computed now
  and stored as a constant: nothing index-dependent runs at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

Tensor = Any  # a torch.Tensor or an fx Proxy standing for one

FINITE, NAN, POSINF, NEGINF, NEGZERO = 0, 1, 2, 3, 4
_PACK = 8  # codes per float32 word: 8 codes x 3 bits = 24 bits, exact in float32


@dataclass(frozen=True)
class Formulation:
    """How a mask is built, chosen per target (`choose`).

    mask: "compare" (Equal against a constant arange, then Cast) or "arith" (the float
    mask relu(1 - |i - n|) with |d| = relu(d) + relu(-d): Cast, Sub, Add, Relu only, for
    chips without comparisons or Abs; exact
    while the compared integers are exact in float32, i.e. n <= 2**24).
    index_dtype: int64, or int32 for targets without int64 (index arithmetic and the
    arange constant are kept in int32).
    """

    mask: str = "compare"
    index_dtype: torch.dtype = torch.int64
    pack: bool = True  # pack the class codes 8 per word (needs Floor, ReduceSum, Concat)


DEFAULT = Formulation()
ARITH_LIMIT = 2**24  # integers below this are exact in float32

# ONNX ops each building block emits (checked against a target's allow-list)
OPS: dict[str, frozenset[str]] = {
    "compare": frozenset({"Equal", "Cast"}),
    "arith": frozenset({"Cast", "Sub", "Relu", "Add"}),
    "wrap:compare": frozenset({"Less", "Add", "Where"}),
    "wrap:arith": frozenset({"Add"}),  # a second, shifted arith mask added to the first
    "matmul": frozenset({"MatMul", "Reshape"}),
    # floats: Cast + Mul + ReduceSum; integers: Where + ReduceMax
    "masked_sum:compare": frozenset({"Cast", "Mul", "ReduceSum", "Where", "ReduceMax", "Transpose",
                                     "Unsqueeze"}),
    "masked_sum:arith": frozenset({"Mul", "ReduceSum", "Transpose", "Unsqueeze"}),
    "codes": frozenset({"Sub", "Equal", "Where", "Div", "Less", "Mul", "Add", "Cast", "MatMul",
                        "Reshape"}),
    "pack": frozenset({"ReduceSum", "Floor", "Concat", "Slice"}),
}


def choose(target: Any, *, codes: bool, wrap: bool, elementwise: bool, n: int) -> Formulation | str:
    """The first formulation whose ops `target` allows (compare, then arith), or the reason
    none does. `target` is None (anything goes) or has `allows(op)`, `int64`, `name`."""
    if target is None:
        return DEFAULT
    idx_dtype = torch.int64 if getattr(target, "int64", True) else torch.int32
    missing: dict[str, set[str]] = {}
    for mode in ("compare", "arith"):
        if mode == "arith" and codes:
            missing[mode] = {"(NaN/inf cannot be detected without comparisons)"}
            continue
        if mode == "arith" and n > ARITH_LIMIT:
            missing[mode] = {f"(n = {n} > 2**24 is not exact in float32)"}
            continue
        need = set(OPS[mode]) | OPS["masked_sum:" + mode if elementwise else "matmul"]
        if wrap:
            need |= OPS["wrap:" + mode]
        if codes:
            need |= OPS["codes"]
        lack = target.forbidden_in(need)
        if not lack:
            pack = not codes or all(target.allows(op) for op in OPS["pack"])
            return Formulation(mode, idx_dtype, pack)
        missing[mode] = lack
    parts = "; ".join(f"{m} mask needs {', '.join(sorted(v))}" for m, v in missing.items())
    hint = " (pass assume_finite=True if float sources hold no NaN/inf/-0.0)" if codes else ""
    return f"target '{target.name}' allows no exact formulation: {parts}{hint}"


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a selection is computed in, exact for every value of `dtype`."""
    if dtype == torch.bfloat16:
        return torch.float32
    if dtype in (torch.bool, torch.int8, torch.uint8, torch.int16):
        return torch.int32
    return dtype


def needs_codes(dtype: torch.dtype, known_finite: bool) -> bool:
    return dtype.is_floating_point and not known_finite


def _is_real(t: Any) -> bool:
    return isinstance(t, torch.Tensor)


def _to(x: Tensor, dtype: torch.dtype, src: torch.dtype) -> Tensor:
    return x if dtype == src else x.to(dtype)


def classes(b: Any, x: Tensor) -> Tensor:
    """Class code of every element as float32: 0 finite (not -0.0), 1 NaN, 2 +inf, 3 -inf,
    4 -0.0, as a sum of 0/1 indicators (the classes exclude each other; x == x is false for
    NaN, 1/x < 0 tells -0.0 from +0.0): comparisons, Cast and arithmetic, no Where and no
    Not/And. onnxruntime's Where is slow (1.32: ~45 ms over 9.6M floats, against ~1 ms for
    Equal and ~7 ms for a Cast), and this runs over the whole source."""
    inf = float("inf")
    f = torch.float32
    one = b.const(torch.ones((), dtype=f), "one")
    c = 1.0 - (x == x).to(f)  # NAN
    c = c + (x == inf).to(f) * float(POSINF)
    c = c + (x == -inf).to(f) * float(NEGINF)
    return c + (x == 0).to(f) * ((one / x) < 0).to(f) * float(NEGZERO)


def _source(b: Any, x: Tensor, dtype: torch.dtype, known_finite: bool
            ) -> tuple[Tensor, torch.dtype, Tensor | None]:
    """What a selection reads of its source: x in the work dtype, or,
    for a float source that may hold NaN/inf/-0.0, x's finite part and the codes that carry
    the rest (None when none are needed)."""
    wdt = work_dtype(dtype)
    xw = _to(x, wdt, dtype)
    if not needs_codes(dtype, known_finite):
        return xw, wdt, None
    c = classes(b, x)
    return finite_part(xw), wdt, c


def finite_part(x: Tensor) -> Tensor:
    """x with NaN and +-inf replaced by 0 (x - x is 0 exactly for finite x, NaN otherwise)."""
    return torch.where((x - x) == 0, x, 0.0)


def restore(y: Tensor, codes: Tensor, dtype: torch.dtype) -> Tensor:
    """Put back the non-finite values and -0.0 that `classes` recorded; y has `dtype`.
    -0.0 is restored by multiplying by -1, not selected with Where: onnxruntime's Where
    drops the sign of a selected -0.0 (checked with onnxruntime 1.32)."""
    y = torch.where(codes == NAN, float("nan"), y)
    y = torch.where(codes == POSINF, float("inf"), y)
    y = torch.where(codes == NEGINF, float("-inf"), y)
    # the value path gives +0.0 or -0.0 for a selected -0.0 (a one-term product keeps the
    # sign, a sum starting from +0 loses it): set +0.0, then flip
    negzero = codes == NEGZERO
    return torch.where(negzero, 0.0, y) * torch.where(negzero, -1.0, 1.0).to(dtype)


def _pack(b: Any, c: Tensor, shape: tuple[int, ...], axis: int) -> Tensor:
    """Pack codes `c` (float32, static `shape`) along `axis` (0 or last), 8 per word."""
    n = shape[axis]
    groups = -(-n // _PACK)
    pad = groups * _PACK - n
    if pad:
        pad_shape = list(shape)
        pad_shape[axis] = pad
        c = torch.cat([c, b.const(torch.zeros(pad_shape), "code_pad")], dim=axis)
    w = torch.tensor([float(_PACK**j) for j in range(_PACK)])
    if axis == 0:
        c = c.reshape((groups, _PACK) + tuple(shape[1:]))
        w = w.reshape((_PACK,) + (1,) * (len(shape) - 1))
        return (c * b.const(w, "code_weights")).sum(1)
    c = c.reshape(tuple(shape[:-1]) + (groups, _PACK))
    return (c * b.const(w, "code_weights")).sum(-1)


def _unpack(b: Any, p: Tensor, shape: tuple[int, ...], n: int, axis: int) -> Tensor:
    """Inverse of `_pack` on a selected word tensor `p` of static `shape`; returns codes with
    `n` entries along `axis`. floor(p / 8**j) is exact: p < 2**24 and 8**j is a power of 2."""
    groups = shape[axis]
    lo = torch.tensor([1.0 / (_PACK**j) for j in range(_PACK)])
    hi = torch.tensor([1.0 / (_PACK ** (j + 1)) for j in range(_PACK)])
    if axis == 0:
        p = p.unsqueeze(1)
        lo = lo.reshape((_PACK,) + (1,) * (len(shape) - 1))
        hi = hi.reshape((_PACK,) + (1,) * (len(shape) - 1))
    else:
        p = p.unsqueeze(-1)
    codes = torch.floor(p * b.const(lo, "code_lo")) - torch.floor(
        p * b.const(hi, "code_hi")
    ) * float(_PACK)
    if axis == 0:
        codes = codes.reshape((groups * _PACK,) + tuple(shape[1:]))
        return codes[:n] if groups * _PACK != n else codes
    codes = codes.reshape(tuple(shape[:-1]) + (groups * _PACK,))
    return codes[..., :n] if groups * _PACK != n else codes


def _onehot(b: Any, idx: Tensor, n: int, dtype: torch.dtype, transpose: bool,
            fm: Formulation = DEFAULT) -> Tensor:
    """One-hot matrix of `idx` (shape [..., K], values in [0, n)) over n positions, as
    [..., K, n] or, with `transpose`, [..., n, K], built the way `fm` says. Computed now and
    stored as a constant when idx is known."""
    if _is_real(idx):
        ar = torch.arange(n, dtype=idx.dtype)
        m = (ar.unsqueeze(-1) == idx.unsqueeze(-2)) if transpose else (idx.unsqueeze(-1) == ar)
        return b.const(m.to(dtype), f"onehot_{n}")
    if fm.mask == "arith":  # relu(1 - |i - n|): 1 where i == n, else 0, for integer i, n
        f = idx.to(torch.float32)
        f = f.unsqueeze(-2) if transpose else f.unsqueeze(-1)
        shape = (n, 1) if transpose else (n,)
        ar = b.const(torch.arange(n, dtype=torch.float32).reshape(shape), f"farange_{n}")
        m = torch.relu(1.0 - (torch.relu(f - ar) + torch.relu(ar - f)))  # |d| = relu(d) + relu(-d)
        return m if dtype == torch.float32 else m.to(dtype)
    ar = b.const(torch.arange(n, dtype=fm.index_dtype), f"arange_{n}")
    i = idx if fm.index_dtype == torch.int64 else idx.to(fm.index_dtype)
    m = (ar.unsqueeze(-1) == i.unsqueeze(-2)) if transpose else (i.unsqueeze(-1) == ar)
    return m.to(dtype)


def wrap_negative(i: Tensor, size: int, fm: Formulation = DEFAULT) -> Tensor:
    """i + size where i < 0 (PyTorch's negative indices). In arith mode, in float32 with
    Add/Sub/Mul/Relu only: relu(1 - relu(i + 1)) is 1 exactly for integers i <= -1."""
    if fm.mask == "arith":
        f = i.to(torch.float32)
        return f + float(size) * torch.relu(1.0 - torch.relu(f + 1.0))
    i = i if fm.index_dtype == torch.int64 else i.to(fm.index_dtype)
    return torch.where(i < 0, i + size, i)


def take_rows(
    b: Any,
    x: Tensor,
    idx: Tensor,
    *,
    pre: int,
    n: int,
    post: int,
    k: int,
    batched: bool,
    dtype: torch.dtype,
    known_finite: bool,
    fm: Formulation = DEFAULT,
) -> Tensor:
    """Select along the middle axis of x viewed as [pre, n, post].

    idx: int tensor [k] (the same rows for every `pre`), or [pre, k] when `batched`, values
    in [0, n). Returns [pre, k, post] (or [pre, k] when post == 1) in `dtype`.
    Layout: with post > 1 the one-hot [k, n] multiplies from the left; with post == 1 its
    transpose [n, k] multiplies from the right, so the source is never transposed.
    Cost: pre*k*n*post multiply-adds (+1/8 of that for the code path of float sources that
    may hold non-finite values); the one-hot mask has k*n elements (pre*k*n when batched).
    """
    xw, wdt, c = _source(b, x, dtype, known_finite)
    if post > 1:
        # one block (pre == 1, the embedding case): 2-D operands, so onnxruntime prepacks a
        # constant table (a [1, V, D] MatMul operand runs ~1.5x slower, measured)
        lead = (pre,) if pre > 1 or batched else ()
        y = _onehot(b, idx, n, wdt, False, fm) @ xw.reshape(*lead, n, post)
        if c is not None:
            mf = _onehot(b, idx, n, torch.float32, False, fm)
            if not fm.pack:
                y = restore(y, mf @ c.reshape(*lead, n, post), wdt)
                return _to(y.reshape(pre, k, post), dtype, wdt)
            g = -(-post // _PACK)
            cw = _pack(b, c.reshape(*lead, n, post), (*lead, n, post), axis=len(lead) + 1)
            y = restore(y, _unpack(b, mf @ cw, (*lead, k, g), post, axis=len(lead) + 1), wdt)
        return _to(y.reshape(pre, k, post), dtype, wdt)
    mt = _onehot(b, idx, n, wdt, True, fm)  # [n, k] or [pre, n, k]
    if batched:
        y = (xw.reshape(pre, 1, n) @ mt).reshape(pre, k)
    else:
        y = xw.reshape(pre, n) @ mt
    if c is not None:
        mtf = _onehot(b, idx, n, torch.float32, True, fm)
        if batched:
            y = restore(y, (c.reshape(pre, 1, n) @ mtf).reshape(pre, k), wdt)
        elif not fm.pack:
            y = restore(y, c.reshape(pre, n) @ mtf, wdt)
        else:
            g = -(-pre // _PACK)
            cw = _pack(b, c.reshape(pre, n), (pre, n), axis=0)  # [g, n]
            y = restore(y, _unpack(b, cw @ mtf, (g, k), pre, axis=0), wdt)
    return _to(y, dtype, wdt)


def gather_elements(
    b: Any, x: Tensor, dim: int, idx: Tensor, *, x_shape: tuple[int, ...], dtype: torch.dtype,
    known_finite: bool, fm: Formulation = DEFAULT,
) -> Tensor:
    """torch.gather(x, dim, idx) where idx has x's shape except along `dim` (x already sliced
    to idx's extent elsewhere) and may vary along every dim. Select then ReduceSum over the
    n candidates: the source is finite here (its finite part, the code path carrying the
    rest), so multiplying by the 0/1 mask puts exact zeros where it is off and the sum is
    exact (integers select with Where + ReduceMax instead). Mask and select temporaries have
    numel(idx) * n elements."""
    n = x_shape[dim]
    xw, wdt, c = _source(b, x, dtype, known_finite)
    src = xw.movedim(dim, -1).unsqueeze(dim)
    if fm.mask == "arith" and not _is_real(idx):
        m = _onehot(b, idx, n, wdt, False, fm)  # [..., k, ..., n] float/int 0-1
        y = (m * src).sum(-1)
    else:
        if _is_real(idx):
            mask = b.const(idx.unsqueeze(-1) == torch.arange(n, dtype=idx.dtype), f"gmask_{n}")
        else:
            i = idx if fm.index_dtype == torch.int64 else idx.to(fm.index_dtype)
            mask = i.unsqueeze(-1) == b.const(torch.arange(n, dtype=fm.index_dtype), f"arange_{n}")
        if wdt.is_floating_point:
            # src is finite here (its finite part, or assume_finite), so a 0/1 product
            # selects exactly; Cast + Mul, not Where: onnxruntime's Where is ~4x slower.
            # float16 sums in float32 (exact: one term is not +0): the exporter writes a
            # float16 ReduceSum as Cast(float32) + ReduceSum and drops the cast back
            y = (mask.to(wdt) * src).sum(-1, dtype=torch.float32 if wdt == torch.float16 else wdt)
            wdt = y.dtype
        else:  # onnxruntime's int64 ReduceSum rounds through float64: select with ReduceMax
            y = torch.where(mask, src, torch.iinfo(wdt).min).amax(-1)
        if c is not None:
            sel = (mask.to(torch.float32) * c.movedim(dim, -1).unsqueeze(dim)).sum(-1)
            y = restore(y, sel, wdt)
    return y.to(dtype)


def runs(idx: list[int]) -> list[tuple[int, int, int]]:
    """Split a list of positions into (start, stop, step) runs of a constant positive step,
    so `x[start:stop:step]` pieces concatenated give `x[idx]`."""
    out: list[tuple[int, int, int]] = []
    i = 0
    while i < len(idx):
        start = idx[i]
        if i + 1 < len(idx) and idx[i + 1] > start:
            step = idx[i + 1] - start
            j = i + 1
            while j + 1 < len(idx) and idx[j + 1] - idx[j] == step:
                j += 1
            out.append((start, idx[j] + 1, step))
            i = j + 1
        else:
            out.append((start, start + 1, 1))
            i += 1
    return out


def slice_rows(x3: Tensor, pieces: list[tuple[int, int, int]], n: int) -> Tensor:
    """x3[:, idx, :] for constant idx given as runs: Slice + Concat, no arithmetic at all."""
    if pieces == [(0, n, 1)]:
        return x3
    parts = [x3[:, a:z:s] for a, z, s in pieces]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
