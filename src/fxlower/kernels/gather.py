"""Exact gather-free selection kernels, written as plain torch code.

Every function here takes a builder `b` (a `graph.Builder` inside a pass, or a
`graph.EagerBuilder` in tests) and tensors or proxies, and uses only ops every edge chip
has: Equal, Where, Cast, MatMul, ReduceSum, arithmetic, Floor, Reshape, Transpose, Slice,
Concat, Unsqueeze, Expand. Shapes are static Python ints.

Exactness (the traps in design.md):
- A one-hot row has exactly one non-zero, so `onehot @ x` adds `1*x[i]` to exact zeros:
  exact in any accumulation order and precision, for finite `x`.
- Non-finite sources: `0 * inf = NaN` would corrupt every output sharing a reduction with a
  non-finite element, and a sum starting from +0 turns a selected -0.0 into +0.0. Two
  schemes carry them through (`Formulation.codes`, chosen per target):
  * "bits" (the default): the value path selects `where(x == x, clamp(x, -max, max), 1)`,
    finite, in which NaN reads 1 and +-inf read +-max, and one keep bit per element
    (x is that value and not -0.0) rides along, 24 per float32 word. Where the selected bit
    is 0 one arithmetic formula turns the selected code back into NaN, +-inf or -0.0
    (`restore_bits`). The source is read by ~9 elementwise ops, the Where among them.
  * "classes" (targets without Clip/Abs/Reciprocal/And/Greater): a class code per element
    (0 finite, 1 NaN, 2 +inf, 3 -inf, 4 -0.0) from comparisons, Cast and arithmetic only,
    packed eight 3-bit codes per word, restored with one Where per class (~20 ops over the
    source).
  Packed words are < 2**24 (exact in float32), packed and selected by MatMul and unpacked
  with power-of-two multiplications and Floor (exact).
- Integer sources are reduced in their own dtype (int64 beyond 2**24 stays exact);
  int8/int16/uint8/bool go through int32 and back; bfloat16 through float32 (onnxruntime has
  no bfloat16 MatMul), both exact widenings.
- When the index is a real tensor (known when lowering), the one-hot matrix is computed now
  and stored as a constant: nothing index-dependent runs at run time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

Tensor = Any  # a torch.Tensor or an fx Proxy standing for one

FINITE, NAN, POSINF, NEGINF, NEGZERO = 0, 1, 2, 3, 4


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
    pack: bool = True  # pack the class codes 8 per word (needs Floor, MatMul, Concat)
    codes: str = "bits"  # how NaN/inf/-0.0 ride along: "bits" or "classes" (module docstring)


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
    "codes:classes": frozenset({"Sub", "Equal", "Where", "Div", "Less", "Mul", "Add", "Cast",
                                "MatMul", "Reshape"}),
    # the keep bits always travel packed in the row selections, so Floor/Concat/Slice too
    "codes:bits": frozenset({"Equal", "Clip", "Where", "Reciprocal", "Greater", "And", "Cast",
                             "MatMul", "Reshape", "Floor", "Sub", "Mul", "Abs", "Div", "Add",
                             "Less", "Concat", "Slice"}),
    "pack": frozenset({"MatMul", "Floor", "Concat", "Slice"}),
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
        if codes and not target.forbidden_in(need | OPS["codes:bits"]):
            return Formulation(mode, idx_dtype, True, "bits")
        if codes:
            need |= OPS["codes:classes"]
        lack = target.forbidden_in(need)
        if not lack:
            pack = not codes or all(target.allows(op) for op in OPS["pack"])
            return Formulation(mode, idx_dtype, pack, "classes" if codes else "bits")
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


def _source(b: Any, x: Tensor, dtype: torch.dtype, known_finite: bool, fm: Formulation
            ) -> tuple[Tensor, torch.dtype, Tensor | None]:
    """What a selection reads of its source: x in the work dtype, or, for a float source that
    may hold NaN/inf/-0.0, a finite value to select and what carries the rest (`fm.codes`:
    the keep bits or the class codes, float32; None when nothing is needed)."""
    wdt = work_dtype(dtype)
    xw = _to(x, wdt, dtype)
    if not needs_codes(dtype, known_finite):
        return xw, wdt, None
    if fm.codes == "bits":
        return keep_bits(b, xw, wdt)
    return finite_part(xw), wdt, classes(b, x)


def _typed(b: Any, value: float, wdt: torch.dtype, name: str) -> Tensor:
    """A constant of dtype wdt (a Python float would be exported as a float32 scalar:
    float64's max is inf there, 2/max of float64 is 0)."""
    return b.const(torch.tensor(value, dtype=wdt), name)


def keep_bits(b: Any, xw: Tensor, wdt: torch.dtype) -> tuple[Tensor, torch.dtype, Tensor]:
    """(value, wdt, keep) for the "bits" scheme. value = where(x == x, clamp(x, -max, max), 1):
    finite, so a one-hot product selects it exactly; NaN reads 1, +-inf read +-max. keep is
    1.0 (float32) where value is x itself and x is not -0.0 or a negative number so small that
    1/x is -inf (those are restored from value by `restore_bits` too)."""
    big = torch.finfo(wdt).max
    v = torch.clamp(xw, _typed(b, -big, wdt, "finite_min"), _typed(b, big, wdt, "finite_max"))
    value = torch.where(xw == xw, v, 1.0)
    keep = (xw == v) & (torch.reciprocal(xw) > float("-inf"))
    return value, wdt, keep.to(torch.float32)


def restore_bits(b: Any, y: Tensor, keep: Tensor, wdt: torch.dtype) -> Tensor:
    """y where the selected keep bit says so (keep >= 0.5: a 0/1 value, or the fraction whose
    top bit is the packed bit; y is never -0.0 there), else the value y's code stands for, by one formula with no
    Where per class: sign(y - 1) * |y| * (1 + 2|y|/max), computed as d / |d| with d = y - 1:
    1 (a NaN) gives 0/0 = NaN; +-max (+-inf) overflow to +-inf; +-0 (a -0.0: the product's
    sum may have lost its sign) gives -1 * +0 = -0.0; a tiny negative t gives -1 * |t| * 1 = t.
    Float16's max is only 65504, but 2/max stays a representable subnormal there too."""
    d = y - 1.0
    a = torch.abs(y)
    g = d / torch.abs(d) * a * (a * _typed(b, 2.0 / torch.finfo(wdt).max, wdt, "two_over_max") + 1.0)
    # keep > 0.5 - 2**-25 is keep >= 0.5 for these values (multiples of 2**-24) with the
    # Greater every target with the scheme has; g goes second: onnxruntime's Where drops the
    # sign of a -0.0 taken from its first value input (1.32), not from its second
    return torch.where(keep > 0.5 - 2.0**-25, y, g)


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


def _word(fm: Formulation, n: int) -> tuple[int, int]:
    """(base, codes per float32 word) for packing n codes: up to 24 keep bits, or 8
    three-bit class codes; at most 24 bits either way, so a word is an integer < 2**24, exact
    in float32. Keep bits go as many per word as divides n (768 -> 24, 128 -> 16), so no
    padded copy of the codes is made, unless that is fewer than 8."""
    if fm.codes != "bits":
        return 8, 8
    per = max(d for d in range(1, 25) if n % d == 0)
    return 2, per if per >= 8 else 24


def _pack(b: Any, c: Tensor, shape: tuple[int, ...], axis: int, fm: Formulation) -> Tensor:
    """Pack codes `c` (float32, static `shape`) along `axis` (0 or last) into words: one
    MatMul against the powers of the base (exact: integer sums < 2**24)."""
    n = shape[axis]
    base, per = _word(fm, n)
    groups = -(-n // per)
    pad = groups * per - n
    if pad:
        pad_shape = list(shape)
        pad_shape[axis] = pad
        c = torch.cat([c, b.const(torch.zeros(pad_shape), "code_pad")], dim=axis)
    w = torch.tensor([float(base**j) for j in range(per)])
    if axis == 0:
        rest = tuple(shape[1:])
        c = c.reshape((groups, per, math.prod(rest)))
        return (b.const(w.reshape(1, per), "code_weights") @ c).reshape((groups,) + rest)
    c = c.reshape(tuple(shape[:-1]) + (groups, per))
    return (c @ b.const(w.reshape(per, 1), "code_weights")).reshape(tuple(shape[:-1]) + (groups,))


def _unpack(b: Any, p: Tensor, shape: tuple[int, ...], n: int, axis: int, fm: Formulation
            ) -> Tensor:
    """Inverse of `_pack` on a selected word tensor `p` of static `shape`, with `n` entries
    along `axis`. Class codes: floor(p / 8**j) - 8 floor(p / 8**(j+1)). Keep bits: the
    fraction t - floor(t) of t = p / 2**(j+1), which is >= 0.5 exactly when bit j is set
    (`restore_bits` compares it with 0.5). Exact: p < 2**24, the divisors are powers of 2."""
    base, per = _word(fm, n)
    groups = shape[axis]
    hi = torch.tensor([1.0 / (base ** (j + 1)) for j in range(per)])
    lo = torch.tensor([1.0 / (base**j) for j in range(per)])
    if axis == 0:
        p = p.unsqueeze(1)
        hi = hi.reshape((per,) + (1,) * (len(shape) - 1))
        lo = lo.reshape((per,) + (1,) * (len(shape) - 1))
    else:
        p = p.unsqueeze(-1)
    if fm.codes == "bits":
        t = p * b.const(hi, "code_hi")
        codes = t - torch.floor(t)
    else:
        codes = torch.floor(p * b.const(lo, "code_lo")) - torch.floor(
            p * b.const(hi, "code_hi")
        ) * float(base)
    if axis == 0:
        codes = codes.reshape((groups * per,) + tuple(shape[1:]))
        return codes[:n] if groups * per != n else codes
    codes = codes.reshape(tuple(shape[:-1]) + (groups * per,))
    return codes[..., :n] if groups * per != n else codes


def _finish(b: Any, y: Tensor, side: Tensor, wdt: torch.dtype, fm: Formulation) -> Tensor:
    """Put back what the selected side channel (keep bits or class codes) carries."""
    return restore_bits(b, y, side, wdt) if fm.codes == "bits" else restore(y, side, wdt)


def _onehot(b: Any, idx: Tensor, n: int, dtype: torch.dtype | None, fm: Formulation = DEFAULT,
            *, axis: int = -1) -> Tensor:
    """One-hot of `idx` (values in [0, n)) over n positions, a new dim at `axis` of the result
    (negative, from the end): [..., K, n] (-1), its transpose [..., n, K] (-2), or
    [..., k, n, rest] for gather_elements, built the way `fm` says, in `dtype` (None: bool
    for the compare mask, float32 0/1 for the arithmetic one). Computed now and stored as a
    constant when idx is known."""
    ar_shape = (n,) + (1,) * (-axis - 1)
    if _is_real(idx):
        m = idx.unsqueeze(axis) == torch.arange(n, dtype=idx.dtype).reshape(ar_shape)
        return b.const(m if dtype is None else m.to(dtype), f"onehot_{n}")
    if fm.mask == "arith":  # relu(1 - |i - n|): 1 where i == n, else 0, for integer i, n
        f = idx.to(torch.float32).unsqueeze(axis)
        ar = b.const(torch.arange(n, dtype=torch.float32).reshape(ar_shape), f"farange_{n}")
        m = torch.relu(1.0 - (torch.relu(f - ar) + torch.relu(ar - f)))  # |d| = relu(d) + relu(-d)
        return m if dtype in (None, torch.float32) else m.to(dtype)
    ar = b.const(torch.arange(n, dtype=fm.index_dtype).reshape(ar_shape), f"arange_{n}")
    i = idx if fm.index_dtype == torch.int64 else idx.to(fm.index_dtype)
    m = i.unsqueeze(axis) == ar
    return m if dtype is None else m.to(dtype)


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
    Cost: pre*k*n*post multiply-adds (+1/24 of that for the keep bits, 1/8 for class codes,
    of float sources that may hold non-finite values); the one-hot mask has k*n elements
    (pre*k*n when batched).
    """
    xw, wdt, c = _source(b, x, dtype, known_finite, fm)
    if post > 1:
        # one block (pre == 1, the embedding case): 2-D operands, so onnxruntime prepacks a
        # constant table (a [1, V, D] MatMul operand runs ~1.5x slower, measured)
        lead = (pre,) if pre > 1 or batched else ()
        m = _onehot(b, idx, n, wdt, fm)
        y = m @ xw.reshape(*lead, n, post)
        if c is not None:
            mf = m if wdt == torch.float32 else _onehot(b, idx, n, torch.float32, fm)
            if not fm.pack:
                y = _finish(b, y, mf @ c.reshape(*lead, n, post), wdt, fm)
                return _to(y.reshape(pre, k, post), dtype, wdt)
            g = -(-post // _word(fm, post)[1])
            axis = len(lead) + 1
            cw = _pack(b, c.reshape(*lead, n, post), (*lead, n, post), axis, fm)
            y = _finish(b, y, _unpack(b, mf @ cw, (*lead, k, g), post, axis, fm), wdt, fm)
        return _to(y.reshape(pre, k, post), dtype, wdt)
    mt = _onehot(b, idx, n, wdt, fm, axis=-2)  # [n, k] or [pre, n, k]
    if batched:
        y = (xw.reshape(pre, 1, n) @ mt).reshape(pre, k)
    else:
        y = xw.reshape(pre, n) @ mt
    if c is not None:
        mtf = mt if wdt == torch.float32 else _onehot(b, idx, n, torch.float32, fm, axis=-2)
        if batched:
            y = _finish(b, y, (c.reshape(pre, 1, n) @ mtf).reshape(pre, k), wdt, fm)
        elif not fm.pack:
            y = _finish(b, y, c.reshape(pre, n) @ mtf, wdt, fm)
        else:
            g = -(-pre // _word(fm, pre)[1])
            cw = _pack(b, c.reshape(pre, n), (pre, n), 0, fm)  # [g, n]
            y = _finish(b, y, _unpack(b, cw @ mtf, (g, k), pre, 0, fm), wdt, fm)
    return _to(y, dtype, wdt)


def gather_elements(
    b: Any, x: Tensor, dim: int, idx: Tensor, *, x_shape: tuple[int, ...], dtype: torch.dtype,
    known_finite: bool, fm: Formulation = DEFAULT,
) -> Tensor:
    """torch.gather(x, dim, idx) where idx has x's shape except along `dim` (x already sliced
    to idx's extent elsewhere) and may vary along every dim. Select then ReduceSum over the
    n candidates, laid out [..., k, n, rest]: the source is finite here (the value the code
    scheme selects, or assume_finite), so multiplying by the 0/1 mask puts exact zeros where
    it is off and the sum is exact (integers select with Where + ReduceMax instead). Mask
    and select temporaries have numel(idx) * n elements."""
    n = x_shape[dim]
    tail = len(x_shape) - dim - 1
    xw, wdt, c = _source(b, x, dtype, known_finite, fm)
    vdt = wdt  # the codes' dtype (float16's +-max stand for +-inf even once summed in float32)
    src = xw.unsqueeze(dim)  # [..., 1, n, rest]: broadcast over k
    mask = _onehot(b, idx, n, None, fm, axis=-(tail + 1))  # [..., k, n, rest]
    if fm.mask == "arith" and not _is_real(idx):  # the arith mask: float 0/1 already
        y = (mask.to(wdt) * src).sum(dim + 1)
        maskf = mask
    elif wdt.is_floating_point:
        # a 0/1 product selects exactly from a finite source; Cast + Mul, not Where:
        # onnxruntime's Where is ~4x slower. float16 sums in float32 (exact: one term is not
        # +0): the exporter writes a float16 ReduceSum as Cast(float32) + ReduceSum and
        # drops the cast back
        maskf = mask.to(torch.float32)
        mw = maskf if wdt == torch.float32 else mask.to(wdt)
        y = (mw * src).sum(dim + 1, dtype=torch.float32 if wdt == torch.float16 else wdt)
        wdt = y.dtype
    else:  # onnxruntime's int64 ReduceSum rounds through float64: select with ReduceMax
        y = torch.where(mask, src, torch.iinfo(wdt).min).amax(dim + 1)
        maskf = mask
    if c is not None:
        y = _finish(b, y, (maskf * c.unsqueeze(dim)).sum(dim + 1), vdt, fm)
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
