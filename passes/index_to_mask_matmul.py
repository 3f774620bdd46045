"""index_to_mask_matmul: advanced indexing becomes a one-hot matrix product.

Covers `x[idx]`, `x[:, idx]`, `x[i, j]` (several index tensors, broadcast together),
negative indices, `index_select`, `nn.Embedding` / `F.embedding` (any `padding_idx`),
`torch.take` and `aten.index.Tensor` (all normalised to `aten.index.Tensor(x, indices)`).

Algebra: let the indexed dims of x have sizes N_1..N_m and the index tensors broadcast to
shape S. With L = sum_j wrap(i_j) * stride_j the linear position in the flattened indexed
dims (N = prod N_j; wrap(i) = i + N_j for i < 0), and x viewed as [pre, N, post]:
    out[p, s, q] = sum_n onehot(L)[s, n] * x[p, n, q]      (kernels.take_rows)
then reshaped to PyTorch's result shape (index dims in place when the indexed dims are
adjacent, else first). Adjacent indexed dims need no transpose; with post == 1 the
transposed one-hot multiplies from the right, so x is never transposed.

Legality (each a skip reason):
1. static shapes of x and of every index are known (pass example_inputs);
2. no index is boolean / uint8 (a mask index has a data-dependent output shape);
3. a constant index is in range (torch raises otherwise; we refuse rather than guess);
4. the target allows the ops of one exact formulation (`kernels.choose`: compare mask,
   else arithmetic mask; the non-finite code path needs comparisons and Where).

Formulations:
- index known when lowering (buffer, constant, arange): no run-time mask. Runs of a
  constant step become Slice + Concat when there are at most 16 of them; else, when the
  source is known too (a relative-position table), the looked-up values are folded into
  one constant (`_common.fold_lookup`: eval mode only, never larger than the one-hot);
  else the one-hot matrix is precomputed as a constant.
- otherwise: Equal against a constant arange, Cast, MatMul; for targets without
  comparisons the arithmetic mask relu(1 - |L - n|) (Sub, Abs, Relu; negative indices
  wrapped with Relu arithmetic), exact while N <= 2**24.

Numerics: exact for every dtype and value (see kernels/gather.py): float sources that may hold
NaN/inf/-0.0 carry a packed class code (1/8 extra multiply-adds); parameters found finite
when lowering, integer sources and `assume_finite=True` skip it. Integers are reduced in
their own dtype. Out-of-range run-time indices give zeros where torch would raise.
Cost: pre*K*N*post multiply-adds (K = numel(S)); mask K*N elements.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.fx as fx

from fxlower.graph import Builder, node_of
from fxlower.kernels import gather as kernels
from fxlower.normalise import INDEX
from fxlower.rewrite import Context, Plan, RewritePass, Skip

from ._common import FOLDED, MAX_RUNS, fold_lookup, known_finite, replace_folded


class IndexToMaskMatmul(RewritePass):
    name = "index_to_mask_matmul"

    def match(self, node: fx.Node, ctx: Context) -> bool:
        return node.op == "call_function" and node.target is INDEX

    def check(self, node: fx.Node, ctx: Context) -> Plan | Skip:
        x, indices_arg = node.args
        indices = cast("Sequence[fx.Node | None]", indices_arg)  # aten.index.Tensor's list
        sx = ctx.spec(x)
        if not isinstance(x, fx.Node) or sx is None:  # (spec is None for a non-node)
            return Skip("shapes unknown: pass example_inputs so the mask size is static")
        pos = [p for p, t in enumerate(indices) if t is not None]
        maybe_specs = [ctx.spec(indices[p]) for p in pos]
        specs = [s for s in maybe_specs if s is not None]
        if len(specs) != len(maybe_specs):
            return Skip("index shapes unknown: pass example_inputs")
        if any(s.dtype in (torch.bool, torch.uint8) for s in specs):
            return Skip("boolean mask index: the output shape depends on the data")
        sizes = [sx.shape[p] for p in pos]
        shape_s = tuple(torch.broadcast_shapes(  # type: ignore[no-untyped-call]
            *[s.shape for s in specs]))
        n = math.prod(sizes)
        k = math.prod(shape_s)
        adjacent = pos == list(range(pos[0], pos[-1] + 1))
        others = [d for d in range(sx.rank) if d not in pos]
        if adjacent:
            pre = math.prod(sx.shape[: pos[0]])
            post = math.prod(sx.shape[pos[-1] + 1 :])
            out_shape = sx.shape[: pos[0]] + shape_s + sx.shape[pos[-1] + 1 :]
        else:
            pre, post = 1, math.prod(sx.shape[d] for d in others)
            out_shape = shape_s + tuple(sx.shape[d] for d in others)
        if math.prod(out_shape) == 0:
            return Plan(detail="empty result: an empty slice", data={"empty": out_shape})
        data = {"pos": pos, "sizes": sizes, "n": n, "k": k, "pre": pre, "post": post,
                "adjacent": adjacent, "others": others, "out_shape": out_shape,
                "dtype": sx.dtype, "known_finite": known_finite(x, ctx)}
        where = f"{k} of {n} rows" + ("" if adjacent else " (indexed dims moved first)")
        if all(ctx.is_const(indices[p]) for p in pos):
            lin = self._linear(ctx, [ctx.value(indices[p]) for p in pos], sizes, shape_s)
            if isinstance(lin, str):
                return Skip(lin)
            pieces = kernels.runs(lin.tolist())
            data["lin"] = lin
            if len(pieces) <= MAX_RUNS:
                data["pieces"] = pieces
                return Plan(detail=f"constant index: {len(pieces)} slice(s), {where}", data=data)
            folded = fold_lookup(node, ctx, k * n)
            if folded is not None:
                return folded
            macs = pre * k * n * post
            return Plan(detail=f"constant index: precomputed one-hot matmul, {where}",
                        macs=macs + (0 if data["known_finite"] else macs // 8), data=data)
        fm = kernels.choose(ctx.options.target, codes=not data["known_finite"], wrap=True,
                            elementwise=False, n=n)
        if isinstance(fm, str):
            return Skip(fm)
        data["fm"] = fm
        data["index_dtypes"] = [s.dtype for s in specs]
        macs = pre * k * n * post
        code = "" if data["known_finite"] else " + non-finite code path"
        code += "" if fm.mask == "compare" else " (arithmetic mask)"
        return Plan(detail=f"one-hot matmul{code}, {where}",
                    macs=macs + (0 if data["known_finite"] else macs // 8),
                    mask_elems=k * n, data=data)

    @staticmethod
    def _linear(ctx: Context, values: list[torch.Tensor], sizes: list[int],
                shape_s: tuple[int, ...]) -> torch.Tensor | str:
        lin = torch.zeros(shape_s, dtype=torch.int64)
        stride = math.prod(sizes)
        for v, size in zip(values, sizes, strict=True):
            v = v.to(torch.int64)
            if bool(((v < -size) | (v >= size)).any()):
                return f"constant index out of range for a dimension of size {size}"
            stride //= size
            lin = lin + torch.where(v < 0, v + size, v) * stride
        return lin.reshape(-1)

    def replace(self, node: fx.Node, plan: Plan, b: Builder) -> fx.Node:
        d = plan.data
        if FOLDED in d:
            return replace_folded(node, plan, b)
        if "empty" in d:
            return node_of(b.proxy(cast(fx.Node, node.args[0])).reshape(-1)[0:0].reshape(d["empty"]))
        x = b.proxy(cast(fx.Node, node.args[0]))
        if not d["adjacent"]:
            x = x.permute(*d["pos"], *d["others"])
        x3 = x.reshape(d["pre"], d["n"], d["post"])
        if "pieces" in d:
            y = kernels.slice_rows(x3, d["pieces"], d["n"])
            return node_of(y.reshape(d["out_shape"]))
        if "lin" in d:
            lin = d["lin"]
        else:
            indices = cast("Sequence[fx.Node]", node.args[1])  # the positions `pos` hold nodes
            fm = d["fm"]
            lin = None
            stride = d["n"]
            for p, size in zip(d["pos"], d["sizes"], strict=True):
                i = b.proxy(indices[p])
                stride //= size
                term = kernels.wrap_negative(i, size, fm)
                term = term * stride if stride != 1 else term
                lin = term if lin is None else lin + term
            lin = lin.reshape(-1)
            if fm.mask == "compare" and fm.index_dtype == torch.int64 and any(
                dt != torch.int64 for dt in d["index_dtypes"]
            ):
                lin = lin.to(torch.int64)
        y = kernels.take_rows(
            b, x3, lin, pre=d["pre"], n=d["n"], post=d["post"], k=d["k"], batched=False,
            dtype=d["dtype"], known_finite=d["known_finite"], fm=d.get("fm", kernels.DEFAULT),
        )
        return node_of(y.reshape(d["out_shape"]))
