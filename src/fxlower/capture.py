"""Capture an nn.Module as a torch.fx GraphModule.

`torch.fx.symbolic_trace` first (readable torch-level graphs, no inputs needed); when it
fails, or when the traced graph cannot run the example inputs, `torch.export.export`
(non-strict) on the example inputs, functionalised (`run_decompositions({})`: in-place
updates become their functional forms, no other op is decomposed). The user's model is
never touched: capture works on a snapshot (graph.snapshot: the module tree copied, the
parameters shared, buffers cloned).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx

from .errors import LoweringError
from .graph import _mutates, arg, preserved_state, snapshot


@dataclass
class Captured:
    gm: fx.GraphModule
    method: str  # "symbolic_trace" | "torch.export"
    note: str  # why symbolic tracing was not used ("" when it was)


_DUNDER_CALLS = {"__getitem__": operator.getitem, "__setitem__": operator.setitem}


def _mode_of(model: torch.nn.Module, gm: fx.GraphModule) -> fx.GraphModule:
    """A new GraphModule starts in training mode; give it the model's own flag (the
    submodules it holds keep theirs), so `lowered.training == model.training` and passes
    that depend on the mode see the model's. Also one spelling of indexing: symbolic
    tracing records `self.buffer[ids]` / `self.buffer[ids] = v` as call_method
    `__getitem__` / `__setitem__` (a proxy's are call_function operator.getitem/setitem);
    both become the latter, which normalising, the census and dead-code removal know.
    And `contiguous` becomes a copy that does not depend on strides (see below)."""
    gm.training = model.training
    changed = False
    for n in gm.graph.nodes:
        if n.op == "call_method" and n.target in _DUNDER_CALLS:
            n.op, n.target = "call_function", _DUNDER_CALLS[str(n.target)]
            changed = True
        changed |= _copy_instead_of_contiguous(n)
    if changed:
        gm.recompile()
    return gm


def _copy_instead_of_contiguous(n: fx.Node) -> bool:
    """`x.contiguous()` depends on x's strides when traced: it copies, or returns x when x
    is already contiguous. The ONNX exporter re-traces the graph with other kernels for some
    ops (SDPA's fake CPU kernel lays its output out as [B, L, H, D] transposed, its
    decomposition as [B, H, L, D]), so a `contiguous` dropped in one trace leaves a `view`
    of a transposed tensor that the next trace cannot take ("Cannot view a tensor with
    shape ... and strides ..."; Swin, T5, BEiT with SDPA attention, even in the plain
    export). A copy in the memory format asked for, `clone(memory_format=...)`, means the
    same values whatever the strides, and exports to nothing (Identity, removed)."""
    if n.op == "call_function" and n.target is torch.ops.aten.contiguous.default:
        n.target = torch.ops.aten.clone.default
    elif n.op == "call_method" and n.target == "contiguous":
        n.target = "clone"
    else:
        return False
    fmt = arg(n, 1, "memory_format")
    n.args = n.args[:1]
    n.kwargs = {"memory_format": fmt if fmt is not None else torch.contiguous_format}
    return True


def _opaque_leaves(gm: fx.GraphModule) -> list[str]:
    """Leaf modules symbolic tracing does not enter although their insides export to
    Gather-family nodes (nn.Embedding is handled as a module and is not among them)."""
    from .census import OPAQUE_MODULES

    out = []
    for n in gm.graph.nodes:
        if n.op == "call_module":
            mod = gm.get_submodule(str(n.target))
            if isinstance(mod, OPAQUE_MODULES):
                out.append(f"{type(mod).__name__} '{n.target}'")
    return out


def _mutates_anything(ep: Any) -> bool:
    """Whether the exported graph writes anything (an in-place or out= op, a buffer or input
    it mutates, a training-mode BatchNorm): only then is functionalising worth its cost
    (`run_decompositions` takes about three times as long as the export on BERT-base). A
    graph without writes is already functional and is used as exported."""
    sig = ep.graph_signature
    if sig.buffers_to_mutate or sig.user_inputs_to_mutate or getattr(
            sig, "parameters_to_mutate", None):
        return True
    for n in ep.graph.nodes:
        if n.op != "call_function":
            continue
        t = n.target
        if _mutates(n):
            return True
        if t is torch.ops.aten.batch_norm.default and len(n.args) > 5 and n.args[5]:
            return True  # training-mode BN updates its running statistics
        if not isinstance(t, torch._ops.OpOverload) and t is not operator.getitem:
            return True  # (higher-order ops and anything unknown: functionalise)
    return False


def _detach_parameter_writes(gm: fx.GraphModule) -> None:
    """Functionalisation turns an in-place write into a parameter made under no_grad (an
    embedding's max_norm renormalisation writes `weight.detach()`) into `copy_(weight, new)`,
    which raises under autograd ("a leaf Variable that requires grad is being used in an
    in-place operation"). The eager code wrote through a detached alias; so does the graph:
    `copy_(weight.detach(), new)` writes the same storage and runs with autograd on."""
    params = {name for name, p in gm.named_parameters() if p.requires_grad}
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or not _mutates(n) or not n.args:
            continue
        dst = n.args[0]
        if isinstance(dst, fx.Node) and dst.op == "get_attr" and dst.target in params:
            with gm.graph.inserting_before(n):
                alias = gm.graph.call_function(torch.ops.aten.detach.default, (dst,))
            n.args = (alias, *n.args[1:])
    gm.recompile()


def _reason(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"


def capture(
    model: torch.nn.Module, example_inputs: tuple[Any, ...] | None, tracer: str = "auto"
) -> Captured:
    """Trace a snapshot of `model` (graph.snapshot: parameters shared, never copied).
    Raises LoweringError with each tracer's own reason.

    tracer: "auto" (symbolic_trace, then torch.export), "symbolic_trace" or "export".
    """
    if tracer not in ("auto", "symbolic_trace", "export"):
        raise ValueError("tracer must be 'auto', 'symbolic_trace' or 'export'")
    if tracer == "export":
        return _export(model, example_inputs, "not tried (tracer='export')")
    work = snapshot(model)
    try:
        gm = fx.symbolic_trace(work)
        if example_inputs is not None:
            with torch.no_grad(), preserved_state(gm):
                gm(*example_inputs)  # a traced graph must also run the example inputs
        opaque = _opaque_leaves(gm)
        if not opaque or example_inputs is None:
            return Captured(_mode_of(model, gm), "symbolic_trace", "")
        trace_error = (f"it keeps {', '.join(opaque)} as opaque leaf modules whose insides "
                       "export to Gather; torch.export decomposes them")
        if tracer == "symbolic_trace":
            return Captured(_mode_of(model, gm), "symbolic_trace", "")
    except Exception as e:  # noqa: BLE001 - any tracer failure means: try the next tracer
        trace_error = _reason(e)
        if tracer == "symbolic_trace":
            raise LoweringError(f"torch.fx.symbolic_trace failed: {trace_error}") from e
    # a fresh snapshot for torch.export: a forward traced with proxies may have stored them
    # on the first one (snapshots share the parameters, so a second costs next to nothing)
    return _export(model, example_inputs, trace_error)


def _export(
    model: torch.nn.Module, example_inputs: tuple[Any, ...] | None, trace_error: str,
) -> Captured:
    if example_inputs is None:
        raise LoweringError(
            f"torch.fx.symbolic_trace failed ({trace_error}) and no example_inputs were "
            "given, so torch.export could not be tried"
        )
    work = snapshot(model)
    try:
        ep = torch.export.export(work, tuple(example_inputs), strict=False)
    except Exception as e:  # noqa: BLE001
        raise LoweringError(
            "neither tracer could capture the model: "
            f"torch.fx.symbolic_trace: {trace_error}; torch.export: {_reason(e)}"
        ) from e
    if _mutates_anything(ep):
        try:
            # functionalise (slice assignment becomes slice_scatter, index_put_ index_put,
            # BN the no-training op) without decomposing anything else
            ep = ep.run_decompositions({})
        except Exception as e:  # noqa: BLE001
            raise LoweringError(
                f"torch.export could not functionalise the graph: {_reason(e)}") from e
    gm = ep.module()
    _detach_parameter_writes(gm)
    if trace_error.startswith("not tried"):
        note = trace_error
    elif trace_error.startswith("it keeps"):
        note = f"symbolic_trace not used: {trace_error}"
    else:
        note = f"symbolic_trace failed: {trace_error}"
    return Captured(_mode_of(model, gm), "torch.export", note)
