"""The scatter family, seen one way: one canonical record per op whatever its spelling, and
the exact scatter kernels the scatter passes share.

## The normalising view

`scatter_op(node)` reads a graph node and returns a `ScatterOp` (or None). Spellings:

| kind             | spellings (torch function, Tensor method and its in-place `_` twin, ATen)        |
| ---------------- | ------------------------------------------------------------------------------- |
| `scatter`        | `scatter` (src / value / `reduce=`), `scatter_add`, `scatter_reduce`;             |
|                  | `aten.scatter.{src,value,reduce,value_reduce}`, `aten.scatter_add`,               |
|                  | `aten.scatter_reduce.two`                                                        |
| `index_put`      | `index_put` (`x[idx] = v` reaches fxlower as `aten.index_put` from torch.export;   |
|                  | symbolic tracing cannot capture item assignment), `index_add` (`alpha`),          |
|                  | `index_copy`, `index_fill`; `aten.index_put`, `aten.index_add`,                   |
|                  | `aten.index_copy`, `aten.index_fill.{int_Scalar,int_Tensor}`                     |
| `masked_scatter` | `masked_scatter`; `aten.masked_scatter`                                          |
| `slice_scatter`  | `slice_scatter`; `aten.slice_scatter` (slice assignment `x[:, 1:3] = v` after     |
|                  | torch.export's functionalisation)                                                |
| `select_scatter` | `select_scatter`; `aten.select_scatter` (`x[:, 0] = v`)                           |

In-place methods (`Tensor.scatter_`, `index_add_`, `index_put_`, `masked_scatter_`, ...)
stay in symbolically traced graphs as `call_method` nodes that mutate their first argument;
torch.export functionalises them. A pass may replace an in-place node by a functional one
only when the mutated tensor is private to forward (`inplace_problem`), and then points the
later readers of that tensor at the new value (`redirect_later_uses`).

## Kernels (plain torch code on proxies or tensors, as in gather.py)

Duplicate indices, the guarantee: an *assignment* (scatter, index_put without accumulate,
index_copy) writes, at each target, the value from the LAST occurrence in index order (for
`scatter`, the largest position k along `dim` among the writers of that element; for
index_put, the largest position in the flattened broadcast index). That is what PyTorch's
CPU kernels do while they run serially (checked with torch 2.13; `scatter` is always serial
along `dim`; `index_put_`/`index_copy_` split large tensors over threads and then differ).
PyTorch documents the result as undefined. It is computed without CumSum: `last[n] =
max_k where(idx[k] == n, k, -1)` (ReduceMax), `hit = last >= 0`, and `written` is a one-hot
selection of the values at `last` (kernels.take_rows: non-finite class codes, integers in
their own dtype), so NaN, +-inf, -0.0 and int64 beyond 2**24 are exact.
`out = where(hit, written, x)`. Both scatter forms use one layout, x as [B, N, R] (batch,
target dim, the dims the index is broadcast along) with the index as [B, K] or [K] (`Rows`).

An *accumulation* (scatter_add, scatter_reduce 'sum', scatter reduce='add', index_add,
index_put accumulate=True) sums duplicates:
- integers and bool: a one-hot matmul in the integer dtype (int8, uint8,
  int16 and bool through int32): exact, wrap-around included (integer addition is
  associative mod 2**bits); bool gives OR, as PyTorch does;
- floats, at most `MAX_UNROLL` writers along the index: unrolled `acc = where(hit_k,
  acc + v_k, acc)` in index order starting from x, which is PyTorch's CPU order: bit-exact.
  float16/bfloat16 are accumulated as PyTorch does it: in float32 and rounded once for
  scatter_add / scatter_reduce and for index_add along the first or last dim of a tensor of
  rank >= 2, rounded to the dtype after every addition otherwise (index_put accumulate,
  index_add along a middle dim or of a vector) -- observed on torch 2.13 CPU;
- floats with more writers: a one-hot matmul of the finite parts plus exact counts of NaN,
  +inf and -inf per target. Equal to PyTorch within float rounding (the summation order
  differs; an intermediate overflow PyTorch's order would hit may not happen), non-finite
  inputs give IEEE's results; NOT bit-exact, and the report says so.

onnxruntime's `Where` drops the sign of a -0.0 taken from its first value input (checked
with onnxruntime 1.32), so every select here that may take a -0.0 that way restores it by a
multiplication (`select`), and the unrolled sums restore a -0.0 result where every term
was -0.0 (IEEE: only then is a round-to-nearest sum -0.0).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.fx as fx

from ..graph import op_name
from . import gather as kernels

aten = torch.ops.aten
Tensor = Any  # a torch.Tensor or an fx Proxy standing for one

MAX_UNROLL = 64  # float accumulations unroll (bit-exact) up to this many writers per target

# parameter names by position, per op family (ATen's `self` is read as `input`)
_PARAMS: dict[str, tuple[str, ...]] = {
    "scatter": ("input", "dim", "index", "src", "reduce"),
    "scatter_add": ("input", "dim", "index", "src"),
    "scatter_reduce": ("input", "dim", "index", "src", "reduce"),
    "index_put": ("input", "indices", "values", "accumulate"),
    "index_add": ("input", "dim", "index", "source"),
    "index_copy": ("input", "dim", "index", "source"),
    "index_fill": ("input", "dim", "index", "value"),
    "masked_scatter": ("input", "mask", "source"),
    "slice_scatter": ("input", "src", "dim", "start", "end", "step"),
    "select_scatter": ("input", "src", "dim", "index"),
}
_KIND = {"scatter": "scatter", "scatter_add": "scatter", "scatter_reduce": "scatter",
         "index_put": "index_put", "index_add": "index_put", "index_copy": "index_put",
         "index_fill": "index_put", "masked_scatter": "masked_scatter",
         "slice_scatter": "slice_scatter", "select_scatter": "select_scatter"}
_TORCH_FUNCTIONS: dict[Any, tuple[str, bool]] = {
    getattr(torch, name): (name.rstrip("_"), name.endswith("_"))
    for name in [*_PARAMS, "index_put_"] if hasattr(torch, name)
}
_METHODS: dict[str, tuple[str, bool]] = {
    **{name: (name, False) for name in _PARAMS},
    **{name + "_": (name, True) for name in _PARAMS if hasattr(torch.Tensor, name + "_")},
}


@dataclass(frozen=True)
class ScatterOp:
    """One scatter-family op in canonical form. Fields a kind does not use are None."""

    kind: str  # scatter | index_put | masked_scatter | slice_scatter | select_scatter
    name: str  # the op family: scatter_add, index_add, index_copy, ...
    spelling: str  # what the user wrote, for reports: "Tensor.index_add_", "aten.index_put"
    x: fx.Node  # the tensor written into
    inplace: bool  # a Tensor.<op>_ call: x itself is mutated and returned
    dim: Any = None  # as written (may be negative; `dim_of` normalises)
    index: Any = None  # scatter / index_add / index_copy / index_fill / select_scatter index
    indices: tuple[Any, ...] | None = None  # index_put: one entry per leading dim, None = ':'
    mask: Any = None  # masked_scatter
    src: Any = None  # node or Python scalar: src / values / source / value
    accumulate: bool = False  # duplicates summed (scatter_add, index_add, accumulate=True)
    reduce: str | None = None  # a reduction other than 'sum'/'add' (refused), as written
    include_self: bool = True  # scatter_reduce: start the sum from x (else from 0 at hits)
    alpha: Any = 1  # index_add
    start: Any = None  # slice_scatter
    end: Any = None
    step: Any = 1


def _family(node: fx.Node) -> tuple[str, bool, str] | None:
    """(op family, in place, spelling prefix) of a node, or None if not a scatter op."""
    t = node.target
    if node.op == "call_method" and isinstance(t, str) and t in _METHODS:
        name, inplace = _METHODS[t]
        return name, inplace, "Tensor."
    if node.op != "call_function":
        return None
    if isinstance(t, torch._ops.OpOverload):
        packet = t.overloadpacket.__name__
        base = packet.rstrip("_")
        if base in _PARAMS and packet in (base, base + "_"):
            return base, packet.endswith("_"), "aten."
        return None
    if t in _TORCH_FUNCTIONS:
        name, inplace = _TORCH_FUNCTIONS[t]
        return name, inplace, "torch."
    return None


def _read_args(node: fx.Node, name: str) -> dict[str, Any]:
    params = _PARAMS[name]
    out: dict[str, Any] = dict(zip(params, node.args, strict=False))
    for k, v in node.kwargs.items():
        key = {"self": "input", "value": "src" if name == "scatter" else "value"}.get(k, k)
        out[key] = v
    return out


def scatter_op(node: fx.Node) -> ScatterOp | None:
    """The canonical record of a scatter-family node, or None."""
    fam = _family(node)
    if fam is None:
        return None
    name, inplace, prefix = fam
    a = _read_args(node, name)
    x = a.get("input")
    if not isinstance(x, fx.Node):
        return None
    spelling = prefix + (str(node.target) if prefix == "Tensor." else name + ("_" if inplace else ""))
    common = functools.partial(ScatterOp, kind=_KIND[name], name=name, spelling=spelling, x=x,
                               inplace=inplace)
    if name in ("scatter", "scatter_add", "scatter_reduce"):
        reduce = a.get("reduce")
        accumulate = name == "scatter_add" or reduce in ("add", "sum")
        return common(
            dim=a.get("dim"), index=a.get("index"), src=a.get("src"),
            accumulate=accumulate, reduce=None if reduce in (None, "add", "sum") else reduce,
            include_self=bool(a.get("include_self", True)),
        )
    if name == "index_put":
        return common(indices=tuple(a.get("indices") or ()), src=a.get("values"),
                      accumulate=bool(a.get("accumulate", False)))
    if name in ("index_add", "index_copy", "index_fill"):
        src = a.get("value") if name == "index_fill" else a.get("source")
        return common(dim=a.get("dim"), index=a.get("index"), src=src,
                      accumulate=name == "index_add", alpha=a.get("alpha", 1))
    if name == "masked_scatter":
        return common(mask=a.get("mask"), src=a.get("source"))
    if name == "slice_scatter":
        return common(src=a.get("src"), dim=a.get("dim", 0), start=a.get("start"),
                      end=a.get("end"), step=a.get("step", 1))
    return common(src=a.get("src"), dim=a.get("dim"), index=a.get("index"))


def remaining(gm: fx.GraphModule) -> list[str]:
    """Every scatter-family node left in a graph, by spelling and name (whatever the census
    knows about)."""
    out = []
    for n in gm.graph.nodes:
        op = scatter_op(n)
        if op is not None:
            out.append(f"{op.spelling} '{n.name}'")
    return out


def dim_of(dim: Any, rank: int) -> int:
    return int(dim) % max(rank, 1)


def index_list(op: ScatterOp, rank: int) -> list[Any]:
    """index_put's per-dim index list for every index_put-kind op (index_add and friends
    index one dim: [None] * dim + [index])."""
    if op.indices is not None:
        return list(op.indices)
    return [None] * dim_of(op.dim, rank) + [op.index]


# ---- in-place legality ------------------------------------------------------------------

FRESH = "fxl_scatter_fresh"  # node meta: the replacement of an in-place write, a new tensor
# ops that return a new tensor (never an alias of an input): an in-place write into their
# result is invisible outside forward
_FRESH_NAMES = {
    "clone", "zeros", "ones", "full", "empty", "zeros_like", "ones_like", "full_like",
    "empty_like", "new_zeros", "new_ones", "new_full", "new_empty", "new_tensor", "tensor",
    "arange", "eye", "cat", "concat", "stack", "where", "add", "sub", "mul", "div", "neg",
    "matmul", "truediv", "floordiv", "rand", "randn", "scatter", "scatter_add",
    "scatter_reduce", "index_put", "index_add", "index_copy", "index_fill", "masked_scatter",
    "slice_scatter", "select_scatter", "masked_fill", "amax", "sum",
}
# ops that may return a view (or the tensor itself) of their input
_VIEW_NAMES = {
    "getitem", "getattr", "view", "view_as", "reshape", "reshape_as", "transpose", "permute",
    "narrow", "select", "expand", "expand_as", "squeeze", "unsqueeze", "flatten", "unflatten",
    "t", "chunk", "split", "split_with_sizes", "tensor_split", "unbind", "movedim", "moveaxis",
    "swapaxes", "swapdims", "as_strided", "diagonal", "unfold", "detach", "contiguous", "to",
    "type", "type_as", "float", "double", "half", "bfloat16", "int", "long", "short", "bool",
    "real", "imag", "view_as_real", "view_as_complex", "hsplit", "vsplit", "dsplit", "align_as",
    "broadcast_to", "alias", "cpu", "cuda",
}


def _writes_in_place(n: fx.Node) -> bool:
    """An in-place call (`y.add_(1)`, `y.index_add_(...)`): it returns its first argument."""
    name = op_name(n)
    return (n.op in ("call_function", "call_method") and name.endswith("_")
            and not name.startswith("_") and not n.meta.get(FRESH)
            and bool(n.args) and isinstance(n.args[0], fx.Node))


def written_chain(x: fx.Node) -> list[fx.Node]:
    """x, and, while x is the result of another in-place call, the tensor that call wrote
    into: every node in the list stands for the same storage."""
    chain = [x]
    while _writes_in_place(chain[-1]):
        chain.append(cast(fx.Node, chain[-1].args[0]))  # a Node: _writes_in_place checked
    return chain


def inplace_problem(node: fx.Node, op: ScatterOp) -> str | None:
    """Why the in-place write of `node` cannot become a functional op, or None when it can:
    the mutated tensor (followed back through earlier in-place calls, which return their
    argument) must be made inside forward by an op that returns a new tensor, and no view of
    it may be taken before the write (the view would see the write)."""
    if not op.inplace:
        return None
    chain = written_chain(op.x)
    base = chain[-1]
    what = f"{op.spelling} writes into '{base.name}' in place"
    if base.op == "get_attr" and str(base.target).startswith("_tensor_constant"):
        return (f"{what}, a tensor symbolic tracing computed once at trace time (a factory "
                "call such as torch.zeros(4, 6) without tensor inputs), so the write would "
                "persist across calls: write it out of place (`.scatter(...)`), build it from "
                "an input (`zeros_like`), or use tracer='export'")
    if base.op in ("placeholder", "get_attr"):
        kind = "an input" if base.op == "placeholder" else "a parameter or buffer"
        return f"{what}, which is {kind}: the write would be visible outside forward"
    fresh = base.meta.get(FRESH) or op_name(base) in _FRESH_NAMES
    if base.op not in ("call_function", "call_method") or not fresh:
        return (f"{what}, and '{base.name}' is not known to be a new tensor (a clone, zeros, "
                "arithmetic): it may alias an input")
    order = {n: i for i, n in enumerate(node.graph.nodes)}
    for t in chain:
        for u in t.users:
            if u is not node and order[u] < order[node] and op_name(u) in _VIEW_NAMES:
                return (f"{what}, and '{u.name}' takes a view of it first, which would see "
                        "the write")
    return None


def redirect_later_uses(op: ScatterOp, node: fx.Node, new: fx.Node) -> None:
    """After an in-place node became `new`: every reader of the mutated tensor (under any of
    its names, see `written_chain`) that runs after the node reads `new` instead. `new` is
    marked as a new tensor (a chain of in-place writes becomes a chain of functional ones)."""
    if not op.inplace:
        return
    new.meta[FRESH] = True
    order = {n: i for i, n in enumerate(node.graph.nodes)}
    for t in written_chain(op.x):
        for u in list(t.users):
            if u is not node and u is not new and u in order and order[u] > order[node]:
                u.replace_input_with(t, new)


# ---- numerics helpers -------------------------------------------------------------------

def accumulate_dtype(name: str, dtype: torch.dtype, rank: int, dim: int) -> tuple[torch.dtype, bool]:
    """(dtype the unrolled float sum is kept in, round to `dtype` after every addition).

    PyTorch 2.13's CPU kernels (observed): float16/bfloat16 scatter_add / scatter_reduce sum
    in float32 and round once; index_add along the first or last dim of a tensor of rank >= 2
    does the same; index_add of a vector or along a middle dim, and index_put accumulate,
    round after every addition. float32/float64 add in their own dtype."""
    if dtype not in (torch.float16, torch.bfloat16):
        return dtype, False
    if name in ("scatter", "scatter_add", "scatter_reduce"):
        return torch.float32, False
    if name == "index_add" and rank >= 2 and dim in (0, rank - 1):
        return torch.float32, False
    return torch.float32, True


def is_negzero(x: Tensor) -> Tensor:
    return (x == 0) & ((1.0 / x) < 0)


def select(c: Tensor, a: Tensor, y: Tensor, dtype: torch.dtype, signed: bool) -> Tensor:
    """where(c, a, y), keeping the sign of a -0.0 taken from `a` in onnxruntime (whose Where
    drops it; a -0.0 taken from `y` keeps its sign). `signed`: a may hold -0.0. Bool values
    are selected with And/Or: onnxruntime has no Where kernel for bool."""
    if dtype == torch.bool:
        return (c & a) | (~c & y)
    out = torch.where(c, a, y)
    if signed and dtype.is_floating_point:
        nz = c & is_negzero(a)
        out = torch.where(nz, 0.0, out) * torch.where(nz, -1.0, 1.0).to(dtype)
    return out


def _real(t: Any) -> bool:
    return isinstance(t, torch.Tensor)


def _last_writer(b: Any, idx: Tensor, rank: int, n: int, k: int, axis: int) -> tuple[Tensor, Tensor]:
    """For an index tensor with its K writers along `axis` (values in [0, n)): `last`, the
    largest writer position k with idx[..k..] == n for every target n (-1 when none), with
    the targets along `axis`; and `hit = last >= 0`. ReduceMax over a one-hot comparison, no
    CumSum. `rank` is idx's. A real (constant) idx is evaluated now, to tensors."""
    shape = [1] * (rank + 1)
    shape[axis] = k
    kpos = torch.arange(k, dtype=torch.int64).reshape(shape)
    ar = torch.arange(n, dtype=torch.int64)
    if not _real(idx):
        kpos, ar = b.const(kpos, f"kpos_{k}"), b.const(ar, f"arange_{n}")
    m = idx.unsqueeze(-1) == ar  # [..., K (at axis), ..., n]
    last = torch.where(m, kpos, -1).amax(axis)  # [..., n]
    last = last.movedim(-1, axis)
    return last, last >= 0


# ---- rows: index_put, index_add, index_copy, index_fill; broadcast-index scatter ----------

@dataclass(frozen=True)
class Rows:
    """x viewed as [pre, n, post]; K writers, rows of values [pre, K, post], at positions
    idx [K] (the same for every `pre`) or [pre, K] (`batched`), values in [0, n) (others
    write nothing)."""

    pre: int
    n: int
    post: int
    k: int
    batched: bool
    dtype: torch.dtype
    x_finite: bool  # x holds no NaN/inf/-0.0 (or is not a float)
    v_finite: bool  # nor do the values


def _hit_rows(r: Rows) -> tuple[int, int, int]:
    return (r.pre if r.batched else 1, r.n, 1)


def rows_assign(b: Any, x3: Tensor, v3: Tensor, idx: Tensor, r: Rows, *,
                broadcast_value: bool) -> Tensor:
    """out[p, n, q] = v3[p, last[n], q] where a writer hits n, else x3[p, n, q].
    `broadcast_value`: v3 is [pre|1, 1, post|1], one row for every writer (index_fill,
    `x[idx] = 0`): no selection at all. Cost: pre*n*k*post MACs (+ the code path), mask k*n."""
    if r.k == 0:  # no writer: x as it is (a reduction over zero writers has no value)
        return x3
    last, hit = _last_writer(b, idx, 2 if r.batched else 1, r.n, r.k, 1 if r.batched else 0)
    hit3 = hit.reshape(_hit_rows(r))
    if _real(hit3):
        hit3 = b.const(hit3, "scatter_hit")
    if broadcast_value:
        written = v3
    else:
        written = kernels.take_rows(b, v3, last, pre=r.pre, n=r.k, post=r.post, k=r.n,
                                    batched=r.batched, dtype=r.dtype, known_finite=r.v_finite)
        written = written.reshape(r.pre, r.n, r.post)
    return select(hit3, written, x3, r.dtype, signed=not r.v_finite)


def _onehot_t(b: Any, idx: Tensor, r: Rows, dtype: torch.dtype) -> Tensor:
    """[n, K] (or [pre, n, K]) 0/1 matrix of the writers' targets, in `dtype`."""
    if _real(idx):
        m = torch.arange(r.n).unsqueeze(-1) == idx.unsqueeze(-2)
        return b.const(m.to(dtype), f"scatter_onehot_{r.n}")
    ar = b.const(torch.arange(r.n, dtype=torch.int64), f"arange_{r.n}")
    return (ar.unsqueeze(-1) == idx.unsqueeze(-2)).to(dtype)


def rows_accumulate(b: Any, x3: Tensor, v3: Tensor, idx: Tensor, r: Rows, *, name: str,
                    rank: int, dim: int, include_self: bool = True) -> Tensor:
    """out[p, n, q] = x3[p, n, q] + the v3[p, k, q] of every writer k hitting n (without
    `include_self`, hit targets start from +0 instead of x3, as PyTorch's scatter_reduce
    does). Integers: one matmul in the integer dtype (exact). Floats: unrolled in index order
    when k <= MAX_UNROLL (bit-exact), else a matmul of the finite parts plus non-finite
    counts (within float rounding). `name`, `rank`, `dim` pick PyTorch's float16/bfloat16
    accumulation (`accumulate_dtype`)."""
    if r.k == 0:  # no writer: x as it is, include_self or not
        return x3
    if not include_self:
        _, hit = _last_writer(b, idx, 2 if r.batched else 1, r.n, r.k, 1 if r.batched else 0)
        hit3 = hit.reshape(_hit_rows(r))
        if _real(hit3):
            hit3 = b.const(hit3, "scatter_hit")
        x3 = torch.where(hit3, torch.zeros((), dtype=r.dtype).item(), x3)
    if not r.dtype.is_floating_point:
        wdt = kernels.work_dtype(r.dtype)
        s = _onehot_t(b, idx, r, wdt) @ v3.to(wdt)  # [pre, n, post]
        return (x3.to(wdt) + s).to(r.dtype)
    if r.k <= MAX_UNROLL:
        acc_dt, step_round = accumulate_dtype(name, r.dtype, rank, dim)
        hit = _onehot_t(b, idx, r, torch.bool).reshape(_hit_rows(r)[:2] + (r.k,))
        return unrolled_sum(x3, lambda j: hit[..., j:j + 1], lambda j: v3[:, j:j + 1], r.k,
                            r.dtype, acc_dt, step_round,
                            signed=not (r.x_finite or r.v_finite))
    wdt = torch.float32 if r.dtype in (torch.float16, torch.bfloat16) else r.dtype
    mt = _onehot_t(b, idx, r, wdt)
    s = sum_with_nonfinite(mt, v3.to(wdt), r.post, r.v_finite)
    anyhit = (mt.sum(-1) > 0).reshape(_hit_rows(r))
    return select(anyhit, (x3.to(wdt) + s).to(r.dtype), x3, r.dtype, signed=not r.x_finite)


def sum_with_nonfinite(mt: Tensor, v: Tensor, post: int, finite: bool) -> Tensor:
    """mt @ v for a 0/1 matrix mt, with IEEE's non-finite results: the product runs on the
    finite parts (0 * inf never happens), and exact counts of NaN, +inf and -inf per target
    (one more matmul over three flags) decide the rest. The finite sum's order is the
    matmul's: within float rounding of a sequential sum, not bit-exact."""
    if finite:
        return mt @ v
    s = mt @ kernels.finite_part(v)
    inf = float("inf")
    flags = torch.cat([(v != v).to(v.dtype), (v == inf).to(v.dtype), (v == -inf).to(v.dtype)],
                      dim=-1)
    counts = mt @ flags
    nan_c, pinf_c, ninf_c = (counts[..., i * post:(i + 1) * post] for i in range(3))
    s = torch.where(pinf_c > 0, inf, s)
    s = torch.where(ninf_c > 0, -inf, s)
    return torch.where((nan_c > 0) | ((pinf_c > 0) & (ninf_c > 0)), float("nan"), s)


def unrolled_sum(x: Tensor, hit_of: Any, value_of: Any, k: int, dtype: torch.dtype,
                 acc_dt: torch.dtype, step_round: bool, signed: bool) -> Tensor:
    """acc = x; for j in 0..k-1: acc = where(hit_of(j), acc + value_of(j), acc): in index order
    (PyTorch's CPU order), kept in `acc_dt`, rounded to `dtype` after every addition when
    `step_round`. A result is -0.0 exactly when x and every term added to it were -0.0 (a
    round-to-nearest IEEE sum is -0.0 only then); with `signed`, that is restored at the end,
    since onnxruntime's Where may have dropped the sign on the way.
    Cost: k adds and selects over x's elements."""
    acc = x.to(acc_dt) if acc_dt != dtype else x
    allneg = is_negzero(x) if signed else None
    for j in range(k):
        h, vj = hit_of(j), value_of(j)
        s = acc + (vj.to(acc_dt) if acc_dt != dtype else vj)
        if step_round:
            s = s.to(dtype).to(acc_dt)
        acc = torch.where(h, s, acc)
        if allneg is not None:
            allneg = allneg & (~h | is_negzero(vj))
    out = acc.to(dtype) if acc_dt != dtype else acc
    if allneg is not None:
        out = torch.where(allneg, 0.0, out) * torch.where(allneg, -1.0, 1.0).to(dtype)
    return out


# ---- writing a region back ------------------------------------------------------------

def paste(x: Tensor, region: Tensor, x_shape: tuple[int, ...],
          region_shape: tuple[int, ...]) -> Tensor:
    """x with its leading corner replaced by `region` (same rank, no dim larger): Slice +
    Concat, one dim at a time. Copies bits (NaN payloads and -0.0 included)."""
    out = region
    for d in reversed(range(len(x_shape))):
        if region_shape[d] == x_shape[d]:
            continue
        key = tuple(slice(0, region_shape[i]) for i in range(d)) + (slice(region_shape[d], None),)
        out = torch.cat([out, x[key]], dim=d)
    return out


def cut(x: Tensor, shape: tuple[int, ...], to: tuple[int, ...]) -> Tensor:
    """x[:to[0], :to[1], ...], slicing only the dims that shrink."""
    key = tuple(slice(0, t) if t < s else slice(None) for s, t in zip(shape, to, strict=True))
    return x[key] if any(k != slice(None) for k in key) else x


# ---- masked_scatter ---------------------------------------------------------------------

MAX_PREFIX = 2**24  # prefix counts in float32 are exact below this many mask elements


def _prefix_blocks(size: int) -> tuple[int, int]:
    c = math.isqrt(size - 1) + 1 if size > 1 else 1  # ceil(sqrt(size))
    return -(-size // c), c


def exclusive_prefix_count(b: Any, m: Tensor, size: int) -> Tensor:
    """pos[i] = number of True in m[:i], for a flat bool vector m of `size` elements, as
    float32, without CumSum: two levels of strictly upper-triangular constant matmuls (rows
    of C = ceil(sqrt(size)) elements: counts within the row `A @ U_C`, plus the counts of the
    rows before, `rowsums @ U_R`). Integers below 2**24 are exact in float32: exact while
    size < 2**24. Cost: `prefix_cost(size)` MACs."""
    r, c = _prefix_blocks(size)
    a = m.to(torch.float32)
    if r * c != size:
        a = torch.cat([a, b.const(torch.zeros(r * c - size), "prefix_pad")])
    a = a.reshape(r, c)
    pos = a @ b.const(torch.triu(torch.ones(c, c), diagonal=1), f"strict_upper_{c}")
    if r > 1:
        u_r = b.const(torch.triu(torch.ones(r, r), diagonal=1), f"strict_upper_{r}")
        pos = pos + (a.sum(1).reshape(1, r) @ u_r).reshape(r, 1)
    pos = pos.reshape(r * c)
    return pos[:size] if r * c != size else pos


def prefix_cost(size: int) -> int:
    r, c = _prefix_blocks(size)
    return r * c * c + (r * r if r > 1 else 0)


# The ONNX ops the scatter rewrites emit (measured by exporting every tested form). They
# have one formulation each, so a target lacking any of these gets a refusal naming them.
MASK_OPS: frozenset[str] = frozenset({
    "Add", "And", "Cast", "Concat", "Div", "Equal", "Floor", "GreaterOrEqual", "Less", "MatMul",
    "Mul", "Not", "Or", "Reciprocal", "ReduceMax", "ReduceSum", "Reshape", "Slice", "Squeeze",
    "Sub", "Transpose", "Unsqueeze", "Where",
})
SLICE_OPS: frozenset[str] = frozenset({"Concat", "Reshape", "Slice"})


def target_problem(target: Any, ops: frozenset[str], int64_indices: bool) -> str | None:
    """Why `target` cannot run a scatter rewrite emitting `ops` (and int64 index arithmetic
    when `int64_indices`), or None."""
    if target is None:
        return None
    lack = sorted(target.forbidden_in(ops))
    if lack:
        return (f"target '{target.name}' lacks {', '.join(lack)}, which this scatter rewrite "
                "needs (it has a single formulation)")
    if int64_indices and not target.int64:
        return (f"target '{target.name}' has no int64, and this scatter rewrite compares "
                "indices in int64")
    return None
