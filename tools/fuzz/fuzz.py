"""Differential fuzzing of every rewrite pass (issue 8).

    python -m tools.fuzz [--cases N] [--seed S] [--only PASS|FAMILY] [--onnx-every K]
                         [--jobs J] [--save-dir DIR] [--shrink-seconds T]

(from the repository root; `make fuzz` runs 10,000 cases). A development tool: it is not
part of the installed package.

One hypothesis strategy per pass family (FAMILIES) draws a tiny `nn.Module` (the source of
its class, its state and its inputs, non-finite floats included), `fxlower.lower(...,
verify=False)` lowers it with a drawn tracer, target and options, and the lowered module is
compared with the original in eager PyTorch on the example inputs (called as users call it,
autograd on) and on a second, fresh draw (under no_grad) (`evaluate`, in oracle.py beside
this file):

- gather / scatter / select families: bit-exact (dtype, shape, NaN places, values, the sign
  of zero), except sums the report itself calls "not bit-exact" (more than 64 writers), which
  must stay within rounding as below;
- conv / linear / BN merges (and those sums): each element NaN / +inf / -inf / finite as in
  the original or as in the exact (float64) result - another summation order may overflow
  where PyTorch's did not, or the reverse, but invents no non-finite value - and finite ones
  within the first-order rounding bound `2 (sum of fan-ins + 8) eps B` of a float64 run of the original,
  B being the chain run on |x| with |W|, |b| and the BN means negated in magnitude
  (elementwise, sound for any summation order); and the same lowering of a float64 copy must
  match the float64 chain within that bound at float64's eps (the algebra is exact). How
  often fxlower's own verification tolerance would have rejected a merge that is within the
  bound is counted ("tol-miss"). Half-precision conv chains run on PyTorch's native conv
  kernels: its CPU bfloat16 oneDNN convolution reads uninitialised memory for some shapes
  (tests/regressions/test_fuzz_conv_bf16_merged_conv.py).

Every K-th rewritten case is also exported (`fxlower.api.onnx_export`), checked for forbidden
ops (generic target, nothing refused) and run in onnxruntime against eager PyTorch
(bit-exact where PyTorch is, the rounding bound for merges); when onnxruntime differs from
eager PyTorch on the original model too (TopK with sorted=False), the check is skipped.

Every case ends as one of: *equal* (rewritten, or nothing to rewrite, and equal), *refused*
(a pass skipped it with a reason, or a LoweringError named one), *different* (rewritten and
different: a bug), *error* (fxlower or the lowered module raised: a bug). Draws PyTorch itself
rejects (an illegal op/dtype combination) are *invalid* and not counted. The first case of
each new failure signature is shrunk by hypothesis (for at most --shrink-seconds) and written
as a standalone pytest file into --save-dir (default tests/regressions); later cases with the
same signature are counted. The summary gives per pass: tried, applied and equal, refused
(with the commonest reasons), untouched (aimed at, but no pass saw it), different, errors,
ONNX checks; failures with no rewrite applied are counted on the "(capture, no rewrite)" row.
Exit status 1 when any case was different or an error.

Time: about 50 ms per case on an idle core (torch.export captures ~0.3 s, onnxruntime checks
~2 s); torch runs single-threaded in every worker, which matters on a busy machine.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import hashlib
import io
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from tools.fuzz.oracle import CASE_FILENAME, Outcome, evaluate, where_raised

F32, F16, BF16, F64 = torch.float32, torch.float16, torch.bfloat16, torch.float64
I8, U8, I32, I64, BOOL = torch.int8, torch.uint8, torch.int32, torch.int64, torch.bool
FLOATS = (F32, F16, BF16, F64)

# ----------------------------------------------------------------------------- the case


@dataclasses.dataclass
class Case:
    """One drawn model: the source of its class, its state, inputs and lowering options."""

    family: str
    passes: tuple[str, ...]  # the passes the case aims at
    args: tuple[str, ...]  # forward's argument names
    body: list[str]  # forward's body, one statement per line
    inputs: tuple[torch.Tensor, ...]
    fresh: tuple[torch.Tensor, ...]  # a second draw of the same shapes and constraints
    init: list[str] = dataclasses.field(default_factory=list)  # __init__ after super()
    state: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    tracer: str = "symbolic_trace"
    lower_kw: dict[str, Any] = dataclasses.field(default_factory=dict)
    check: str = "exact"  # "exact" | "sum" | "merge" | "grounded"
    train: bool = False
    note: str = ""
    error: str = ""  # the generator itself failed (a bug of this file)
    mkldnn: bool = True  # False: PyTorch's native conv kernels (see conv_case)

    def source(self) -> str:
        lines = ["class M(nn.Module):", "    def __init__(self):", "        super().__init__()"]
        lines += ["        " + s for s in self.init]
        lines += [f"    def forward(self, {', '.join(self.args)}):"]
        lines += ["        " + s for s in self.body]
        return "\n".join(lines) + "\n"

    def build(self) -> nn.Module:
        ns: dict[str, Any] = {"torch": torch, "nn": nn, "F": F, "math": math}
        exec(compile(self.source(), CASE_FILENAME, "exec"), ns)  # noqa: S102
        m = ns["M"]()
        if self.state:
            m.load_state_dict({k: v.clone() for k, v in self.state.items()})
        m = m.train() if self.train else m.eval()
        assert isinstance(m, nn.Module)
        return m

    def fingerprint(self) -> str:
        h = hashlib.sha1(self.source().encode())
        h.update(repr(sorted(self.lower_kw.items())).encode())
        h.update(self.tracer.encode())
        for t in (*self.inputs, *self.fresh, *self.state.values()):
            h.update(str((tuple(t.shape), t.dtype)).encode())
            h.update(t.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                     if t.numel() else b"")
        return h.hexdigest()[:10]

    def __repr__(self) -> str:
        ins = ", ".join(f"{tuple(t.shape)} {str(t.dtype)[6:]}" for t in self.inputs)
        return (f"Case({self.family}: {self.note}; tracer={self.tracer}, {self.lower_kw}, "
                f"inputs {ins}; body {' | '.join(self.body)})")


# ----------------------------------------------------------------------------- values


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def values(shape: tuple[int, ...], dtype: torch.dtype, g: torch.Generator, style: str) -> torch.Tensor:
    """Source values. style: "nonfinite" (NaN, +-inf, -0.0 sprinkled in; subnormals and big
    magnitudes sometimes), "finite" (no NaN/inf/-0.0: what assume_finite promises), "ties"
    (few distinct values, for sorts)."""
    n = math.prod(shape)
    if dtype == BOOL:
        return torch.rand(shape, generator=g) > 0.5
    if not dtype.is_floating_point:
        if style == "ties":
            return torch.randint(-3, 4, shape, generator=g).to(dtype)
        info = torch.iinfo(dtype)
        if int(torch.randint(0, 2, (), generator=g)):
            return torch.randint(info.min, info.max, shape, generator=g, dtype=I64).to(dtype)
        return torch.randint(max(info.min, -100), min(info.max, 100), shape, generator=g,
                             dtype=I64).to(dtype)
    if style == "ties":
        x = torch.randint(-3, 4, shape, generator=g).to(F32)
    elif style == "moderate":  # inputs of linear layers: no overflow anywhere in a chain
        x = torch.randn(shape, generator=g) * [1.0, 10.0][int(torch.randint(0, 2, (), generator=g))]
    else:
        scale = [1.0, 100.0, 1e-3, 3e4][int(torch.randint(0, 4, (), generator=g))]
        x = torch.randn(shape, generator=g) * scale
    if style in ("finite", "moderate"):
        big = float(torch.finfo(dtype if dtype != F64 else F32).max) / 4
        x = x.clamp(-big, big)
    x = x.to(dtype)
    if style in ("finite", "moderate") or n == 0:
        return x + 0.0  # -0.0 can only come from a sign flip; +0.0 is finite
    flat = x.view(-1)
    specials = [float("nan"), float("inf"), float("-inf"), -0.0, 0.0]
    if dtype in (F16, F32):
        specials.append(float(torch.finfo(dtype).tiny) / 4)  # a subnormal
    k = int(torch.randint(0, max(1, n // 3) + 1, (), generator=g))
    for _ in range(k):
        pos = int(torch.randint(0, n, (), generator=g))
        flat[pos] = specials[int(torch.randint(0, len(specials), (), generator=g))]
    return x


def index_values(shape: tuple[int, ...], lo: int, hi: int, g: torch.Generator, mode: str,
                 dtype: torch.dtype = I64) -> torch.Tensor:
    """Index values in [lo, hi): "uniform", "dups" (one or two distinct values), "boundary"
    (the ends of the range: 0, n-1, -1, -n where allowed), "mixed" (uniform with some
    boundary values)."""
    if hi <= lo:
        return torch.zeros(shape, dtype=dtype)
    n = math.prod(shape)
    ends = sorted({lo, hi - 1} | ({-1, 0} if lo < 0 <= hi - 1 else set()))
    if mode == "dups":
        pool = torch.randint(lo, hi, (2,), generator=g)
        pick = torch.randint(0, 2 if n > 2 else 1, shape, generator=g)
        t = pool[pick]
    elif mode == "boundary":
        e = torch.tensor(ends)
        t = e[torch.randint(0, len(ends), shape, generator=g)]
    else:
        t = torch.randint(lo, hi, shape, generator=g)
        if mode == "mixed" and n:
            e = torch.tensor(ends)
            sel = torch.rand(shape, generator=g) < 0.3
            t = torch.where(sel, e[torch.randint(0, len(ends), shape, generator=g)], t)
    return t.to(dtype)


# ----------------------------------------------------------------------------- strategies

try:  # hypothesis is a test dependency; the harness needs it, `import fxlower` does not
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    st = None  # type: ignore[assignment]


def _fmt_shape(s: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(v) for v in s) + ("," if len(s) == 1 else "") + ")"


TRACERS = ["symbolic_trace"] * 13 + ["export"] * 2 + ["auto"]
TARGETS = ["rknn2@1.4.0", "ethos-u55", "tidl", "kneron", "kneron-520"]


def _options(draw: Any, case_style: str, *, export_only: bool = False) -> tuple[str, dict[str, Any], str]:
    """Tracer, lower() keywords and the value style: sometimes a chip target, sometimes
    assume_finite=True (then the float values are finite, as promised)."""
    tracer = draw(st.sampled_from(["export", "auto", "export"] if export_only else TRACERS))
    kw: dict[str, Any] = {}
    style = case_style
    r = draw(st.sampled_from(["generic"] * 16 + ["target", "target+finite", "finite", "finite"]))
    if r.startswith("target"):
        kw["target"] = draw(st.sampled_from(TARGETS))
    if r.endswith("finite"):
        kw["assume_finite"] = True
        style = "finite"
    return tracer, kw, style


DTYPES = [F32, F32, F16, BF16, F64, I64, I32, BOOL, U8, I8]
NUMERIC = [F32, F32, F16, BF16, F64, I64, I32, U8]


def _shape(draw: Any, rank: int, lo: int = 1, hi: int = 5) -> tuple[int, ...]:
    return tuple(draw(st.integers(lo, hi)) for _ in range(rank))


def _empty(draw: Any) -> bool:
    """Now and then a size-0 dimension (no writers, an empty index, an empty tensor)."""
    e: bool = draw(st.sampled_from([False] * 12 + [True]))
    return e


def _zero(shape: tuple[int, ...], j: int) -> tuple[int, ...]:
    return shape[:j] + (0,) + shape[j + 1:]


def _idx_mode(draw: Any) -> str:
    mode: str = draw(st.sampled_from(["mixed", "uniform", "dups", "boundary"]))
    return mode


# ---- gather -------------------------------------------------------------------------


def gather_case(draw: Any) -> Case:
    rank = draw(st.sampled_from([1, 2, 3, 2, 3, 4, 0]))
    xs = _shape(draw, rank)
    dim = draw(st.integers(-rank, rank - 1)) if rank else 0
    d = dim % rank if rank else 0
    dtype = draw(st.sampled_from(DTYPES))
    tracer, kw, style = _options(draw, "nonfinite")
    seed = draw(st.integers(0, 2**31 - 1))
    mode = _idx_mode(draw)
    n = xs[d] if rank else 1
    structure = draw(st.sampled_from(
        ["input", "expand", "repeat", "mae", "buffer", "buffer_expand", "literal",
         "take_along", "take_along_flat", "broadcast_to"] if rank else ["input", "buffer"]))
    spelling = draw(st.sampled_from(["torch.gather", "Tensor.gather", "take_along_dim"]))
    ishape = tuple(
        draw(st.integers(1, 6)) if i == d else draw(st.integers(1, xs[i])) for i in range(rank)
    )
    if spelling == "take_along_dim":  # it broadcasts instead: the index spans x's other dims
        ishape = tuple(k if i == d else xs[i] for i, k in enumerate(ishape))
    if rank and _empty(draw):  # no index along dim, or an empty other dim
        j = draw(st.integers(0, rank - 1))
        ishape = _zero(ishape, j)
        xs = xs if j == d else _zero(xs, j)
    bcast = [rank and i != d and draw(st.booleans()) for i in range(rank)]
    core = tuple(1 if bcast[i] else ishape[i] for i in range(rank))
    init: list[str] = []
    state: dict[str, torch.Tensor] = {}
    args: tuple[str, ...] = ("x", "i")

    def gather(idx: str) -> str:
        if spelling == "torch.gather":
            return f"torch.gather(x, {dim}, {idx})"
        if spelling == "Tensor.gather":
            return f"x.gather({dim}, {idx})"
        return f"torch.take_along_dim(x, {idx}, dim={dim})"

    def expand_args() -> str:
        return ", ".join(str(ishape[i]) if core[i] == 1 and ishape[i] != 1 and draw(st.booleans())
                         or core[i] != ishape[i] else "-1" for i in range(rank))

    ishape_in = ishape
    if structure == "input":
        body = [f"return {gather('i')}"]
    elif structure in ("expand", "broadcast_to"):
        ishape_in = core
        e = (f"i.expand({expand_args()})" if structure == "expand"
             else f"torch.broadcast_to(i, {_fmt_shape(ishape)})")
        body = [f"return {gather(e)}"]
    elif structure == "repeat":
        ishape_in = core
        reps = ", ".join(str(ishape[i] if core[i] == 1 else 1) for i in range(rank))
        body = [f"return {gather(f'i.repeat({reps})')}"]
    elif structure == "mae":  # ids.unsqueeze(-1).expand(..., D) along the last dim
        if d == rank - 1 or rank < 2:
            structure = "input"
            body = [f"return {gather('i')}"]
        else:
            ishape_in = ishape[:-1]
            if draw(st.booleans()):
                e = f"i.unsqueeze(-1).expand({', '.join(['-1'] * (rank - 1) + [str(ishape[-1])])})"
            else:
                e = f"i.unsqueeze(-1).repeat({', '.join(['1'] * (rank - 1) + [str(ishape[-1])])})"
            body = [f"return {gather(e)}"]
    elif structure in ("buffer", "buffer_expand", "literal"):
        args = ("x",)
        shp = core if structure == "buffer_expand" else ishape
        val = index_values(shp, 0, n, _gen(seed + 3), mode)
        if structure == "literal" and 0 < val.numel() <= 24:
            lit = f"torch.tensor({val.tolist()}, dtype=torch.int64)"
            body = [f"return {gather(lit)}"]
        else:
            structure = "buffer" if structure == "literal" else structure
            init = [f"self.register_buffer('idx', torch.zeros({_fmt_shape(shp)}, dtype=torch.int64))"]
            state = {"idx": val}
            e = "self.idx" if structure == "buffer" else f"self.idx.expand({_fmt_shape(ishape)})"
            body = [f"return {gather(e)}"]
    elif structure == "take_along":  # take_along_dim broadcasts x and the index
        how = [draw(st.sampled_from(["both", "x1", "i1"])) if i != d else "both" for i in range(rank)]
        xs = tuple(1 if h == "x1" else s for h, s in zip(how, xs, strict=True))
        ishape_in = tuple(ishape[i] if i == d else (1 if how[i] == "i1" else
                          (xs[i] if how[i] == "both" else draw(st.integers(1, 3))))
                          for i in range(rank))
        body = [f"return torch.take_along_dim(x, i, dim={dim})"]
    else:  # take_along_flat: take_along_dim without dim indexes the flattened tensor
        n = math.prod(xs)
        ishape_in = _shape(draw, draw(st.integers(1, 2)), 1, 6)
        body = ["return torch.take_along_dim(x, i)"]
    g = _gen(seed)
    g2 = _gen(seed + 1)
    x, x2 = values(xs, dtype, g, style), values(xs, dtype, g2, style)
    inputs: tuple[torch.Tensor, ...] = (x,)
    fresh: tuple[torch.Tensor, ...] = (x2,)
    if "i" in args:
        inputs += (index_values(ishape_in, 0, n, g, mode),)
        fresh += (index_values(ishape_in, 0, n, g2, mode),)
    return Case("gather", ("gather_to_mask_matmul",), args, body, inputs, fresh, init, state,
                tracer, kw, note=f"{structure}, {spelling}, dim {dim}")


# ---- topk / sort / argsort then gather ------------------------------------------------


def topk_case(draw: Any) -> Case:
    rank = draw(st.integers(1, 3))
    xs = list(_shape(draw, rank, 1, 6))
    dim = draw(st.integers(-rank, rank - 1))
    d = dim % rank
    dtype = draw(st.sampled_from([F32, F32, F16, BF16, F64, I64, I32, U8]))
    tracer, kw, style = _options(draw, draw(st.sampled_from(["nonfinite", "ties"])))
    seed = draw(st.integers(0, 2**31 - 1))
    op = draw(st.sampled_from(["topk", "topk_attr", "sort", "sort_attr", "argsort", "Tensor.argsort"]))
    twist = draw(st.sampled_from(["none"] * 5 + ["other_tensor", "other_dim"]))
    gather = draw(st.sampled_from(["torch.gather", "Tensor.gather", "take_along_dim"]))
    gdim = dim
    if twist == "other_dim" and rank >= 2:
        d2 = (d + 1) % rank
        xs[d2] = xs[d]  # square, so the indices stay in range along the other dim
        gdim = d2
    elif twist == "other_dim":
        twist = "none"
    xs_t = tuple(xs)
    desc = draw(st.booleans())
    stable = draw(st.sampled_from([None, True, False]))
    st_kw = "" if stable is None else f", stable={stable}"
    if op.startswith("topk"):
        k = 0 if _empty(draw) else draw(st.integers(1, xs[d]))
        largest, srt = draw(st.booleans()), draw(st.booleans())
        call = f"torch.topk(x, {k}, dim={dim}, largest={largest}, sorted={srt})"
        idx = f"{call}.indices" if op == "topk_attr" else f"{call}[1]"
    elif op.startswith("sort"):
        call = f"torch.sort(x, dim={dim}, descending={desc}{st_kw})"
        idx = f"{call}.indices" if op == "sort_attr" else f"x.sort({dim}, {desc})[1]"
    elif op == "argsort":
        idx = f"torch.argsort(x, dim={dim}, descending={desc}{st_kw})"
    else:
        idx = f"x.argsort(dim={dim}, descending={desc})"
    src = "y" if twist == "other_tensor" else "x"
    if gather == "torch.gather":
        g_ = f"torch.gather({src}, {gdim}, ids)"
    elif gather == "Tensor.gather":
        g_ = f"{src}.gather({gdim}, ids)"
    else:
        g_ = f"torch.take_along_dim({src}, ids, dim={gdim})"
    body = [f"ids = {idx}", f"return {g_}" + (", ids" if draw(st.integers(0, 3)) == 0 else "")]
    args = ("x", "y") if twist == "other_tensor" else ("x",)
    g, g2 = _gen(seed), _gen(seed + 1)
    inputs = tuple(values(xs_t, dtype, g, style) for _ in args)
    fresh = tuple(values(xs_t, dtype, g2, style) for _ in args)
    return Case("topk", ("topk_gather_to_values",), args, body, inputs, fresh, tracer=tracer,
                lower_kw=kw, note=f"{op}, {gather}, {twist}")


# ---- advanced indexing, index_select, embedding, take, unfold ------------------------


def index_case(draw: Any) -> Case:
    form = draw(st.sampled_from(["getitem"] * 4 + ["index_select", "embedding", "F.embedding",
                                                    "take", "unfold", "const_key", "buffer_key",
                                                    "bool_mask"]))
    dtype = draw(st.sampled_from(DTYPES))
    tracer, kw, style = _options(draw, "nonfinite")
    seed = draw(st.integers(0, 2**31 - 1))
    mode = _idx_mode(draw)
    g, g2 = _gen(seed), _gen(seed + 1)
    init: list[str] = []
    state: dict[str, torch.Tensor] = {}
    passes = ("index_to_mask_matmul",)
    if form in ("getitem", "const_key", "buffer_key"):
        rank = draw(st.integers(1, 4))
        xs = _shape(draw, rank)
        pos = sorted(draw(st.sets(st.integers(0, rank - 1), min_size=1, max_size=min(3, rank))))
        srank = draw(st.integers(0, 2))
        sshape = _shape(draw, srank, 1, 4)
        if _empty(draw):  # an empty index, an empty dim the index does not touch, or both
            free = [p for p in range(rank) if p not in pos]
            how = draw(st.sampled_from(["index", "free", "indexed"]))
            if how == "free" and free:
                xs = _zero(xs, draw(st.sampled_from(free)))
            else:
                sshape = _zero(sshape, draw(st.integers(0, srank - 1))) if srank else (0,)
                if how == "indexed":
                    xs = _zero(xs, draw(st.sampled_from(pos)))
        idt = draw(st.sampled_from([I64, I64, I32]))
        key: list[str] = []
        args = ["x"]
        ins, fr = [values(xs, dtype, g, style)], [values(xs, dtype, g2, style)]
        for p in range(rank):
            if p in pos:
                shp = tuple(1 if draw(st.integers(0, 3)) == 0 else s for s in sshape)
                a, b = (index_values(shp, -xs[p], xs[p], gg, mode, idt) for gg in (g, g2))
                if form == "const_key" and a.numel() <= 8:
                    key.append(str(a.tolist()) if a.dim() else f"torch.tensor({a.item()})")
                elif form == "buffer_key":
                    name = f"i{p}"
                    init.append(f"self.register_buffer('{name}', torch.zeros({_fmt_shape(shp)}, dtype={idt}))")
                    state[name] = a
                    key.append(f"self.{name}")
                else:
                    name = f"i{p}"
                    args.append(name)
                    ins.append(a)
                    fr.append(b)
                    key.append(name)
            else:
                extra = draw(st.integers(0, 5))
                if extra == 0 and xs[p] > 1:
                    key.append("1:")
                elif extra == 1:
                    key.append("::-1" if False else "None, :")  # an unsqueeze before the slice
                else:
                    key.append(":")
        if draw(st.integers(0, 4)) == 0 and key and key[0] == ":" and len(key) > 1:
            key = ["..."] + key[1:]
        body = [f"return x[{', '.join(key)}]"]
        inputs, fresh = tuple(ins), tuple(fr)
        note = f"x[{', '.join(key)}]"
    elif form == "index_select":
        rank = draw(st.integers(1, 4))
        xs = _shape(draw, rank)
        dim = draw(st.integers(-rank, rank - 1))
        k = 0 if _empty(draw) else draw(st.integers(1, 7))
        idt = draw(st.sampled_from([I64, I32]))
        spell = draw(st.sampled_from(["torch.index_select(x, {d}, i)", "x.index_select({d}, i)"]))
        body = ["return " + spell.format(d=dim)]
        args = ["x", "i"]
        inputs = (values(xs, dtype, g, style), index_values((k,), 0, xs[dim], g, mode, idt))
        fresh = (values(xs, dtype, g2, style), index_values((k,), 0, xs[dim], g2, mode, idt))
        note = f"index_select dim {dim}"
    elif form in ("embedding", "F.embedding"):
        num, dimw = draw(st.integers(1, 9)), draw(st.integers(1, 6))
        ids_shape = _shape(draw, draw(st.integers(0, 3)), 1, 5)
        if ids_shape and _empty(draw):
            ids_shape = _zero(ids_shape, 0)
        pad = draw(st.sampled_from([None, None, 0, num - 1, -1]))
        bad = draw(st.sampled_from([None] * 8 + ["max_norm=1.0", "scale_grad_by_freq=True"]))
        idt = draw(st.sampled_from([I64, I64, I32]))
        ids = tuple(index_values(ids_shape, 0, num, gg, mode, idt) for gg in (g, g2))
        extra = "" if pad is None else f", padding_idx={pad}"
        extra += f", {bad}" if bad else ""
        if form == "embedding":
            init = [f"self.emb = nn.Embedding({num}, {dimw}{extra})"]
            wdt = draw(st.sampled_from([F32, F32, F16, BF16, F64]))
            init.append(f"self.emb.to({wdt})")
            state = {"emb.weight": values((num, dimw), wdt, _gen(seed + 5),
                                          "finite" if draw(st.booleans()) else style)}
            body = ["return self.emb(ids)"]
            args = ["ids"]
            inputs, fresh = (ids[0],), (ids[1],)
        else:
            body = [f"return F.embedding(ids, w{extra})"]
            args = ["ids", "w"]
            inputs = (ids[0], values((num, dimw), dtype, g, style))
            fresh = (ids[1], values((num, dimw), dtype, g2, style))
        note = f"{form}({num}, {dimw}{extra})"
    elif form == "take":
        xs = _shape(draw, draw(st.integers(0, 3)))
        n = math.prod(xs)
        ishape = _shape(draw, draw(st.integers(0, 2)), 1, 6)
        if ishape and _empty(draw):
            ishape = _zero(ishape, 0)
        spell = draw(st.sampled_from(["torch.take(x, i)", "x.take(i)"]))
        body = [f"return {spell}"]
        args = ["x", "i"]
        inputs = (values(xs, dtype, g, style), index_values(ishape, -n, n, g, mode))
        fresh = (values(xs, dtype, g2, style), index_values(ishape, -n, n, g2, mode))
        note = spell
    elif form == "unfold":
        rank = draw(st.integers(1, 3))
        xs = _shape(draw, rank, 1, 7)
        dim = draw(st.integers(-rank, rank - 1))
        size = draw(st.integers(1, xs[dim]))
        step = draw(st.integers(1, 3))
        body = [f"return x.unfold({dim}, {size}, {step})"]
        args = ["x"]
        inputs, fresh = (values(xs, dtype, g, style),), (values(xs, dtype, g2, style),)
        note = f"unfold({dim}, {size}, {step})"
    else:  # bool_mask: data-dependent shape, reported by name, never lowered
        xs = _shape(draw, draw(st.integers(1, 3)))
        spell = draw(st.sampled_from(["x[m]", "torch.masked_select(x, m)"]))
        body = [f"return {spell}"]
        args = ["x", "m"]
        inputs = (values(xs, dtype, g, style), torch.rand(xs, generator=g) > 0.5)
        fresh = (values(xs, dtype, g2, style), inputs[1].clone())
        note = spell
    return Case("index", passes, tuple(args), body, tuple(inputs), tuple(fresh), init, state,
                tracer, kw, note=note)


# ---- integer select / unbind ----------------------------------------------------------


def select_case(draw: Any) -> Case:
    rank = draw(st.integers(1, 4))
    xs = _shape(draw, rank)
    dtype = draw(st.sampled_from(DTYPES))
    tracer, kw, style = _options(draw, "nonfinite")
    seed = draw(st.integers(0, 2**31 - 1))
    form = draw(st.sampled_from(["key", "key", "select", "torch.select", "unbind_item",
                                 "unbind_all", "chain", "shape_minus_one"]))
    dim = draw(st.integers(-rank, rank - 1))
    n = xs[dim]
    if rank > 1 and form in ("select", "torch.select", "unbind_item") and _empty(draw):
        xs = _zero(xs, (dim % rank + 1) % rank)
    i = draw(st.integers(-n, n - 1))
    if form == "key":
        key = []
        for s in xs:
            c = draw(st.integers(0, 4))
            key.append(str(draw(st.integers(-s, s - 1))) if c <= 1 else
                       ("1:" if c == 2 and s > 1 else ":"))
        if all(k in (":", "1:") for k in key):
            key[dim] = str(i)
        if draw(st.integers(0, 3)) == 0 and key[0] == ":" and rank > 1:
            key = ["..."] + key[1:]
        if draw(st.integers(0, 5)) == 0:
            key.append("None")
        body = [f"return x[{', '.join(key)}]"]
    elif form == "select":
        body = [f"return x.select({dim}, {i})"]
    elif form == "torch.select":
        body = [f"return torch.select(x, {dim}, {i})"]
    elif form == "unbind_item":
        body = [f"return torch.unbind(x, {dim})[{i}]" if draw(st.booleans())
                else f"return x.unbind({dim})[{i}]"]
    elif form == "unbind_all":
        body = [f"return x.unbind({dim})"]
    elif form == "chain":
        j = draw(st.integers(-xs[0], xs[0] - 1))
        body = [f"return x[{j}][..., {i if dim == -1 or dim == rank - 1 else -1}]"
                if rank > 1 else f"return x[{j}]"]
    else:
        body = [f"return x.select({dim}, x.shape[{dim}] - 1) * 1" if dtype != BOOL
                else f"return x.select({dim}, x.shape[{dim}] - 1)"]
    g, g2 = _gen(seed), _gen(seed + 1)
    return Case("select", ("select_to_slice",), ("x",), body, (values(xs, dtype, g, style),),
                (values(xs, dtype, g2, style),), tracer=tracer, lower_kw=kw, note=form)


# ---- scatter / scatter_add / scatter_reduce ----------------------------------------------


def _scalar(dtype: torch.dtype, draw: Any) -> str:
    if dtype == BOOL:
        return "True"
    if dtype.is_floating_point:
        v: str = draw(st.sampled_from(["2.5", "-0.0", "float('nan')", "float('-inf')", "1.0"]))
        return v
    return draw(st.sampled_from(["3", "-1", "0"])) if dtype != U8 else "3"


def scatter_case(draw: Any) -> Case:
    rank = draw(st.integers(1, 3))
    xs = _shape(draw, rank)
    dim = draw(st.integers(-rank, rank - 1))
    d = dim % rank
    dtype = draw(st.sampled_from(DTYPES))
    tracer, kw, style = _options(draw, "nonfinite")
    seed = draw(st.integers(0, 2**31 - 1))
    mode = _idx_mode(draw)
    op = draw(st.sampled_from(["scatter", "scatter", "scatter_value", "scatter_add", "scatter_add",
                               "reduce_sum", "reduce_add", "inplace", "inplace_add",
                               "reduce_other", "multiply"]))
    many = op in ("scatter_add", "reduce_sum", "inplace_add") and draw(st.integers(0, 7)) == 0
    k = draw(st.integers(65, 80)) if many else 0 if _empty(draw) else draw(st.integers(1, 6))
    ishape = tuple(k if i == d else draw(st.integers(1, xs[i])) for i in range(rank))
    sshape = tuple(s + (draw(st.integers(0, 2)) if draw(st.integers(0, 3)) == 0 else 0)
                   for s in ishape)
    structure = draw(st.sampled_from(["input", "input", "expand", "buffer"]))
    bcast = [i != d and draw(st.booleans()) for i in range(rank)]
    core = tuple(1 if bcast[i] else ishape[i] for i in range(rank))
    init: list[str] = []
    state: dict[str, torch.Tensor] = {}
    args = ["x", "i", "s"]
    if structure == "input":
        idx, ishape_in = "i", ishape
    elif structure == "expand":
        idx, ishape_in = f"i.expand({_fmt_shape(ishape)})", core
    else:
        idx, ishape_in = "self.idx", None
        args = ["x", "s"]
        init = [f"self.register_buffer('idx', torch.zeros({_fmt_shape(ishape)}, dtype=torch.int64))"]
        state = {"idx": index_values(ishape, 0, xs[d], _gen(seed + 3), mode)}
    val = _scalar(dtype, draw)
    spell = draw(st.booleans())
    if op == "scatter":
        e = f"torch.scatter(x, {dim}, {idx}, s)" if spell else f"x.scatter({dim}, {idx}, s)"
    elif op == "scatter_value":
        e = f"x.scatter({dim}, {idx}, {val})"
        args.remove("s")
    elif op == "scatter_add":
        e = f"torch.scatter_add(x, {dim}, {idx}, s)" if spell else f"x.scatter_add({dim}, {idx}, s)"
    elif op == "reduce_sum":
        e = f"x.scatter_reduce({dim}, {idx}, s, 'sum', include_self={draw(st.booleans())})"
    elif op == "reduce_add":
        e = f"x.scatter({dim}, {idx}, s, reduce='add')"
    elif op == "inplace":
        e = (f"x.clone().scatter_({dim}, {idx}, s)" if spell
             else f"torch.zeros_like(x).scatter_({dim}, {idx}, {val})")
        if not spell:
            args.remove("s")
    elif op == "inplace_add":
        e = f"(x * 1).scatter_add_({dim}, {idx}, s)"
    elif op == "reduce_other":
        r = draw(st.sampled_from(["prod", "mean", "amax", "amin"]))
        e = f"x.scatter_reduce({dim}, {idx}, s, '{r}', include_self={draw(st.booleans())})"
    else:
        e = f"x.scatter({dim}, {idx}, s, reduce='multiply')"
    body = [f"return {e}"]
    g, g2 = _gen(seed), _gen(seed + 1)
    ins: list[torch.Tensor] = [values(xs, dtype, g, style)]
    fr: list[torch.Tensor] = [values(xs, dtype, g2, style)]
    if "i" in args:
        ins.append(index_values(ishape_in, 0, xs[d], g, mode))  # type: ignore[arg-type]
        fr.append(index_values(ishape_in, 0, xs[d], g2, mode))  # type: ignore[arg-type]
    if "s" in args:
        ins.append(values(sshape, dtype, g, style))
        fr.append(values(sshape, dtype, g2, style))
    return Case("scatter", ("scatter_to_mask_matmul",), tuple(args), body, tuple(ins), tuple(fr),
                init, state, tracer, kw, note=f"{op}, {structure}, {k} writers")


# ---- index_put / index_add / index_copy / index_fill / mask writes ------------------


def index_put_case(draw: Any) -> Case:
    form = draw(st.sampled_from(["index_put", "index_put", "torch.index_put", "index_put_",
                                 "assign", "assign", "index_add", "index_add_", "index_copy",
                                 "index_copy_", "index_fill", "index_fill_", "mask_assign",
                                 "mask_put", "mask_many"]))
    dtype = draw(st.sampled_from(DTYPES))
    export_only = form in ("assign", "mask_assign")
    tracer, kw, style = _options(draw, "nonfinite", export_only=export_only)
    seed = draw(st.integers(0, 2**31 - 1))
    mode = _idx_mode(draw)
    g, g2 = _gen(seed), _gen(seed + 1)
    rank = draw(st.integers(1, 3))
    xs = _shape(draw, rank)
    many = draw(st.integers(0, 9)) == 0
    note = form
    if form in ("index_put", "torch.index_put", "index_put_", "assign"):
        pos = sorted(draw(st.sets(st.integers(0, rank - 1), min_size=1, max_size=rank)))
        if form != "assign":
            pos = list(range(len(pos)))  # index_put's index tuple covers the leading dims
        sshape = (draw(st.integers(65, 70)),) if many else _shape(draw, draw(st.integers(0, 2)), 1, 4)
        if _empty(draw):
            sshape = _zero(sshape, 0) if sshape else (0,)
        acc = form != "assign" and draw(st.booleans())
        names, ins_i, fr_i = [], [], []
        for p in pos:
            shp = tuple(1 if draw(st.integers(0, 3)) == 0 else s for s in sshape)
            names.append(f"i{p}")
            ins_i.append(index_values(shp, -xs[p], xs[p], g, mode))
            fr_i.append(index_values(shp, -xs[p], xs[p], g2, mode))
        probe = torch.zeros(xs)
        key: list[Any] = [slice(None)] * rank
        for p, t in zip(pos, ins_i, strict=True):
            key[p] = t
        rshape = tuple(probe[tuple(key)].shape)
        vshape = rshape
        vform = draw(st.sampled_from(["full", "full", "trailing", "ones", "scalar"]))
        if vform == "trailing":
            vshape = rshape[draw(st.integers(0, len(rshape))):]
        elif vform == "ones":
            vshape = tuple(1 if draw(st.booleans()) else s for s in rshape)
        elif vform == "scalar":
            vshape = ()
        tup = "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"
        if form == "index_put":
            body = [f"return x.index_put({tup}, v, accumulate={acc})"]
        elif form == "torch.index_put":
            body = [f"return torch.index_put(x, {tup}, v, {acc})"]
        elif form == "index_put_":
            body = [f"return x.clone().index_put_({tup}, v, accumulate={acc})"]
        else:
            k_ = ", ".join(f"i{p}" if p in pos else ":" for p in range(rank))
            body = ["y = x.clone()", f"y[{k_}] = v", "return y"]
        args = ("x", *names, "v")
        inputs = (values(xs, dtype, g, style), *ins_i, values(vshape, dtype, g, style))
        fresh = (values(xs, dtype, g2, style), *fr_i, values(vshape, dtype, g2, style))
        note = f"{form}, accumulate={acc}, positions {pos}, values {vform}"
    elif form.startswith(("index_add", "index_copy", "index_fill")):
        dim = draw(st.integers(-rank, rank - 1))
        k = (draw(st.integers(65, 70)) if many and form.startswith("index_add") else
             0 if _empty(draw) else draw(st.integers(1, 6)))
        neg = form.startswith("index_fill")
        i_in = index_values((k,) if draw(st.integers(0, 5)) else (), -xs[dim] if neg else 0,
                            xs[dim], g, mode)
        i_fr = index_values(tuple(i_in.shape), -xs[dim] if neg else 0, xs[dim], g2, mode)
        vlist = list(xs)
        vlist[dim] = i_in.numel() if i_in.dim() else 1
        vshape_t = tuple(vlist)
        inp = "x.clone()." if form.endswith("_") else "x."
        name = form.rstrip("_")
        args = ("x", "i", "v")
        if name == "index_add":
            alpha = ("" if dtype.is_floating_point and draw(st.integers(0, 4)) else
                     ", alpha=0.5" if dtype.is_floating_point else
                     f", alpha={draw(st.sampled_from([1, 2, -1]))}" if dtype not in (BOOL, U8) else "")
            body = [f"return {inp}{form}({dim}, i, v{alpha})"]
            note = f"{form} dim {dim}{alpha}"
        elif name == "index_copy":
            body = [f"return {inp}{form}({dim}, i, v)"]
            note = f"{form} dim {dim}"
        else:
            val = _scalar(dtype, draw)
            body = [f"return {inp}{form}({dim}, i, {val})"]
            args = ("x", "i")
            note = f"{form} dim {dim} value {val}"
        inputs = (values(xs, dtype, g, style), i_in)
        fresh = (values(xs, dtype, g2, style), i_fr)
        if "v" in args:
            inputs += (values(vshape_t, dtype, g, style),)
            fresh += (values(vshape_t, dtype, g2, style),)
    else:  # mask writes
        mshape = xs if draw(st.integers(0, 2)) else xs[: draw(st.integers(1, rank))]
        m, m2 = (torch.rand(mshape, generator=gg) > 0.5 for gg in (g, g2))
        if form == "mask_assign":
            body = ["y = x.clone()", "y[m] = v", "return y"]
            vshape = ()
        elif form == "mask_put":
            acc = draw(st.booleans())
            body = [f"return x.index_put((m,), v, accumulate={acc})"]
            vshape = ()
        else:  # many values: where each lands depends on the mask's True count (refused)
            body = ["return x.index_put((m,), v)"]
            m2 = m.reshape(-1)[torch.randperm(m.numel(), generator=g2)].reshape(m.shape)
            cnt = int(m.sum())
            vshape = (cnt,) + tuple(xs[len(mshape):])
            if cnt == 0:
                vshape = ()
        args = ("x", "m", "v")
        inputs = (values(xs, dtype, g, style), m, values(vshape, dtype, g, style))
        fresh = (values(xs, dtype, g2, style), m2, values(vshape, dtype, g2, style))
        note = f"{form}, mask {tuple(mshape)}"
    return Case("index_put", ("index_put_to_mask_matmul",), args, body, inputs, fresh,
                tracer=tracer, lower_kw=kw, note=note)


# ---- masked_scatter ----------------------------------------------------------------------


def masked_scatter_case(draw: Any) -> Case:
    rank = draw(st.integers(1, 3))
    xs = _shape(draw, rank)
    if _empty(draw):
        xs = _zero(xs, draw(st.integers(0, rank - 1)))
    dtype = draw(st.sampled_from(DTYPES))
    tracer, kw, style = _options(draw, "nonfinite")
    seed = draw(st.integers(0, 2**31 - 1))
    g, g2 = _gen(seed), _gen(seed + 1)
    mform = draw(st.sampled_from(["same", "same", "ones", "trailing", "grow", "buffer"]))
    if mform == "ones":
        mshape = tuple(1 if draw(st.booleans()) else s for s in xs)
    elif mform == "trailing":
        mshape = xs[draw(st.integers(0, rank)):]
    elif mform == "grow":  # the mask broadcasts x to a larger shape: refused
        mshape = (2,) + xs
    else:
        mshape = xs
    m = torch.rand(mshape, generator=g) > draw(st.sampled_from([0.5, 0.1, 0.9]))
    m2 = m.reshape(-1)[torch.randperm(m.numel(), generator=g2)].reshape(m.shape)
    full = tuple((torch.zeros(xs) + torch.zeros(mshape)).shape)
    exact_count = draw(st.booleans())
    cnt = int(m.expand(full).sum())
    sn = cnt if exact_count and mform not in ("ones", "trailing") else math.prod(full) + draw(st.integers(0, 3))
    sshape = (sn,) if draw(st.booleans()) or sn != math.prod(full) else full
    spell = draw(st.sampled_from(["x.masked_scatter(m, s)", "torch.masked_scatter(x, m, s)",
                                  "x.clone().masked_scatter_(m, s)"]))
    init: list[str] = []
    state: dict[str, torch.Tensor] = {}
    args: tuple[str, ...] = ("x", "m", "s")
    if mform == "buffer":
        init = [f"self.register_buffer('mask', torch.zeros({_fmt_shape(mshape)}, dtype=torch.bool))"]
        state = {"mask": m}
        spell = spell.replace("(m,", "(self.mask,").replace(", m,", ", self.mask,")
        args = ("x", "s")
    body = [f"return {spell}"]
    if mform == "grow" and spell.endswith("masked_scatter_(m, s)"):
        body = ["return x.masked_scatter(m, s)"]
    ins = [values(xs, dtype, g, style)]
    fr = [values(xs, dtype, g2, style)]
    if "m" in args:
        ins.append(m)
        fr.append(m2)
    ins.append(values(sshape, dtype, g, style))
    fr.append(values(sshape, dtype, g2, style))
    return Case("masked_scatter", ("masked_scatter_to_mask_matmul",), args, body, tuple(ins),
                tuple(fr), init, state, tracer, kw, note=f"mask {mform}, {spell}")


# ---- adaptive average pooling -----------------------------------------------------------


def pool_case(draw: Any) -> Case:
    """Adaptive average pooling in every spelling, of a contiguous or a transposed input, to
    output sizes that tile the pooled dims (rewritten: within rounding of a sum over the
    window, the "sum" check) or not (refused)."""
    dims = draw(st.integers(1, 2))
    ins = _shape(draw, dims, 1, 12)
    outs = [draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0] * 3
                                 + list(range(1, 7)))) for n in ins]
    lead = _shape(draw, draw(st.integers(1, 2)))
    dtype = draw(st.sampled_from([F32, F32, F64]))
    tracer, kw, style = _options(draw, "nonfinite")
    seed = draw(st.integers(0, 2**31 - 1))
    transposed = draw(st.booleans())
    size = outs[0] if dims == 1 and draw(st.booleans()) else tuple(
        None if dims == 2 and draw(st.integers(0, 5)) == 0 and o == n else o
        for n, o in zip(ins, outs, strict=True))
    xs = (*lead, *ins)
    x = "x"
    if transposed:  # the input arrives transposed, pooled after a transpose back
        xs = tuple(reversed(xs))
        x = f"x.permute({', '.join(str(d) for d in reversed(range(len(xs))))})"
    form = draw(st.sampled_from(["module", "F", "torch"] if dims == 1 else ["module", "F"]))
    init: list[str] = []
    if form == "module":
        init = [f"self.pool = nn.AdaptiveAvgPool{dims}d({size!r})"]
        body = [f"return self.pool({x})"]
    elif form == "F":
        body = [f"return F.adaptive_avg_pool{dims}d({x}, {size!r})"]
    else:
        body = [f"return torch.adaptive_avg_pool1d({x}, {size!r})"]
    g, g2 = _gen(seed), _gen(seed + 1)
    return Case("pool", ("adaptive_pool_to_mean",), ("x",), body, (values(xs, dtype, g, style),),
                (values(xs, dtype, g2, style),), init=init, tracer=tracer, lower_kw=kw,
                check="sum", note=f"{form} {ins} -> {size}{' transposed' if transposed else ''}")


# ---- layer norm for a target without LayerNormalization -----------------------------------


def layer_norm_case(draw: Any) -> Case:
    """layer_norm_to_reductions: `nn.LayerNorm` / `F.layer_norm` over the last k dims,
    lowered for rknn2@1.4.0 (no LayerNormalization): within rounding (the "sum" check), or
    rolled back by verification; checked against verify's grounded tolerance on a fresh draw
    lower() never saw (the "grounded" check); finite values (a non-finite one makes the
    whole row NaN in both)."""
    rank = draw(st.integers(1, 4))
    xs = _shape(draw, rank, 1, 8)
    k = draw(st.integers(1, rank))
    ns = xs[-k:]
    dtype = draw(st.sampled_from([F32, F32, F64]))
    tracer = draw(st.sampled_from(TRACERS))
    eps = draw(st.sampled_from([1e-5, 1e-6, 1e-12]))
    affine = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    if draw(st.booleans()):
        init = [f"self.ln = nn.LayerNorm({list(ns)!r}, eps={eps!r}, "
                f"elementwise_affine={affine!r}, dtype={dtype!r})"]
        body = ["return self.ln(x)"]
        state: dict[str, torch.Tensor] = {}
        if affine:
            g = _gen(seed + 2)
            state = {"ln.weight": torch.randn(ns, generator=g, dtype=dtype),
                     "ln.bias": torch.randn(ns, generator=g, dtype=dtype)}
    else:
        init, state = [], {}
        body = [f"return F.layer_norm(x, {list(ns)!r}, eps={eps!r})"]
    g, g2 = _gen(seed), _gen(seed + 1)
    return Case("layer_norm", ("layer_norm_to_reductions",), ("x",), body,
                (values(xs, dtype, g, "finite"),), (values(xs, dtype, g2, "finite"),),
                init=init, state=state, tracer=tracer, lower_kw={"target": "rknn2@1.4.0"},
                check="grounded", note=f"{xs} over the last {k}, eps {eps}")


# ---- the models' own ops a target lacks: GELU, logical ops, attention ---------------------


def gelu_case(draw: Any) -> Case:
    """gelu_to_erf: `nn.GELU` / `F.gelu` (both approximate modes) lowered for rknn2@2.x (Erf)
    or rknn2@1.4.0 (no Erf: the rational erf); within rounding, checked against verify's
    grounded tolerance on a fresh draw lower() never saw."""
    xs = _shape(draw, draw(st.integers(1, 4)), 1, 8)
    dtype = draw(st.sampled_from([F32, F32, F64]))
    tracer = draw(st.sampled_from(TRACERS))
    approx = draw(st.sampled_from(["none", "tanh"]))
    target = draw(st.sampled_from(["rknn2@2.x", "rknn2@1.4.0"]))
    seed = draw(st.integers(0, 2**31 - 1))
    if draw(st.booleans()):
        init, body = [f"self.act = nn.GELU(approximate={approx!r})"], ["return self.act(x)"]
    else:
        init, body = [], [f"return F.gelu(x, approximate={approx!r})"]
    g, g2 = _gen(seed), _gen(seed + 1)
    return Case("gelu", ("gelu_to_erf",), ("x",), body,
                (values(xs, dtype, g, "finite"),), (values(xs, dtype, g2, "finite"),),
                init=init, tracer=tracer, lower_kw={"target": target}, check="grounded",
                note=f"{xs} {approx} on {target}")


_LOGICAL = ["a & b", "a | b", "a ^ b", "~a", "torch.logical_and(x, y)", "torch.logical_or(a, y)",
            "torch.logical_xor(x, b)", "torch.logical_not(y)", "torch.isnan(x)", "torch.isinf(y)"]


def logical_case(draw: Any) -> Case:
    """logical_to_arithmetic: bool &, |, ^, ~, logical_*, isnan, isinf on values with NaN,
    +-inf and -0.0, lowered for rknn2@1.4.0 (none of And/Or/Xor/Not/IsNaN/IsInf); bit-exact."""
    xs = _shape(draw, draw(st.integers(1, 3)), 1, 6)
    ys = xs if draw(st.booleans()) else (1,) * len(xs)  # broadcast
    dtype = draw(st.sampled_from([F32, F16, F64]))
    tracer = draw(st.sampled_from(TRACERS))
    exprs = draw(st.lists(st.sampled_from(_LOGICAL), min_size=1, max_size=3, unique=True))
    seed = draw(st.integers(0, 2**31 - 1))
    body = ["a, b = x > 0, y < 0.5", f"return ({', '.join(exprs)},)"]
    g, g2 = _gen(seed), _gen(seed + 1)
    return Case("logical", ("logical_to_arithmetic",), ("x", "y"), body,
                (values(xs, dtype, g, "nonfinite"), values(ys, dtype, g, "nonfinite")),
                (values(xs, dtype, g2, "nonfinite"), values(ys, dtype, g2, "nonfinite")),
                tracer=tracer, lower_kw={"target": "rknn2@1.4.0"}, note=" ; ".join(exprs))


def attention_case(draw: Any) -> Case:
    """attention_to_matmul_softmax: F.scaled_dot_product_attention with a boolean (fully
    masked rows happen), causal, float or no mask, lowered for rknn2@1.4.0 (no IsNaN, no
    Trilu: the boolean and causal ones are rewritten, the others kept as the exporter writes
    them); within rounding, checked against verify's grounded tolerance on a fresh draw."""
    b, h = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    lq, ls, e = draw(st.integers(1, 7)), draw(st.integers(1, 7)), draw(st.integers(1, 9))
    dtype = draw(st.sampled_from([F32, F32, F64]))
    tracer = draw(st.sampled_from(["export", "export", "symbolic_trace"]))
    kind = draw(st.sampled_from(["bool", "bool", "causal", "float", "none"]))
    scale = draw(st.sampled_from([None, 0.05, 1.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    kw = ("" if scale is None else f", scale={scale!r}") + (
        ", is_causal=True" if kind == "causal" else "")
    names: tuple[str, ...] = ("q", "k", "v")
    shapes = [(b, h, lq, e), (b, h, ls, e), (b, h, ls, e)]
    mask = ""
    if kind in ("bool", "float"):
        names += ("m",)
        shapes.append((b, 1, lq, ls))
        mask = ", attn_mask=m > 0" if kind == "bool" else (
            ", attn_mask=m.masked_fill(m > 1, float('-inf'))")
    body = [f"return F.scaled_dot_product_attention(q, k, v{mask}{kw})"]
    g, g2 = _gen(seed), _gen(seed + 1)
    t = {"target": "rknn2@1.4.0"}
    return Case("attention", ("attention_to_matmul_softmax",), names, body,
                tuple(values(s, dtype, g, "moderate") for s in shapes),
                tuple(values(s, dtype, g2, "moderate") for s in shapes),
                tracer=tracer, lower_kw=t, check="grounded",
                note=f"q{shapes[0]} k{shapes[1]} {kind} mask{kw}")


def cumsum_case(draw: Any) -> Case:
    """cumsum_to_matmul: `torch.cumsum` / `Tensor.cumsum` of integers, bools (RoBERTa's
    position ids) or, with assume_finite, floats, along any dim, lowered for rknn2@2.x (no
    CumSum): bit-exact on integers (wrapping alike), within rounding on floats."""
    xs = _shape(draw, draw(st.integers(1, 3)), 1, 7)
    dim = draw(st.integers(-len(xs), len(xs) - 1))
    dtype = draw(st.sampled_from([I64, I32, BOOL, U8, F32]))
    tracer = draw(st.sampled_from(TRACERS))
    seed = draw(st.integers(0, 2**31 - 1))
    body = [draw(st.sampled_from([f"return torch.cumsum(x, {dim})", f"return x.cumsum({dim})",
                                  f"return (x.cumsum({dim}) * 2)"]))]
    kw: dict[str, Any] = {"target": "rknn2@2.x"}
    check = "exact"
    if dtype.is_floating_point:
        kw["assume_finite"], check = True, "grounded"
    g, g2 = _gen(seed), _gen(seed + 1)
    style = "finite" if dtype.is_floating_point else "ties"
    return Case("cumsum", ("cumsum_to_matmul",), ("x",), body, (values(xs, dtype, g, style),),
                (values(xs, dtype, g2, style),), tracer=tracer, lower_kw=kw, check=check,
                note=f"{xs} {dtype} dim {dim}")


def unary_case(draw: Any) -> Case:
    """unary_to_arithmetic: neg (float and signed integers), reciprocal and rsqrt (floats),
    with NaN, +-inf and -0.0 in the values, lowered for rknn2@2.x (no Neg, no Reciprocal):
    neg and reciprocal bit-exact, rsqrt within verify's grounded tolerance."""
    xs = _shape(draw, draw(st.integers(1, 3)), 1, 6)
    op = draw(st.sampled_from(["-x", "torch.neg(x)", "x.neg()", "torch.reciprocal(x)",
                               "torch.rsqrt(x.abs() + 0.5)"]))
    dtype = draw(st.sampled_from([F32, F64, F16] + ([I32, I64] if "neg" in op or op == "-x"
                                                     else [])))
    tracer = draw(st.sampled_from(TRACERS))
    seed = draw(st.integers(0, 2**31 - 1))
    g, g2 = _gen(seed), _gen(seed + 1)
    style = "finite" if "rsqrt" in op else "nonfinite"
    return Case("unary", ("unary_to_arithmetic",), ("x",), [f"return {op}"],
                (values(xs, dtype, g, style),), (values(xs, dtype, g2, style),),
                tracer=tracer, lower_kw={"target": "rknn2@2.x"},
                check="grounded" if "rsqrt" in op else "exact", note=f"{op} {xs} {dtype}")


def expand_case(draw: Any) -> Case:
    """expand_to_concat: `expand` / `expand_as` with new leading dims and grown size-1 dims,
    any dtype, lowered for rknn2@1.4.0 (no Expand): bit-exact copies."""
    rank = draw(st.integers(1, 3))
    out = _shape(draw, rank, 1, 5)
    src = tuple(1 if draw(st.booleans()) else s for s in out)
    lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    dtype = draw(st.sampled_from([F32, I64, F16, BOOL]))
    tracer = draw(st.sampled_from(TRACERS))
    seed = draw(st.integers(0, 2**31 - 1))
    shape = list(lead + out)
    body = [draw(st.sampled_from([f"return x.expand({shape})",
                                  f"return x.expand_as(torch.empty({shape}))"]))]
    g, g2 = _gen(seed), _gen(seed + 1)
    return Case("expand", ("expand_to_concat",), ("x",), body,
                (values(src, dtype, g, "nonfinite"),), (values(src, dtype, g2, "nonfinite"),),
                tracer=tracer, lower_kw={"target": "rknn2@1.4.0"}, note=f"{src} -> {shape}")


# ---- slice_scatter / select_scatter / slice assignment ------------------------------------


def slice_scatter_case(draw: Any) -> Case:
    rank = draw(st.integers(1, 3))
    xs = _shape(draw, rank, 1, 7)
    dtype = draw(st.sampled_from(DTYPES))
    form = draw(st.sampled_from(["slice_scatter", "slice_scatter", "Tensor.slice_scatter",
                                 "select_scatter", "Tensor.select_scatter", "assign", "assign"]))
    tracer, kw, style = _options(draw, "nonfinite", export_only=form == "assign")
    seed = draw(st.integers(0, 2**31 - 1))
    g, g2 = _gen(seed), _gen(seed + 1)
    dim = draw(st.integers(-rank, rank - 1))
    n = xs[dim]
    if rank > 1 and _empty(draw):
        xs = _zero(xs, (dim % rank + 1) % rank)
    probe = torch.zeros(xs)

    def bound() -> int | None:
        b: int | None = draw(st.sampled_from([None, draw(st.integers(-n - 2, n + 2))]))
        return b

    if form.endswith("slice_scatter"):
        start, end, step = bound(), bound(), draw(st.integers(1, 3))
        sl = [slice(None)] * rank
        sl[dim] = slice(start, end, step)
        sshape = tuple(probe[tuple(sl)].shape)
        if form == "slice_scatter":
            body = [f"return torch.slice_scatter(x, s, {dim}, {start}, {end}, {step})"]
        else:
            body = [f"return x.slice_scatter(s, dim={dim}, start={start}, end={end}, step={step})"]
        note = f"{form} dim {dim} [{start}:{end}:{step}]"
        args: tuple[str, ...] = ("x", "s")
    elif form.endswith("select_scatter"):
        i = draw(st.integers(-n, n - 1))
        sshape = tuple(probe.select(dim, i).shape)
        body = [f"return torch.select_scatter(x, s, {dim}, {i})" if form == "select_scatter"
                else f"return x.select_scatter(s, {dim}, {i})"]
        note = f"{form} dim {dim} index {i}"
        args = ("x", "s")
    else:
        key = []
        for s_ in xs:
            c = draw(st.integers(0, 3))
            if c == 0 and s_ > 0:
                key.append(str(draw(st.integers(-s_, s_ - 1))))
            elif c == 1:
                a, b, stp = (draw(st.integers(-s_, s_)), draw(st.sampled_from(["", str(s_), "-1"])),
                             draw(st.sampled_from(["", "2", "3"])))
                key.append(f"{a}:{b}" + (f":{stp}" if stp else ""))
            else:
                key.append(":")
        ktxt = ", ".join(key)
        sshape = tuple(eval(f"probe[{ktxt}]", {"probe": probe}).shape)  # noqa: S307
        vform = draw(st.sampled_from(["full", "full", "scalar_tensor", "number"]))
        if vform == "number":
            body = ["y = x.clone()", f"y[{ktxt}] = {_scalar(dtype, draw)}", "return y"]
            args = ("x",)
        else:
            if vform == "scalar_tensor":
                sshape = ()
            body = ["y = x.clone()", f"y[{ktxt}] = s", "return y"]
            args = ("x", "s")
        note = f"y[{ktxt}] = {vform}"
    ins = [values(xs, dtype, g, style)]
    fr = [values(xs, dtype, g2, style)]
    if "s" in args:
        ins.append(values(sshape, dtype, g, style))
        fr.append(values(sshape, dtype, g2, style))
    return Case("slice_scatter", ("slice_scatter_to_concat",), args, body, tuple(ins), tuple(fr),
                tracer=tracer, lower_kw=kw, note=note)


# ---- conv / BN chains ---------------------------------------------------------------------


def _out_len(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def conv_case(draw: Any) -> Case:
    dims = draw(st.integers(1, 3))
    nconv = draw(st.sampled_from([2, 2, 3, 1, 4]))
    dtype = draw(st.sampled_from([F32] * 14 + [F64, F64, BF16, F16]))
    functional = draw(st.integers(0, 3)) == 0
    merge = draw(st.sampled_from(["auto"] * 4 + ["always"] * 2 + ["never"]))
    tracer = draw(st.sampled_from(["symbolic_trace"] * 6 + ["export", "auto"]))
    seed = draw(st.integers(0, 2**31 - 1))
    # a BN that normalises with batch statistics (training mode, or no running statistics):
    # never folded, so the graph must stay as it is
    batch_stat_bn = draw(st.sampled_from([None] * 24 + ["train", "no_stats"]))
    if batch_stat_bn:
        nconv = 1
    cls = {1: "1d", 2: "2d", 3: "3d"}[dims]
    chans = [draw(st.sampled_from([1, 2, 3, 4]))]
    init: list[str] = []
    body: list[str] = []
    geo: list[tuple[Any, ...]] = []  # per conv: (k, s, p, d, mode) per spatial dim
    has_bias = []
    for j in range(nconv):
        cin = chans[-1]
        groups = draw(st.sampled_from([g_ for g_ in (1, 1, 2, 3, 4) if cin % g_ == 0]))
        cout = groups * draw(st.integers(1, 2 if groups > 1 else 4))
        if draw(st.integers(0, 5)) == 0:
            cout = cin
            groups = draw(st.sampled_from([1, cin]))  # depthwise chains
        kmax = 3 if dims < 3 else 2
        per_dim = draw(st.booleans())
        k = tuple(draw(st.integers(1, kmax)) for _ in range(dims)) if per_dim else (draw(st.integers(1, kmax)),) * dims
        s = tuple(draw(st.integers(1, 2)) for _ in range(dims)) if per_dim else (draw(st.integers(1, 2)),) * dims
        dl = tuple(draw(st.integers(1, 2)) for _ in range(dims)) if per_dim else (draw(st.integers(1, 2)),) * dims
        reach = [dl[i] * (k[i] - 1) for i in range(dims)]
        pkind = draw(st.sampled_from(["int", "int", "reach", "reach_minus_stride", "same", "valid", "tuple"]))
        if pkind == "same" and all(v == 1 for v in s):
            pad: Any = "'same'"
            p = tuple(r // 2 for r in reach)  # for the size arithmetic only (left pad)
        elif pkind == "valid":
            pad, p = "'valid'", (0,) * dims
        elif pkind == "reach":
            p = tuple(reach)
            pad = p if len(set(p)) > 1 else p[0]
        elif pkind == "reach_minus_stride":
            p = tuple(max(0, reach[i] - s[i] + 1) for i in range(dims))
            pad = p if len(set(p)) > 1 else p[0]
        elif pkind == "tuple":
            p = tuple(draw(st.integers(0, 2)) for _ in range(dims))
            pad = p
        else:
            p = (draw(st.integers(0, 2)),) * dims
            pad = p[0]
        pmode = "zeros" if functional else draw(st.sampled_from(
            ["zeros"] * 5 + ["reflect", "replicate", "circular"]))
        if pad == "'same'" and pmode != "zeros":
            pmode = "zeros"
        bias = draw(st.sampled_from([True, False, False]))
        has_bias.append(bias)
        kt = k if per_dim else k[0]
        st_ = s if per_dim else s[0]
        dt_ = dl if per_dim else dl[0]
        if functional:
            init.append(f"self.w{j} = nn.Parameter(torch.zeros({cout}, {cin // groups}, {', '.join(map(str, k))}))")
            init.append(f"self.b{j} = nn.Parameter(torch.zeros({cout}))" if bias else f"self.b{j} = None")
            body.append(f"x = F.conv{cls}(x, self.w{j}, self.b{j}, stride={st_}, padding={pad}, "
                        f"dilation={dt_}, groups={groups})")
        else:
            init.append(f"self.c{j} = nn.Conv{cls}({cin}, {cout}, {kt}, stride={st_}, padding={pad}, "
                        f"dilation={dt_}, groups={groups}, bias={bias}, padding_mode='{pmode}')")
            body.append(f"x = self.c{j}(x)")
        geo.append((k, s, p, dl, pmode, pad == "'same'"))
        chans.append(cout)
        bn_here = batch_stat_bn or draw(st.integers(0, 2)) == 0
        if bn_here:
            affine = draw(st.integers(0, 4)) > 0
            eps = draw(st.sampled_from([1e-5, 1e-3, 0.1]))
            if batch_stat_bn or not functional:
                trs = batch_stat_bn != "no_stats"
                init.append(f"self.bn{j} = nn.BatchNorm{cls}({cout}, eps={eps}, affine={affine}, "
                            f"track_running_stats={trs})")
                body.append(f"x = self.bn{j}(x)")
            else:
                init.append(f"self.register_buffer('bn{j}_running_mean', torch.zeros({cout}))")
                init.append(f"self.register_buffer('bn{j}_running_var', torch.ones({cout}))")
                if affine:
                    init.append(f"self.bn{j}_weight = nn.Parameter(torch.ones({cout}))")
                    init.append(f"self.bn{j}_bias = nn.Parameter(torch.zeros({cout}))")
                wb = f"self.bn{j}_weight, self.bn{j}_bias" if affine else "None, None"
                body.append(f"x = F.batch_norm(x, self.bn{j}_running_mean, self.bn{j}_running_var, "
                            f"{wb}, False, 0.1, {eps})")
        if j < nconv - 1 and draw(st.integers(0, 9)) == 0:
            body.append("x = torch.relu(x)")  # ends the chain
    body.append("return x")
    # the smallest input side per spatial dim that every layer fits, then a drawn margin
    nbatch = 2 if batch_stat_bn else draw(st.sampled_from([1, 1, 2]))
    side = []
    for i in range(dims):
        lo = 1
        while True:
            n_ = lo
            ok = True
            for k, s, p, dl, pmode, same in geo:
                if pmode in ("reflect", "circular") and p[i] >= n_ + (pmode == "circular"):
                    ok = False
                    break
                n_ = n_ if same else _out_len(n_, k[i], s[i], p[i], dl[i])
                if n_ < 1:
                    ok = False
                    break
            if ok:
                break
            lo += 1
        side.append(lo + draw(st.integers(0, 4 if dims < 3 else 2)))
    xs = (nbatch, chans[0], *side)
    # weights: default init (seeded) in the case's dtype, BN statistics drawn
    torch.manual_seed(seed)
    ns: dict[str, Any] = {"torch": torch, "nn": nn, "F": F, "math": math}
    has_bn = any("bn" in line for line in body)
    aims = (("fold_bn_into_conv",) if has_bn and nconv == 1 else ("merge_conv_chain",)
            + (("fold_bn_into_conv",) if has_bn else ()))
    case = Case("conv", aims, ("x",), body, (), (), init,
                {}, tracer, {"merge": merge}, check="merge",
                train=batch_stat_bn == "train", note="")
    exec(compile(case.source(), CASE_FILENAME, "exec"), ns)  # noqa: S102
    m = ns["M"]()
    g = _gen(seed)
    with torch.no_grad():
        for name, t in m.named_parameters():
            if t.dim() >= 2 and functional:
                fan = t[0].numel()
                t.uniform_(-1 / math.sqrt(fan), 1 / math.sqrt(fan), generator=g)
            elif name.startswith("b") and not name.startswith("bn"):
                t.uniform_(-0.5, 0.5, generator=g)
        _randomise_bn(m, g, draw(st.sampled_from(["plain", "tiny_var", "big"])))
    m = m.to(dtype)
    case.state = {k: v.detach().clone() for k, v in m.state_dict().items()}
    case.init = init + [f"self.to({dtype})"]
    case.inputs = (values(xs, dtype, g, "moderate"),)
    case.fresh = (values(xs, dtype, _gen(seed + 1), "moderate"),)
    if batch_stat_bn:
        case.check = "exact"  # nothing may be folded: the graph must stay as it is
    # PyTorch 2.13's CPU bfloat16 convolution through oneDNN reads uninitialised memory for
    # some shapes (tests/regressions/test_fuzz_conv_bf16_merged_conv.py): originals and merged
    # convs alike. Half-precision chains run on the native kernels, so what is compared is
    # the rewrite, not that kernel.
    case.mkldnn = dtype not in (BF16, F16)
    case.note = (f"{nconv} conv{cls}{' (functional)' if functional else ''}, merge={merge}, "
                 f"{str(dtype)[6:]}")
    return case


def _randomise_bn(m: nn.Module, g: torch.Generator, how: str) -> None:
    for name, t in m.named_buffers():
        if name.endswith("running_mean"):
            t.copy_((torch.rand(t.shape, generator=g) * 2 - 1) * (3 if how == "big" else 1))
        elif name.endswith("running_var"):
            lo = 1e-4 if how == "tiny_var" else 0.3
            t.copy_(lo + torch.rand(t.shape, generator=g) * 2)
    for name, t in m.named_parameters():
        if name.endswith("weight") and ("bn" in name) and t.dim() == 1:
            t.copy_(torch.rand(t.shape, generator=g) * 3 - 1.5)  # negative scales too
        elif name.endswith("bias") and "bn" in name:
            t.copy_(torch.rand(t.shape, generator=g) * 2 - 1)


# ---- linear / BN1d chains ------------------------------------------------------------------


def linear_case(draw: Any) -> Case:
    n = draw(st.sampled_from([2, 2, 3, 4, 1]))
    widths = [draw(st.integers(1, 12)) for _ in range(n + 1)]
    dtype = draw(st.sampled_from([F32] * 12 + [F64, F64, BF16, F16]))
    functional = draw(st.integers(0, 3)) == 0
    merge = draw(st.sampled_from(["auto"] * 4 + ["always"] * 2 + ["never"]))
    tracer = draw(st.sampled_from(["symbolic_trace"] * 6 + ["export", "auto"]))
    seed = draw(st.integers(0, 2**31 - 1))
    lead = _shape(draw, draw(st.sampled_from([1, 1, 2, 0])), 1, 4)
    init: list[str] = []
    body: list[str] = []
    for j in range(n):
        bias = draw(st.booleans())
        if functional:
            init.append(f"self.w{j} = nn.Parameter(torch.zeros({widths[j + 1]}, {widths[j]}))")
            init.append(f"self.b{j} = nn.Parameter(torch.zeros({widths[j + 1]}))" if bias else f"self.b{j} = None")
            body.append(f"x = F.linear(x, self.w{j}, self.b{j})")
        else:
            init.append(f"self.l{j} = nn.Linear({widths[j]}, {widths[j + 1]}, bias={bias})")
            body.append(f"x = self.l{j}(x)")
        if len(lead) in (1, 2) and draw(st.integers(0, 3)) == 0:
            # BatchNorm1d normalises dim 1: the features for [B, C] input, else a refusal
            c = widths[j + 1] if len(lead) == 1 else lead[1]
            init.append(f"self.bn{j} = nn.BatchNorm1d({c}, eps={draw(st.sampled_from([1e-5, 0.01]))})")
            body.append(f"x = self.bn{j}(x)")
        if j < n - 1 and draw(st.integers(0, 9)) == 0:
            body.append("x = torch.tanh(x)")
    body.append("return x")
    torch.manual_seed(seed)
    has_bn = any("bn" in line for line in body)
    aims = ("merge_linear_chain",) + (("fold_bn_into_conv",) if has_bn else ())
    case = Case("linear", aims, ("x",), body, (), (), init,
                {}, tracer, {"merge": merge}, check="merge")
    ns: dict[str, Any] = {"torch": torch, "nn": nn, "F": F, "math": math}
    exec(compile(case.source(), CASE_FILENAME, "exec"), ns)  # noqa: S102
    m = ns["M"]()
    g = _gen(seed)
    with torch.no_grad():
        for name, t in m.named_parameters():
            if t.dim() == 2:
                t.uniform_(-1 / math.sqrt(t.shape[1]), 1 / math.sqrt(t.shape[1]), generator=g)
            elif name.startswith(("b", "l")) and not name.startswith("bn"):
                t.uniform_(-0.5, 0.5, generator=g)
        _randomise_bn(m, g, draw(st.sampled_from(["plain", "tiny_var", "big"])))
    m = m.to(dtype)
    case.state = {k: v.detach().clone() for k, v in m.state_dict().items()}
    case.init = init + [f"self.to({dtype})"]
    xs = (*lead, widths[0])
    case.inputs = (values(xs, dtype, g, "moderate"),)
    case.fresh = (values(xs, dtype, _gen(seed + 1), "moderate"),)
    case.note = f"{n} linear{' (functional)' if functional else ''}, merge={merge}, {str(dtype)[6:]}"
    return case


def _safe(builder: Callable[[Any], Case], family: str) -> Callable[[Any], Case]:
    """The builder, with its own exceptions turned into a case that reports them (hypothesis's
    control-flow exceptions pass through)."""
    from hypothesis.errors import HypothesisException, InvalidArgument

    def build(draw: Any) -> Case:
        try:
            return builder(draw)
        except HypothesisException as e:
            if not isinstance(e, InvalidArgument):  # a strategy drawn with bad bounds: ours
                raise
            return Case(family, FAMILIES[family][1], (), ["return None"], (), (),
                        error=f"the {family} generator raised {where_raised(e)}")
        except Exception as e:  # noqa: BLE001
            return Case(family, FAMILIES[family][1], (), ["return None"], (), (),
                        error=f"the {family} generator raised {where_raised(e)}")

    return build


# family -> (strategy builder, passes it aims at, weight of the case budget)
FAMILIES: dict[str, tuple[Callable[[Any], Case], tuple[str, ...], float]] = {
    "gather": (gather_case, ("gather_to_mask_matmul",), 1.2),
    "topk": (topk_case, ("topk_gather_to_values",), 0.7),
    "index": (index_case, ("index_to_mask_matmul",), 1.4),
    "select": (select_case, ("select_to_slice",), 0.8),
    "scatter": (scatter_case, ("scatter_to_mask_matmul",), 1.1),
    "index_put": (index_put_case, ("index_put_to_mask_matmul",), 1.2),
    "masked_scatter": (masked_scatter_case, ("masked_scatter_to_mask_matmul",), 0.7),
    "slice_scatter": (slice_scatter_case, ("slice_scatter_to_concat",), 0.8),
    "pool": (pool_case, ("adaptive_pool_to_mean",), 0.4),
    "layer_norm": (layer_norm_case, ("layer_norm_to_reductions",), 0.3),
    "gelu": (gelu_case, ("gelu_to_erf",), 0.2),
    "logical": (logical_case, ("logical_to_arithmetic",), 0.2),
    "attention": (attention_case, ("attention_to_matmul_softmax",), 0.3),
    "cumsum": (cumsum_case, ("cumsum_to_matmul",), 0.2),
    "unary": (unary_case, ("unary_to_arithmetic",), 0.2),
    "expand": (expand_case, ("expand_to_concat",), 0.2),
    "conv": (conv_case, ("fold_bn_into_conv", "merge_conv_chain"), 1.3),
    "linear": (linear_case, ("merge_linear_chain", "fold_bn_into_conv"), 0.8),
}


# ----------------------------------------------------------------------------- one case


def quiet_torch() -> None:
    """Silence torch's own logging (torch.export prints graphs with its data-dependent
    guard warnings)."""
    import logging

    for name in ("torch", "torch.export", "torch.fx", "torch._dynamo", "torch.onnx",
                 "torch.fx.experimental.symbolic_shapes", "torch._export"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def _silenced() -> Any:
    """Send file descriptors 1 and 2 to /dev/null (torch.export prints graphs from deep
    inside its data-dependent-shape errors, bypassing logging and sys.stdout)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def run_case(case: Case, onnx: bool = False) -> Outcome:
    quiet_torch()
    if case.error:
        return Outcome("harness", message=case.error)
    try:
        return evaluate(case.build, case.inputs, case.fresh, tracer=case.tracer,
                        check=case.check, onnx=onnx, mkldnn=case.mkldnn, **case.lower_kw)
    except Exception as e:  # noqa: BLE001 - a bug of this harness, reported as such
        return Outcome("harness", message=f"the harness raised {where_raised(e)}")


# ----------------------------------------------------------------------------- known bugs

# Failures the fuzzer found that are not fixed yet, each with its strict-xfail regression
# test in tests/regressions/: (family, kind or "onnx-<kind>", regex on the message, regex on
# the case, regression test). A failing case that matches one is counted as that known bug:
# not shrunk again, no new reproducer. When a bug is fixed, its regression test passes
# (strict xfail: the suite fails) and the entry goes together with the xfail mark.
KNOWN_BUGS: list[tuple[str, str, str, str, str]] = []  # all fixed so far: see tests/regressions


def known_bug(family: str, out: Outcome, case: Case | str) -> str | None:
    """The regression test of the known bug this failure matches, or None."""
    kind = f"onnx-{out.onnx}" if out.onnx in ("different", "error") else out.kind
    message = out.message or out.onnx_message
    text = case if isinstance(case, str) else repr(case)
    for fam, k, msg, case_re, test in KNOWN_BUGS:
        if family == fam and kind == k and re.search(msg, message) and re.search(case_re, text):
            return test
    return None


# ----------------------------------------------------------------------------- statistics

COLUMNS = ("tried", "equal", "refused", "untouched", "different", "error", "onnx", "onnx_skipped",
           "verify_tol")


def new_stats() -> dict[str, Any]:
    return {"passes": {}, "reasons": {}, "families": {}, "invalid": {}, "failures": [],
            "onnx_notes": collections.Counter(), "known": collections.Counter()}


def norm_reason(r: str) -> str:
    """A refusal reason with names and numbers blanked, so equal reasons group together."""
    r = r.strip().splitlines()[0] if r.strip() else r
    r = re.sub(r"'[^']*'", "'…'", r)
    r = re.sub(r"\(\d[\d, x]*\)", "(N)", r)
    r = re.sub(r"-?\d[\d,]*(\.\d+)?(e-?\d+)?", "N", r)
    return r[:110]


def record(stats: dict[str, Any], case: Case, out: Outcome) -> None:
    fam = stats["families"].setdefault(case.family, collections.Counter())
    if out.kind == "invalid":
        fam["invalid"] += 1
        stats["invalid"].setdefault(case.family, collections.Counter())[norm_reason(out.message)] += 1
        return
    fam["cases"] += 1
    fam[out.kind] += 1
    if out.onnx:
        fam["onnx_" + out.onnx] += 1
        if out.onnx_message and out.onnx != "equal":
            stats["onnx_notes"][f"{out.onnx}: {norm_reason(out.onnx_message)}"] += 1
    applied = set(out.applied)
    skipped: dict[str, str] = {}
    for p, r in out.skipped:  # normalise's refusals belong to the pass the case aims at
        for q in (case.passes[:1] if p in ("normalise", "capture") else (p,)):
            skipped.setdefault(q, r)
    if out.kind == "refused" and not skipped and not applied:
        skipped[case.passes[0]] = out.message or "; ".join(out.remaining) or "refused"
    if out.remaining and not skipped and not out.failed:
        skipped[case.passes[0]] = "left in place: " + "; ".join(out.remaining)
    crashed_in = re.findall(r" at (\w+)\.py:\d+", out.message) if out.kind == "error" else []
    if crashed_in and any(crashed_in[0] in ps for _, ps, _ in FAMILIES.values()):
        applied.add(crashed_in[0])  # a pass raised: its failure
    elif out.kind == "error" and out.message.startswith("fxlower.lower raised"):
        applied.add(case.passes[0])  # lowering crashed on a model holding just that op
    if out.failed and not applied:  # no rewrite applied: capture or normalise differs
        c = stats["passes"].setdefault("(capture, no rewrite)", collections.Counter())
        c["tried"] += 1
        c["error" if out.kind in ("error", "harness") or out.onnx == "error" else "different"] += 1
        return
    for p in dict.fromkeys([*case.passes, *applied, *skipped]):
        c = stats["passes"].setdefault(p, collections.Counter())
        aimed = p in case.passes
        if p not in applied and p not in skipped and not aimed:
            continue
        c["tried"] += 1
        if out.failed and p in applied:
            c["error" if out.kind in ("error", "harness") or out.onnx == "error" else "different"] += 1
        elif p in applied:
            c["equal"] += 1
            if out.onnx in ("equal", "different", "error"):
                c["onnx"] += 1
            elif out.onnx == "skipped":
                c["onnx_skipped"] += 1
            if out.verify_tol:
                c["verify_tol"] += 1
        elif p in skipped:
            c["refused"] += 1
            stats["reasons"].setdefault(p, collections.Counter())[norm_reason(skipped[p])] += 1
        else:
            c["untouched"] += 1


def merge_stats(into: dict[str, Any], part: dict[str, Any]) -> None:
    for key in ("passes", "reasons", "families", "invalid"):
        for k, v in part[key].items():
            into[key].setdefault(k, collections.Counter()).update(v)
    into["failures"] += part["failures"]
    into["onnx_notes"].update(part["onnx_notes"])
    into["known"].update(part["known"])


# ----------------------------------------------------------------------------- running


class _Failed(Exception):
    pass


def signature(family: str, out: Outcome) -> str:
    """What tells one bug from another (coarsely: one shrink per signature): the family, the
    kind, the passes applied, and for crashes and onnxruntime failures where they happened."""
    passes = ",".join(sorted(set(out.applied)))
    if out.kind in ("different", "error", "harness"):
        where = re.findall(r" at (\S+:\d+)", out.message) if out.kind != "different" else []
        return f"{family}/{out.kind}/{passes}/{where[:1]}"
    msg = re.sub(r"\(example inputs\)|\(fresh draw\)", "", out.onnx_message)
    return f"{family}/onnx-{out.onnx}/{passes}/{norm_reason(msg)[:60]}"


_KNOWN: Any = None  # signatures of failures already being shrunk (shared between workers)


def _init_worker(known: Any) -> None:
    global _KNOWN
    _KNOWN = known


class _Chunk:
    """One family's share of the run: hypothesis draws the cases, `prop` runs each, and the
    first failure of each new signature is shrunk (hypothesis's shrink phase), for at most
    `shrink_seconds`, then kept with its reproducer."""

    def __init__(self, family: str, onnx_every: int, onnx_offset: int,
                 shrink_seconds: float, known: Any) -> None:
        self.family, self.onnx_every, self.onnx_offset = family, onnx_every, onnx_offset
        self.shrink_seconds, self.known = shrink_seconds, known
        self.stats = new_stats()
        self.strategy = st.composite(_safe(FAMILIES[family][0], family))()
        self.done = 0  # cases drawn in earlier attempts
        self.valid = 0  # cases PyTorch accepted (the others are "invalid" and not counted)
        self.pending_onnx = False
        self.reset(0)

    def reset(self, hyp_seed: int) -> None:
        self.hyp_seed = hyp_seed
        self.count = 0  # cases drawn in this attempt
        self.best: tuple[Case, Outcome] | None = None  # the failure being shrunk
        self.first: Case | None = None  # that failure as first drawn
        self.sig, self.t, self.onnx = "", 0.0, False

    def keep(self, case: Case, out: Outcome) -> None:
        self.stats["failures"].append({
            "family": self.family, "seed": self.hyp_seed, "kind": out.kind, "onnx": out.onnx,
            "message": out.message or out.onnx_message, "applied": out.applied,
            "case": repr(case), "fingerprint": case.fingerprint(), "size": case_size(case),
            "drawn": repr(self.first or case), "drawn_size": case_size(self.first or case),
            "source": regression_source(case, out, self.hyp_seed)})

    def prop(self, case: Case) -> None:
        if self.best is None:  # generating
            self.count += 1
            k = self.done + self.count + self.onnx_offset
            if self.onnx_every and k % self.onnx_every == 0:
                self.pending_onnx = True
            with _silenced():
                out = run_case(case, onnx=self.pending_onnx)
            if out.onnx:
                self.pending_onnx = False
            record(self.stats, case, out)
            self.valid += out.kind != "invalid"
            if not out.failed:
                return
            bug = known_bug(self.family, out, case)
            if bug:
                self.stats["known"][bug] += 1
                return
            sig = signature(self.family, out)
            if sig in self.known:
                return  # counted; shrunk elsewhere
            self.known[sig] = True
            if self.shrink_seconds <= 0:  # keep it as drawn and run on
                self.keep(case, out)
                return
            self.best, self.sig, self.t = (case, out), sig, time.monotonic()
            self.first = case
            self.onnx = out.onnx in ("different", "error")
            raise _Failed(out.message or out.onnx_message)
        best_case, best_out = self.best
        if time.monotonic() - self.t > self.shrink_seconds:  # shrinking took long enough
            if case.fingerprint() == best_case.fingerprint():
                raise _Failed(best_out.message)
            return
        with _silenced():
            out = run_case(case, onnx=self.onnx)
        if out.failed and signature(self.family, out).split("/")[:2] == self.sig.split("/")[:2]:
            self.best = (case, out)
            raise _Failed(out.message or out.onnx_message)

    def attempt(self, n: int, hyp_seed: int) -> bool:
        """Run up to n cases; True when a failure stopped the attempt early."""
        self.reset(hyp_seed)
        test = settings(max_examples=n, database=None, deadline=None,
                        phases=[Phase.generate, Phase.shrink], verbosity=Verbosity.quiet,
                        suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
                        print_blob=False)(hseed(hyp_seed)(given(self.strategy)(self.prop)))
        try:
            test()
        except Exception:
            if self.best is None:  # not ours
                raise
            self.keep(*self.best)  # _Failed, or hypothesis's Flaky around it
        self.done += self.count
        return self.best is not None


def case_size(case: Case) -> int:
    """How big a case is: its tensors' elements, its statements and its parameters."""
    return (sum(t.numel() for t in (*case.inputs, *case.state.values())) + len(case.body)
            + len(case.init))


def run_chunk(family: str, n: int, seed: int, onnx_every: int = 0, onnx_offset: int = 0,
              shrink_seconds: float = 120.0, max_failures: int = 3) -> dict[str, Any]:
    """Draw and run `n` cases of one family with hypothesis (seeded). The first case of each
    new failure signature is shrunk (for at most `shrink_seconds`) and its minimal form kept
    in stats["failures"]; later cases with a known signature are counted and run on.
    shrink_seconds <= 0: failures are kept as drawn, unshrunk."""
    global _KNOWN
    if _KNOWN is None:
        _KNOWN = {}
    quiet_torch()
    torch.set_num_threads(1)  # tiny ops: a thread pool only costs (and a busy machine stalls it)
    t0 = time.perf_counter()
    chunk = _Chunk(family, onnx_every, onnx_offset, shrink_seconds, _KNOWN)
    attempt = 0
    while chunk.valid < n and len(chunk.stats["failures"]) < max_failures and attempt < 20:
        before = chunk.valid
        chunk.attempt(n - chunk.valid, seed + 7919 * attempt)  # n cases PyTorch accepts
        attempt += 1
        if chunk.valid == before:
            break  # hypothesis ran out of distinct examples
    fam = chunk.stats["families"].setdefault(family, collections.Counter())
    fam["seconds"] += time.perf_counter() - t0
    return chunk.stats


# ----------------------------------------------------------------------------- reproducers


def _num(v: Any) -> str:
    if isinstance(v, bool):
        return repr(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
    return repr(v)


def tensor_literal(t: torch.Tensor) -> str:
    flat = (t.float() if t.dtype == BF16 else t).reshape(-1).tolist()
    return (f"torch.tensor([{', '.join(_num(v) for v in flat)}], dtype={t.dtype})"
            f".reshape({_fmt_shape(tuple(t.shape))})")


def regression_source(case: Case, out: Outcome, seed: int) -> str:
    """A standalone pytest file reproducing a failing case with its literal values."""
    name = f"test_fuzz_{case.family}_{case.fingerprint()}"
    state = "{" + "".join(f"\n    {k!r}: {tensor_literal(v)}," for k, v in case.state.items()) + "\n}"
    ins = "".join(f"\n    {tensor_literal(t)}," for t in case.inputs)
    fresh = "".join(f"\n    {tensor_literal(t)}," for t in case.fresh)
    kw = "".join(f", {k}={v!r}" for k, v in case.lower_kw.items())
    kw += "" if case.mkldnn else ", mkldnn=False"
    what = out.message or out.onnx_message
    return f'''"""Found by `python -m tools.fuzz` (family {case.family}, hypothesis seed {seed}) and
shrunk to this case: {case.note}.

{out.kind}{' (onnxruntime)' if out.onnx in ('different', 'error') else ''}: {what[:600]}
applied: {', '.join(out.applied) or 'nothing'}
"""

import torch
import torch.nn as nn
import torch.nn.functional as F  # noqa: F401

from tools.fuzz.oracle import evaluate

nan, inf = float("nan"), float("inf")


{case.source()}

STATE = {state}
INPUTS = ({ins}
)
FRESH = ({fresh}
)


def build() -> nn.Module:
    m = M()
    m.load_state_dict(STATE)
    return m.{'train' if case.train else 'eval'}()


def {name}() -> None:
    out = evaluate(build, INPUTS, FRESH, tracer={case.tracer!r}, check={case.check!r},
                   onnx={out.onnx in ('different', 'error')}{kw})
    assert not out.failed, out.message or out.onnx_message
'''


def save_regressions(failures: list[dict[str, Any]], save_dir: str) -> list[str]:
    os.makedirs(save_dir, exist_ok=True)
    paths = []
    for f in failures:
        if not f["source"]:
            continue
        path = os.path.join(save_dir, f"test_fuzz_{f['family']}_{f['fingerprint']}.py")
        with open(path, "w") as fh:
            fh.write(f["source"])
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------- driver


def pass_names() -> list[str]:
    from fxlower.passes import PASSES

    return [p.name for p in PASSES]


def select_families(only: str | None) -> list[str]:
    if not only:
        return list(FAMILIES)
    names = [s.strip() for s in only.split(",") if s.strip()]
    fams = [f for f in FAMILIES if f in names or any(n in FAMILIES[f][1] for n in names)]
    if not fams:
        raise SystemExit(f"--only {only}: no family or pass of that name (families: "
                         f"{', '.join(FAMILIES)}; passes: {', '.join(pass_names())})")
    return fams


def budgets(total: int, families: list[str]) -> dict[str, int]:
    """Split the case budget by the families' weights (largest remainders), at least 1 each."""
    w = {f: FAMILIES[f][2] for f in families}
    raw = {f: total * w[f] / sum(w.values()) for f in families}
    out = {f: max(1, int(raw[f])) for f in families}
    for f in sorted(families, key=lambda f: raw[f] - int(raw[f]), reverse=True):
        if sum(out.values()) >= total:
            break
        out[f] += 1
    return out


def run(cases: int = 10_000, seed: int = 0, only: str | None = None, onnx_every: int = 100,
        jobs: int = 1, shrink_seconds: float = 120.0, chunk: int = 250,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the fuzzer; returns the merged statistics (see `format_summary`)."""
    fams = select_families(only)
    tasks: list[tuple[str, int, int, int, int, float]] = []
    offset = 0
    for f, n in budgets(cases, fams).items():
        parts = max(1, math.ceil(n / chunk))
        for j in range(parts):
            m = n // parts + (1 if j < n % parts else 0)
            tasks.append((f, m, seed * 1_000_003 + len(tasks) * 7_777, onnx_every, offset,
                          shrink_seconds))
            offset += m
    tasks.sort(key=lambda t: -t[1] * (2.0 if t[0] in ("conv", "linear") else 1.0))
    stats = new_stats()
    t0 = time.perf_counter()
    if jobs <= 1:
        _init_worker({})
        threads = torch.get_num_threads()
        try:
            for t in tasks:
                try:
                    part = run_chunk(*t)
                except Exception as e:  # noqa: BLE001 - keep the other chunks' results
                    part = _crashed_chunk(t, e)
                merge_stats(stats, part)
                if progress:
                    progress(_progress_line(t, part, t0))
        finally:
            torch.set_num_threads(threads)
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        manager = ctx.Manager()
        with manager, ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                                          initargs=(manager.dict(),)) as ex:
            futs = {ex.submit(run_chunk, *t): t for t in tasks}
            for fut in as_completed(futs):
                try:
                    part = fut.result()
                except Exception as e:  # noqa: BLE001 - keep the other chunks' results
                    part = _crashed_chunk(futs[fut], e)
                merge_stats(stats, part)
                if progress:
                    progress(_progress_line(futs[fut], part, t0))
    stats["wall_seconds"] = time.perf_counter() - t0
    stats["settings"] = {"cases": cases, "seed": seed, "only": only, "onnx_every": onnx_every,
                         "jobs": jobs}
    return stats


def _crashed_chunk(task: tuple[Any, ...], e: BaseException) -> dict[str, Any]:
    """The stats of a chunk the harness itself crashed in: one harness failure."""
    stats = new_stats()
    stats["families"][task[0]] = collections.Counter(harness=1)
    stats["failures"].append({
        "family": task[0], "seed": task[2], "kind": "harness", "onnx": "",
        "message": f"the fuzzer crashed in this chunk: {where_raised(e)}", "applied": [],
        "case": f"(chunk of {task[1]} {task[0]} cases, seed {task[2]})", "fingerprint": "",
        "size": 0, "drawn": "", "drawn_size": 0, "source": ""})
    return stats


def _progress_line(task: tuple[Any, ...], part: dict[str, Any], t0: float) -> str:
    fam = part["families"].get(task[0], {})
    bad = len(part["failures"])
    return (f"[{time.perf_counter() - t0:7.1f}s] {task[0]:<15} {fam.get('cases', 0):>5} cases "
            f"({fam.get('invalid', 0)} invalid draws) in {fam.get('seconds', 0):6.1f}s"
            + (f"  {bad} FAILURE(S)" if bad else ""))


def totals(stats: dict[str, Any]) -> collections.Counter[str]:
    t: collections.Counter[str] = collections.Counter()
    for c in stats["families"].values():
        t.update(c)
    return t


def format_summary(stats: dict[str, Any], reasons: int = 3) -> str:
    try:
        names = pass_names()
    except Exception:  # noqa: BLE001 - the registry does not import (being edited): go on
        names = []
    rows = [p for p in names] + sorted(p for p in stats["passes"] if p not in names)
    cols = ("tried", "equal", "refused", "untouched", "different", "error", "onnx", "verify_tol")
    head = ("pass", "tried", "applied=", "refused", "untouched", "DIFFERENT", "errors", "onnx",
            "tol-miss")
    w = max(len(r) for r in rows) + 2
    lines = [f"{head[0]:<{w}}" + "".join(f"{h:>10}" for h in head[1:])]
    for p in rows:
        c = stats["passes"].get(p, collections.Counter())
        mark = "" if c["equal"] else "   <- never applied"
        lines.append(f"{p:<{w}}" + "".join(f"{c[k]:>10}" for k in cols) + mark)
    t = totals(stats)
    lines.append("")
    lines.append(
        f"cases: {t['cases']} ({t['equal']} equal, {t['refused']} refused, {t['untouched']} "
        f"untouched, {t['different']} DIFFERENT, {t['error'] + t['harness']} errors; "
        f"{t['invalid']} invalid draws not counted); onnxruntime checks: {t['onnx_equal']} equal, "
        f"{t['onnx_different']} different, {t['onnx_error']} errors, {t['onnx_skipped']} skipped")
    fams = "  ".join(f"{f} {c['cases']} in {c['seconds']:.0f}s" for f, c in stats["families"].items())
    lines.append(f"per family: {fams}")
    if "wall_seconds" in stats:
        lines.append(f"wall time: {stats['wall_seconds']:.1f}s")
    lines.append("")
    lines.append("commonest refusal reasons per pass:")
    for p in rows:
        rc = stats["reasons"].get(p)
        if not rc:
            continue
        lines.append(f"  {p} ({sum(rc.values())} refused):")
        for r, n in rc.most_common(reasons):
            lines.append(f"    {n:>6}  {r}")
    if stats["invalid"]:
        lines.append("draws PyTorch itself rejects (not counted):")
        for f, rc in stats["invalid"].items():
            for r, n in rc.most_common(2):
                lines.append(f"    {n:>6}  {f}: {r}")
    if stats["onnx_notes"]:
        lines.append("onnx notes:")
        for r, n in stats["onnx_notes"].most_common(5):
            lines.append(f"    {n:>6}  {r}")
    if stats["known"]:
        lines.append("")
        lines.append(f"KNOWN BUGS, not fixed yet ({sum(stats['known'].values())} of the failing cases "
                     "above; each has a strict-xfail test in tests/regressions/):")
        for test, n in stats["known"].most_common():
            lines.append(f"    {n:>6}  {test}")
    if stats["failures"]:
        lines.append("")
        lines.append(f"NEW FAILURES ({len(stats['failures'])}), shrunk:")
        for f in stats["failures"]:
            kind = f"onnx {f['onnx']}" if f["onnx"] in ("different", "error") else f["kind"]
            lines.append(f"  [{f['family']}] {kind}: "
                         f"{f['message'][:300]}")
            lines.append(f"      {f['case'][:400]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000, help="cases in all (default 10000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", help="a pass or family name (comma-separated list allowed)")
    ap.add_argument("--onnx-every", type=int, default=100, metavar="K",
                    help="export every K-th rewritten case and compare onnxruntime (0: never)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--save-dir", default=os.path.join("tests", "regressions"),
                    help="where shrunk failures are written as pytest files ('' : nowhere)")
    ap.add_argument("--shrink-seconds", type=float, default=120.0)
    ap.add_argument("--reasons", type=int, default=3, help="refusal reasons listed per pass")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 on known, unfixed bugs too (default: only on new failures)")
    a = ap.parse_args(argv)
    print(f"tools.fuzz: {a.cases} cases, seed {a.seed}, {a.jobs} job(s), onnxruntime every "
          f"{a.onnx_every or 'never'}", flush=True)
    stats = run(a.cases, a.seed, a.only, a.onnx_every, a.jobs, a.shrink_seconds,
                progress=lambda s: print(s, flush=True))
    print()
    print(format_summary(stats, a.reasons))
    if stats["failures"] and a.save_dir:
        for p in save_regressions(stats["failures"], a.save_dir):
            print(f"reproducer written: {p}")
    if stats["failures"]:
        return 1
    return 1 if a.strict and stats["known"] else 0


if __name__ == "__main__":
    sys.exit(main())
