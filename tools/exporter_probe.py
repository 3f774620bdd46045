"""Ground the Gather/Scatter census in what the pinned ONNX exporter really emits.

Three parts (run with the project venv; torch 2.13 CPU, onnxscript 0.7.2):

  python tools/exporter_probe.py static    # read the exporter: registry + decomposition table
  python tools/exporter_probe.py probe     # export one tiny module per case, count op types
  python tools/exporter_probe.py opinfo    # the same export over PyTorch's OpInfo database
  python tools/exporter_probe.py timing    # cost of a one-node "what will this export to" query

Results are written up in docs/exporter-ops.md ("Grounded census" section).

`static` walks every torchlib function registered in
`torch.onnx._internal.exporter._registration.ONNXRegistry.from_torchlib()` (OnnxFunction protos
via `.to_function_proto()`, traced functions via their source, following calls to helper /
other aten_* functions transitively) and reports which can emit a forbidden op, with the
`if` conditions guarding each emission site. It then lists the aten overloads in the
exporter's decomposition table (`_decomp.create_onnx_friendly_decomposition_table`) and, for
each candidate op, traces the decomposition to show which registered ops it becomes.

`probe` is the empirical check: for each case a tiny nn.Module with static shapes is exported
with `torch.onnx.export(m, args, dynamo=True)` (default optimize=True) and the forbidden op
types are counted (function bodies and subgraphs included), each tagged with the ATen op that
produced it (node metadata `pkg.torch.onnx.fx_node` / `namespace`). The ATen ops of the
non-decomposed `torch.export.export(m, args, strict=False)` graph (what fxlower sees) are
listed next to it.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import re
import statistics
import sys
import textwrap
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

FORBIDDEN = ("Gather", "GatherElements", "GatherND", "Scatter", "ScatterElements", "ScatterND")
_FORB_SET = frozenset(FORBIDDEN)


# --------------------------------------------------------------------------------------------
# Part 1: static reading of the exporter
# --------------------------------------------------------------------------------------------

def _underlying(fn: Any) -> Callable | None:
    for attr in ("func", "function"):
        f = getattr(fn, attr, None)
        if callable(f) and hasattr(f, "__code__"):
            return f
    if hasattr(fn, "__code__"):
        return fn
    return None


class _Scanner:
    """Transitive AST scan of torchlib functions for `op.<Forbidden>(` calls."""

    def __init__(self) -> None:
        self._cache: dict[Any, list[tuple[str, str, tuple[str, ...]]]] = {}
        self._busy: set[Any] = set()

    def sites(self, fn: Callable) -> list[tuple[str, str, tuple[str, ...]]]:
        """[(onnx_op, 'module.func' where emitted, (guarding conditions...))]."""
        if fn in self._cache:
            return self._cache[fn]
        if fn in self._busy:
            return []
        self._busy.add(fn)
        out: list[tuple[str, str, tuple[str, ...]]] = []
        try:
            src = textwrap.dedent(inspect.getsource(fn))
            tree = ast.parse(src)
        except (OSError, TypeError, SyntaxError):
            self._busy.discard(fn)
            self._cache[fn] = out
            return out
        glb = dict(getattr(fn, "__globals__", {}))
        where = f"{fn.__module__.split('.')[-1]}.{fn.__name__}"

        def cond_of(stack: list[tuple[ast.AST, str]]) -> tuple[str, ...]:
            conds = []
            for a, branch in stack:
                if isinstance(a, (ast.If, ast.IfExp, ast.While)):
                    t = ast.unparse(a.test)[:90]
                    conds.append(t if branch == "body" else f"not ({t})")
                elif isinstance(a, ast.For):
                    conds.append("for " + ast.unparse(a.target) + " in " + ast.unparse(a.iter)[:60])
            return tuple(conds)

        def resolve(expr: ast.AST) -> Any:
            try:
                if isinstance(expr, ast.Name):
                    return glb.get(expr.id)
                if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
                    base = glb.get(expr.value.id)
                    return getattr(base, expr.attr, None) if base is not None else None
            except Exception:
                return None
            return None

        def visit(node: ast.AST, stack: list[tuple[ast.AST, str]]) -> None:
            if isinstance(node, ast.Call):
                f = node.func
                if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in ("op", "self_op") and f.attr in _FORB_SET:
                    # heuristic: a Gather whose data is a shape folds away when that shape is static
                    first = ast.unparse(node.args[0]) if node.args else ""
                    tag = " (on a shape)" if re.search(r"op\.Shape\(|\b\w*_shape\b|\bshape\b", first) else ""
                    out.append((f.attr + tag, where, cond_of(stack)))
                else:
                    target = resolve(f)
                    u = _underlying(target) if target is not None else None
                    mod = getattr(u, "__module__", "") or ""
                    if u is not None and ("torch_lib" in mod or "_torchlib" in mod):
                        for o, w, c in self.sites(u):
                            out.append((o, w, cond_of(stack) + c))
            if isinstance(node, (ast.If, ast.While, ast.For)):
                for child in node.body:
                    visit(child, stack + [(node, "body")])
                for child in node.orelse:
                    visit(child, stack + [(node, "orelse")])
                for child in ([node.test] if hasattr(node, "test") else [node.iter]):
                    visit(child, stack)
                return
            if isinstance(node, ast.IfExp):
                visit(node.test, stack)
                visit(node.body, stack + [(node, "body")])
                visit(node.orelse, stack + [(node, "orelse")])
                return
            for child in ast.iter_child_nodes(node):
                visit(child, stack)

        fdef = tree.body[0]
        for stmt in getattr(fdef, "body", []):
            visit(stmt, [])
        self._busy.discard(fn)
        self._cache[fn] = out
        return out


def _proto_ops(fn: Any) -> Counter:
    """Op types in an OnnxFunction's FunctionProto (incl. subgraphs), or empty Counter."""
    c: Counter = Counter()
    try:
        proto = fn.to_function_proto()
    except Exception:
        return c

    def walk(nodes):
        for n in nodes:
            c[n.op_type] += 1
            for a in n.attribute:
                if a.g is not None and a.g.node:
                    walk(a.g.node)
                for g in a.graphs:
                    walk(g.node)
    walk(proto.node)
    return c


def run_static(out_json: str | None) -> dict:
    from torch.onnx._internal.exporter import _decomp, _registration

    reg = _registration.ONNXRegistry.from_torchlib()
    scanner = _Scanner()
    emitting: dict[str, list[dict]] = {}
    for target, metas in reg.functions.items():
        name = str(target)
        for m in metas:
            if m.is_complex:
                continue
            fn = m.onnx_function
            u = _underlying(fn)
            sites = scanner.sites(u) if u is not None else []
            kind = type(fn).__name__
            proto = _proto_ops(fn) if kind == "OnnxFunction" else Counter()
            ops = sorted({s[0].split(" ")[0] for s in sites} | {k for k in proto if k in _FORB_SET})
            if ops:
                emitting.setdefault(name, []).append({
                    "impl": getattr(fn, "name", getattr(fn, "__name__", "?")),
                    "kind": kind,
                    "ops": ops,
                    "sites": sorted({(o, w, " & ".join(c) or "always") for o, w, c in sites}),
                })
    registered = set(_decomp.get_onnx_implemented_overloads(reg))
    table = _decomp.create_onnx_friendly_decomposition_table(registered)
    result = {"emitting": emitting, "decomposed": sorted(str(k) for k in table)}
    print(f"# registry: {len(reg.functions)} targets; {len(emitting)} can emit {'/'.join(FORBIDDEN)}")
    for name in sorted(emitting):
        for e in emitting[name]:
            print(f"{name}  [{e['impl']} {e['kind']}]  -> {','.join(e['ops'])}")
            for o, w, c in e["sites"]:
                print(f"      {o:16s} in {w:40s} when {c}")
    print(f"\n# decomposition table: {len(table)} overloads decomposed before translation")
    if out_json:
        with open(out_json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return result


def decompose_trace(fn: Callable, args: tuple, kwargs: dict | None = None) -> list[str]:
    """The ATen ops the exporter translates for a module: run its decomposition table."""
    import torch
    from torch.onnx._internal.exporter import _decomp, _registration

    reg = _registration.ONNXRegistry.from_torchlib()
    registered = set(_decomp.get_onnx_implemented_overloads(reg))
    table = _decomp.create_onnx_friendly_decomposition_table(registered)
    ep = torch.export.export(fn, args, kwargs or {}, strict=False).run_decompositions(table)
    return [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]


# --------------------------------------------------------------------------------------------
# Part 2: empirical probe
# --------------------------------------------------------------------------------------------

def count_ops(model) -> Counter:
    """Forbidden op types in a ModelProto: main graph, subgraphs, local functions."""
    c: Counter = Counter()

    def walk(nodes):
        for n in nodes:
            if n.op_type in _FORB_SET:
                c[n.op_type] += 1
            for a in n.attribute:
                if a.HasField("g"):
                    walk(a.g.node)
                for g in a.graphs:
                    walk(g.node)
    walk(model.graph.node)
    for f in model.functions:
        walk(f.node)
    return c


def _forbidden_nodes(model):
    def walk(nodes):
        for n in nodes:
            if n.op_type in _FORB_SET:
                yield n
            for a in n.attribute:
                if a.HasField("g"):
                    yield from walk(a.g.node)
                for g in a.graphs:
                    yield from walk(g.node)
    yield from walk(model.graph.node)
    for f in model.functions:
        yield from walk(f.node)


def _root_target(node) -> str | None:
    """The op of the non-decomposed graph a decomposed node came from (meta['from_node'])."""
    src = node.meta.get("from_node")
    if not src:
        return None
    s = src[-1]
    while s.from_node:
        s = s.from_node[-1]
    return str(getattr(s, "target", None) or s.name)


def _short(t: str) -> str:
    return t.replace("aten.", "").replace(".default", "")


def attribute(onnx_program) -> list[tuple[str, str, str]]:
    """[(onnx op_type, decomposed aten op, root op in torch.export graph)] per forbidden node."""
    model = onnx_program.model_proto
    names: dict[str, Any] = {}
    ep = getattr(onnx_program, "exported_program", None)
    if ep is not None:
        for gm in ep.graph_module.modules():
            g = getattr(gm, "graph", None)
            if g is None:
                continue
            for n in g.nodes:
                names.setdefault(n.name, n)
    out = []
    for n in _forbidden_nodes(model):
        md = {p.key: p.value for p in n.metadata_props}
        ns = md.get("namespace", "")
        dec = ns.rsplit(": ", 1)[-1] if ns else "?"
        scopes = md.get("pkg.torch.onnx.name_scopes")
        root = "?"
        if scopes:
            try:
                fx_name = ast.literal_eval(scopes)[-1]
            except Exception:
                fx_name = None
            fxn = names.get(fx_name)
            if fxn is not None:
                root = _root_target(fxn) or "?"
        out.append((n.op_type, _short(dec), _short(root)))
    return out


def _module(fn: Callable) -> Any:
    import torch

    class _M(torch.nn.Module):
        def __init__(self, f):
            super().__init__()
            self.f = f

        def forward(self, *a):
            return self.f(*a)
    return _M(fn)


def _ep_ops(m, args) -> tuple[Any, list[str]]:
    import torch
    ep = torch.export.export(m, args, strict=False)
    ops = []
    for n in ep.graph.nodes:
        if n.op == "call_function":
            t = _short(str(n.target))
            if t not in ops and "getitem" not in t:
                ops.append(t)
    return ep, ops


def export_case(m, args, *, optimize: bool = True, check_ort: bool = True) -> dict:
    import numpy as np
    import torch
    res: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(m, args, dynamo=True, optimize=optimize, verbose=False)
    model = prog.model_proto
    res["counts"] = dict(count_ops(model))
    res["attr"] = attribute(prog)
    if check_ort:
        try:
            import onnxruntime as ort
            sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            flat = [a for a in args if isinstance(a, torch.Tensor)]
            feeds = {i.name: t.detach().numpy() for i, t in zip(sess.get_inputs(), flat, strict=False)}
            got = sess.run(None, feeds)
            with torch.no_grad():
                want = m(*args)
            want = [w for w in (want if isinstance(want, (tuple, list)) else [want])]
            ok = all(np.allclose(np.asarray(g), w.detach().numpy(), atol=1e-4, rtol=1e-3)
                     for g, w in zip(got, want, strict=False) if isinstance(w, torch.Tensor))
            res["ort"] = "ok" if ok else "MISMATCH"
        except Exception as e:  # noqa: BLE001
            res["ort"] = f"ort error: {type(e).__name__}: {str(e)[:80]}"
    return res


def cases() -> list[tuple[str, str, Any, tuple, str]]:
    """(group, name, module, args, condition note)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(0)
    r = torch.randn
    L: list[tuple[str, str, Any, tuple, str]] = []

    def add(group, name, m, args, note=""):
        if not isinstance(m, nn.Module):
            m = _module(m)
        L.append((group, name, m.eval(), args, note))

    x1 = r(2, 3, 12)
    x2 = r(2, 3, 8, 8)
    x2b = r(2, 3, 10, 7)
    x3 = r(1, 2, 6, 6, 6)

    # ---- adaptive pooling
    for o in (4, 5, 1, 12, 7, 16):
        add("adaptive_pool", f"AdaptiveAvgPool1d({o}) L=12", nn.AdaptiveAvgPool1d(o), (x1,), f"12%{o}")
    for o in ((4, 4), (3, 3), (4, 3), (1, 1), (None, 3), (8, 8), (5, 5), (12, 12)):
        add("adaptive_pool", f"AdaptiveAvgPool2d({o}) 8x8", nn.AdaptiveAvgPool2d(o), (x2,), "")
    add("adaptive_pool", "AdaptiveAvgPool2d((5,7)) 10x7", nn.AdaptiveAvgPool2d((5, 7)), (x2b,), "")
    add("adaptive_pool", "AdaptiveAvgPool2d((3,7)) 10x7", nn.AdaptiveAvgPool2d((3, 7)), (x2b,), "")
    add("adaptive_pool", "AdaptiveAvgPool2d((1,1)) 10x7", nn.AdaptiveAvgPool2d((1, 1)), (x2b,), "")
    for o in ((3, 3, 3), (4, 4, 4), (1, 1, 1), (2, 3, 4)):
        add("adaptive_pool", f"AdaptiveAvgPool3d({o}) 6^3", nn.AdaptiveAvgPool3d(o), (x3,), "")
    for o in (4, 5, 1):
        add("adaptive_pool", f"AdaptiveMaxPool1d({o}) L=12", nn.AdaptiveMaxPool1d(o), (x1,), "")
    add("adaptive_pool", "AdaptiveMaxPool1d(4, return_indices) L=12", nn.AdaptiveMaxPool1d(4, return_indices=True), (x1,), "")
    for o in ((4, 4), (3, 3), (1, 1), (5, 5)):
        add("adaptive_pool", f"AdaptiveMaxPool2d({o}) 8x8", nn.AdaptiveMaxPool2d(o), (x2,), "")
    add("adaptive_pool", "AdaptiveMaxPool2d((4,4), return_indices) 8x8", nn.AdaptiveMaxPool2d((4, 4), return_indices=True), (x2,), "")
    for o in ((3, 3, 3), (4, 4, 4), (1, 1, 1)):
        add("adaptive_pool", f"AdaptiveMaxPool3d({o}) 6^3", nn.AdaptiveMaxPool3d(o), (x3,), "")
    add("adaptive_pool", "F.adaptive_avg_pool2d(x, 3) 8x8", lambda x: F.adaptive_avg_pool2d(x, 3), (x2,), "")

    # ---- other pooling
    add("pool", "MaxPool2d(2)", nn.MaxPool2d(2), (x2,))
    add("pool", "MaxPool2d(3, 2, ceil_mode)", nn.MaxPool2d(3, 2, ceil_mode=True), (x2,))
    add("pool", "MaxPool2d(3, dilation=2)", nn.MaxPool2d(3, dilation=2), (x2,))
    add("pool", "MaxPool2d(2, return_indices)", nn.MaxPool2d(2, return_indices=True), (x2,))
    add("pool", "MaxPool1d(2, return_indices)", nn.MaxPool1d(2, return_indices=True), (x1,))

    class Unpool2d(nn.Module):
        def __init__(s):
            super().__init__()
            s.p, s.u = nn.MaxPool2d(2, return_indices=True), nn.MaxUnpool2d(2)

        def forward(s, x):
            y, i = s.p(x)
            return s.u(y, i)

    class Unpool1d(nn.Module):
        def __init__(s):
            super().__init__()
            s.p, s.u = nn.MaxPool1d(2, return_indices=True), nn.MaxUnpool1d(2)

        def forward(s, x):
            y, i = s.p(x)
            return s.u(y, i)
    add("pool", "MaxPool2d+MaxUnpool2d", Unpool2d(), (x2,))
    add("pool", "MaxPool1d+MaxUnpool1d", Unpool1d(), (x1,))
    add("pool", "AvgPool2d(3, 2, ceil_mode, count_include_pad=False)", nn.AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=False), (x2,))
    add("pool", "AvgPool1d(3)", nn.AvgPool1d(3), (x1,))
    add("pool", "LPPool2d(2, 2)", nn.LPPool2d(2, 2), (x2,))
    add("pool", "F.local_response_norm(2)", lambda x: F.local_response_norm(x, 2), (x2,))

    # ---- interpolate
    def itp(**kw):
        return lambda x: F.interpolate(x, **kw)
    for mode in ("nearest", "nearest-exact"):
        for sf in (2.0, 1.5, 0.5, 3.0):
            add("interpolate", f"interpolate {mode} scale={sf} 2d", itp(scale_factor=sf, mode=mode), (x2,))
        add("interpolate", f"interpolate {mode} size=(11,13) 2d", itp(size=(11, 13), mode=mode), (x2,))
        add("interpolate", f"interpolate {mode} scale=1.5 1d", itp(scale_factor=1.5, mode=mode), (x1,))
        add("interpolate", f"interpolate {mode} scale=2 1d", itp(scale_factor=2.0, mode=mode), (x1,))
        add("interpolate", f"interpolate {mode} scale=1.5 3d", itp(scale_factor=1.5, mode=mode), (x3,))
        add("interpolate", f"interpolate {mode} scale=2 3d", itp(scale_factor=2.0, mode=mode), (x3,))
    for mode, x in (("linear", x1), ("bilinear", x2), ("bicubic", x2), ("trilinear", x3)):
        for sf in (2.0, 1.5, 0.5):
            for ac in (False, True):
                add("interpolate", f"interpolate {mode} scale={sf} align_corners={ac}", itp(scale_factor=sf, mode=mode, align_corners=ac), (x,))
        add("interpolate", f"interpolate {mode} size=odd", itp(size=tuple([11, 13, 5][: x.dim() - 2]), mode=mode), (x,))
        add("interpolate", f"interpolate {mode} scale=1.5 recompute_scale_factor", itp(scale_factor=1.5, mode=mode, recompute_scale_factor=True), (x,))
    for mode in ("bilinear", "bicubic"):
        for sf in (0.5, 2.0, 0.75):
            add("interpolate", f"interpolate {mode} antialias scale={sf}", itp(scale_factor=sf, mode=mode, antialias=True), (x2,))
    for sz in (4, 3, 5):
        add("interpolate", f"interpolate area size={sz} 8x8", itp(size=sz, mode="area"), (x2,))
    add("interpolate", "interpolate area scale=0.5 1d", itp(scale_factor=0.5, mode="area"), (x1,))
    add("interpolate", "interpolate area size=5 1d (12)", itp(size=5, mode="area"), (x1,))
    add("interpolate", "nn.Upsample(scale 2, nearest)", nn.Upsample(scale_factor=2), (x2,))
    add("interpolate", "nn.UpsamplingBilinear2d(scale 2)", nn.UpsamplingBilinear2d(scale_factor=2), (x2,))
    add("interpolate", "nn.UpsamplingNearest2d(size 11)", nn.UpsamplingNearest2d(size=11), (x2,))

    # ---- grid_sample / affine_grid
    grid = torch.rand(2, 5, 6, 2) * 2 - 1
    for mode in ("bilinear", "nearest", "bicubic"):
        for pm in ("zeros", "border", "reflection"):
            for ac in (False, True):
                add("grid_sample", f"grid_sample {mode} {pm} align_corners={ac}",
                    (lambda mo, p, a: (lambda x, g: F.grid_sample(x, g, mode=mo, padding_mode=p, align_corners=a)))(mode, pm, ac), (x2, grid))
    grid3 = torch.rand(1, 3, 4, 5, 3) * 2 - 1
    add("grid_sample", "grid_sample 3d bilinear", lambda x, g: F.grid_sample(x, g, align_corners=False), (x3, grid3))
    theta = r(2, 2, 3)
    add("grid_sample", "affine_grid", lambda t: F.affine_grid(t, [2, 3, 8, 8], align_corners=False), (theta,))

    # ---- shifts, strides, pads
    x = r(4, 6)
    add("shift", "roll(2, dims=1)", lambda x: torch.roll(x, 2, 1), (x,))
    add("shift", "roll(-1, dims=0)", lambda x: torch.roll(x, -1, 0), (x,))
    add("shift", "roll((1,2), dims=(0,1))", lambda x: torch.roll(x, (1, 2), (0, 1)), (x,))
    add("shift", "roll(3) no dims (flattened)", lambda x: torch.roll(x, 3), (x,))
    add("shift", "roll(0, dims=1)", lambda x: torch.roll(x, 0, 1), (x,))
    add("shift", "roll(6, dims=1) (full period)", lambda x: torch.roll(x, 6, 1), (x,))
    add("shift", "as_strided((3,3),(1,1))", lambda x: torch.as_strided(x, (3, 3), (1, 1)), (x,))
    add("shift", "as_strided contiguous view (2,12),(12,1)", lambda x: torch.as_strided(x, (2, 12), (12, 1)), (x,))
    add("shift", "as_strided((2,3),(6,1), offset=1)", lambda x: torch.as_strided(x, (2, 3), (6, 1), 1), (x,))
    add("shift", "x.as_strided transpose (6,4),(1,6)", lambda x: x.as_strided((6, 4), (1, 6)), (x,))
    add("shift", "flip(1)", lambda x: torch.flip(x, [1]), (x,))
    add("shift", "rot90", lambda x: torch.rot90(x), (x,))
    add("shift", "narrow(1, 1, 3)", lambda x: torch.narrow(x, 1, 1, 3), (x,))
    add("shift", "narrow(1, tensor start, 3)", lambda x, s: torch.narrow(x, 1, s, 3), (x, torch.tensor(1)))
    add("shift", "narrow(1, s.item(), 3)", lambda x, s: torch.narrow(x, 1, s.item(), 3), (x, torch.tensor(1)))
    for mode in ("constant", "reflect", "replicate", "circular"):
        add("pad", f"F.pad {mode} 1d", (lambda mo: lambda x: F.pad(x, (2, 1), mode=mo))(mode), (x1,))
        add("pad", f"F.pad {mode} 2d", (lambda mo: lambda x: F.pad(x, (2, 1, 1, 2), mode=mo))(mode), (x2,))
        add("pad", f"F.pad {mode} 3d", (lambda mo: lambda x: F.pad(x, (1, 1, 1, 1, 1, 1), mode=mo))(mode), (x3,))
    add("pad", "F.pad constant negative (crop)", lambda x: F.pad(x, (-1, -1)), (x1,))
    add("pad", "nn.ReflectionPad2d(2)", nn.ReflectionPad2d(2), (x2,))
    add("pad", "nn.ReplicationPad2d(2)", nn.ReplicationPad2d(2), (x2,))
    add("pad", "nn.CircularPad2d(2)", nn.CircularPad2d(2), (x2,))
    add("pad", "nn.ZeroPad2d(2)", nn.ZeroPad2d(2), (x2,))
    for pm in ("zeros", "reflect", "replicate", "circular"):
        add("pad", f"Conv2d(padding=1, padding_mode={pm})", nn.Conv2d(3, 4, 3, padding=1, padding_mode=pm), (x2,))
    add("pad", "Conv1d(padding=1, padding_mode=circular)", nn.Conv1d(3, 4, 3, padding=1, padding_mode="circular"), (x1,))
    add("pad", "Conv2d(padding='same', even kernel)", nn.Conv2d(3, 4, 4, padding="same"), (x2,))
    add("pad", "ConvTranspose2d(stride 2, output_padding 1)", nn.ConvTranspose2d(3, 4, 3, 2, 1, output_padding=1), (x2,))

    # ---- diagonals
    sq = r(5, 5)
    b3 = r(2, 4, 4)
    add("diag", "torch.diagonal(x)", lambda x: torch.diagonal(x), (sq,))
    add("diag", "torch.diagonal(x, 1)", lambda x: torch.diagonal(x, 1), (sq,))
    add("diag", "torch.diagonal(x, -2)", lambda x: torch.diagonal(x, -2), (sq,))
    add("diag", "torch.diagonal 3d dim1=1 dim2=2", lambda x: torch.diagonal(x, 0, 1, 2), (b3,))
    add("diag", "torch.diag(matrix)", lambda x: torch.diag(x), (sq,))
    add("diag", "torch.diag(vector)", lambda x: torch.diag(x), (r(5),))
    add("diag", "torch.diag_embed", lambda x: torch.diag_embed(x), (r(2, 5),))
    add("diag", "torch.trace", lambda x: torch.trace(x), (sq,))
    add("diag", "einsum ii->i", lambda x: torch.einsum("ii->i", x), (sq,))
    add("diag", "einsum bii->b", lambda x: torch.einsum("bii->b", x), (b3,))
    add("diag", "diagonal_scatter", lambda x, s: torch.diagonal_scatter(x, s), (sq, r(5)))
    add("diag", "x.fill_diagonal_ (clone)", lambda x: x.clone().fill_diagonal_(0.0), (sq,))
    add("diag", "torch.tril_indices const + index", lambda x: x[tuple(torch.tril_indices(5, 5))], (sq,))
    add("diag", "torch.block_diag", lambda a, b: torch.block_diag(a, b), (r(2, 2), r(3, 3)))

    # ---- losses
    logits = r(4, 5)
    tgt = torch.tensor([0, 2, 4, 1])
    wts = torch.rand(5)
    add("loss", "cross_entropy", lambda a, t: F.cross_entropy(a, t), (logits, tgt))
    add("loss", "cross_entropy ignore_index=2", lambda a, t: F.cross_entropy(a, t, ignore_index=2), (logits, tgt))
    add("loss", "cross_entropy label_smoothing=0.1", lambda a, t: F.cross_entropy(a, t, label_smoothing=0.1), (logits, tgt))
    add("loss", "cross_entropy weight", lambda a, t, w: F.cross_entropy(a, t, weight=w), (logits, tgt, wts))
    add("loss", "cross_entropy weight + label_smoothing", lambda a, t, w: F.cross_entropy(a, t, weight=w, label_smoothing=0.1), (logits, tgt, wts))
    add("loss", "cross_entropy reduction=none", lambda a, t: F.cross_entropy(a, t, reduction="none"), (logits, tgt))
    add("loss", "cross_entropy reduction=sum", lambda a, t: F.cross_entropy(a, t, reduction="sum"), (logits, tgt))
    add("loss", "cross_entropy prob targets", lambda a, t: F.cross_entropy(a, t), (logits, torch.softmax(r(4, 5), -1)))
    add("loss", "cross_entropy 4d (N,C,H,W)", lambda a, t: F.cross_entropy(a, t), (r(2, 5, 3, 3), torch.randint(0, 5, (2, 3, 3))))
    add("loss", "nn.CrossEntropyLoss(ignore_index=-100 default, 4d)", nn.CrossEntropyLoss(), (r(2, 5, 3, 3), torch.randint(0, 5, (2, 3, 3))))
    add("loss", "nll_loss", lambda a, t: F.nll_loss(a, t), (logits.log_softmax(-1), tgt))
    add("loss", "nll_loss weight", lambda a, t, w: F.nll_loss(a, t, weight=w), (logits.log_softmax(-1), tgt, wts))
    add("loss", "nll_loss ignore_index=1", lambda a, t: F.nll_loss(a, t, ignore_index=1), (logits.log_softmax(-1), tgt))
    add("loss", "nll_loss reduction=none", lambda a, t: F.nll_loss(a, t, reduction="none"), (logits.log_softmax(-1), tgt))
    add("loss", "nll_loss 4d", lambda a, t: F.nll_loss(a, t), (r(2, 5, 3, 3), torch.randint(0, 5, (2, 3, 3))))
    add("loss", "multi_margin_loss", lambda a, t: F.multi_margin_loss(a, t), (logits, tgt))
    add("loss", "multilabel_margin_loss", lambda a, t: F.multilabel_margin_loss(a, t), (logits, torch.tensor([[0, 1, -1, 0, 0]] * 4)))
    add("loss", "kl_div", lambda a, b: F.kl_div(a, b, reduction="batchmean"), (logits.log_softmax(-1), torch.softmax(r(4, 5), -1)))
    add("loss", "binary_cross_entropy_with_logits", lambda a, b: F.binary_cross_entropy_with_logits(a, b), (logits, torch.rand(4, 5)))
    add("loss", "smooth_l1_loss", lambda a, b: F.smooth_l1_loss(a, b), (logits, r(4, 5)))
    add("loss", "ctc_loss", lambda lp, t: F.ctc_loss(lp, t, [6, 6], [3, 2]), (r(6, 2, 5).log_softmax(-1), torch.tensor([[1, 2, 3], [1, 2, 0]])))

    # ---- unfold / fold / shuffle
    add("unfold", "F.unfold(k=2)", lambda x: F.unfold(x, 2), (x2,))
    add("unfold", "F.unfold(k=3, pad=1, stride=2)", lambda x: F.unfold(x, 3, padding=1, stride=2), (x2,))
    add("unfold", "F.unfold(k=3, dilation=2)", lambda x: F.unfold(x, 3, dilation=2), (x2,))
    add("unfold", "F.unfold(k=1)", lambda x: F.unfold(x, 1), (x2,))
    add("unfold", "F.unfold(k=(8,8)) (whole image)", lambda x: F.unfold(x, 8), (x2,))
    add("unfold", "F.fold(k=2)", lambda x: F.fold(x, (4, 4), 2), (r(2, 12, 9),))
    add("unfold", "F.fold(k=2, stride=2)", lambda x: F.fold(x, (4, 4), 2, stride=2), (r(2, 12, 4),))
    add("unfold", "Tensor.unfold(1, 3, 1)", lambda x: x.unfold(1, 3, 1), (x,))
    add("unfold", "Tensor.unfold(1, 2, 2) (non-overlap, divides)", lambda x: x.unfold(1, 2, 2), (x,))
    add("unfold", "Tensor.unfold(1, 6, 1) (one window)", lambda x: x.unfold(1, 6, 1), (x,))
    add("unfold", "Tensor.unfold(1, 4, 3)", lambda x: x.unfold(1, 4, 3), (x,))
    add("unfold", "pixel_shuffle(2)", nn.PixelShuffle(2), (r(1, 8, 3, 3),))
    add("unfold", "pixel_unshuffle(2)", nn.PixelUnshuffle(2), (x2,))
    add("unfold", "nn.ChannelShuffle(3)", nn.ChannelShuffle(3), (r(1, 6, 3, 3),))

    # ---- sort family
    v = r(3, 7)
    add("sort", "sort", lambda x: torch.sort(x, -1), (v,))
    add("sort", "sort values only", lambda x: torch.sort(x, -1)[0], (v,))
    add("sort", "sort(dim=0, descending)", lambda x: torch.sort(x, 0, descending=True), (v,))
    add("sort", "sort stable", lambda x: torch.sort(x, -1, stable=True), (v,))
    add("sort", "argsort", lambda x: torch.argsort(x, -1), (v,))
    add("sort", "argsort stable", lambda x: torch.argsort(x, -1, stable=True), (v,))
    add("sort", "msort", lambda x: torch.msort(x), (v,))
    add("sort", "topk(3)", lambda x: torch.topk(x, 3), (v,))
    add("sort", "topk(3, largest=False)", lambda x: torch.topk(x, 3, largest=False), (v,))
    add("sort", "max(dim) values+indices", lambda x: torch.max(x, 1), (v,))
    add("sort", "argmax", lambda x: torch.argmax(x, 1), (v,))
    add("sort", "cummax", lambda x: torch.cummax(x, 1), (v,))
    add("sort", "cummin values", lambda x: torch.cummin(x, 1)[0], (v,))
    add("sort", "logcumsumexp", lambda x: torch.logcumsumexp(x, 1), (v,))
    add("sort", "cumprod", lambda x: torch.cumprod(x, 1), (v,))

    # ---- gather / index
    idx = torch.tensor([2, 0, 3])
    add("index", "torch.gather", lambda x, i: torch.gather(x, 1, i), (x, torch.randint(0, 6, (4, 2))))
    add("index", "take_along_dim(dim)", lambda x, i: torch.take_along_dim(x, i, 1), (x, torch.randint(0, 6, (4, 2))))
    add("index", "take_along_dim(no dim)", lambda x, i: torch.take_along_dim(x, i), (x, torch.randint(0, 24, (5,))))
    add("index", "take_along_dim(argsort)", lambda x: torch.take_along_dim(x, x.argsort(1), 1), (x,))
    add("index", "index_select(0)", lambda x, i: torch.index_select(x, 0, i), (x, idx))
    add("index", "index_select(1)", lambda x, i: torch.index_select(x, 1, i), (x, idx))
    add("index", "x[idx]", lambda x, i: x[i], (x, idx))
    add("index", "x[:, idx]", lambda x, i: x[:, i], (x, idx))
    add("index", "x[..., idx] 3d", lambda x, i: x[..., i], (r(2, 3, 4), idx))
    add("index", "x[idx, idx2]", lambda x, i, j: x[i, j], (x, idx, torch.tensor([1, 5, 0])))
    add("index", "x[idx, :, idx2] (non-adjacent)", lambda x, i, j: x[i, :, j], (r(4, 3, 5), torch.tensor([0, 1]), torch.tensor([2, 4])))
    add("index", "x[idx2d]", lambda x, i: x[i], (x, torch.tensor([[0, 1], [2, 3]])))
    add("index", "x[bool mask]", lambda x, m: x[m], (x, x > 0))
    add("index", "x[bool row mask]", lambda x, m: x[m], (x, torch.tensor([True, False, True, True])))
    add("index", "x[[0, 2]] python list", lambda x: x[[0, 2]], (x,))
    add("index", "x[const buffer idx]", _ConstIdx(), (x,))
    add("index", "_unsafe_index direct", lambda x, i: torch.ops.aten._unsafe_index(x, [None, i]), (x, idx))
    add("index", "x[None, idx]", lambda x, i: x[None, i], (x, idx))
    add("index", "torch.take", lambda x, i: torch.take(x, i), (x, idx))
    add("index", "embedding", lambda w, i: F.embedding(i, w), (r(10, 4), idx))
    add("index", "nn.Embedding(max_norm=1)", nn.Embedding(10, 4, max_norm=1.0), (idx,))
    add("index", "embedding_bag mean", lambda w, i, o: F.embedding_bag(i, w, o, mode="mean"), (r(10, 4), torch.tensor([1, 2, 4, 5, 4, 3]), torch.tensor([0, 3])))
    add("index", "embedding_bag sum per_sample_weights", lambda w, i, o, p: F.embedding_bag(i, w, o, mode="sum", per_sample_weights=p), (r(10, 4), torch.tensor([1, 2, 4, 5]), torch.tensor([0, 2]), torch.rand(4)))
    add("index", "embedding_bag padding_idx", lambda w, i, o: F.embedding_bag(i, w, o, mode="sum", padding_idx=0), (r(10, 4), torch.tensor([1, 0, 4, 5]), torch.tensor([0, 2])))
    add("index", "select x[:, 0]", lambda x: x[:, 0], (x,))
    add("index", "x[0] (first dim)", lambda x: x[0], (x,))
    add("index", "x[-1]", lambda x: x[-1], (x,))
    add("index", "unbind", lambda x: x.unbind(1), (x,))
    add("index", "chunk uneven", lambda x: torch.chunk(x, 4, 1), (r(4, 7),))
    add("index", "split", lambda x: torch.split(x, [2, 4], 1), (x,))
    add("index", "tensor_split", lambda x: torch.tensor_split(x, 4, 1), (r(4, 7),))
    add("index", "repeat_interleave int", lambda x: torch.repeat_interleave(x, 2, 0), (x,))
    add("index", "repeat_interleave int no dim", lambda x: torch.repeat_interleave(x, 2), (x,))
    add("index", "repeat_interleave tensor repeats", lambda x, rep: torch.repeat_interleave(x, rep, 0), (x, torch.tensor([1, 2, 0, 3])))
    add("index", "repeat_interleave tensor repeats output_size", lambda x, rep: torch.repeat_interleave(x, rep, 0, output_size=6), (x, torch.tensor([1, 2, 0, 3])))
    add("index", "repeat_interleave 1-elem tensor repeats", lambda x: torch.repeat_interleave(x, torch.tensor(2), 0), (x,))
    add("index", "SDPA enable_gqa", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), (r(1, 4, 5, 8), r(1, 2, 5, 8), r(1, 2, 5, 8)))
    add("index", "SDPA", lambda q, k, v: F.scaled_dot_product_attention(q, k, v), (r(1, 4, 5, 8), r(1, 4, 5, 8), r(1, 4, 5, 8)))
    add("index", "one_hot", lambda t: F.one_hot(t, 5), (tgt,))
    add("index", "bucketize", lambda x, b: torch.bucketize(x, b), (r(4, 6), torch.tensor([-1.0, 0.0, 1.0])))
    add("index", "meshgrid", lambda a, b: torch.meshgrid(a, b, indexing="ij"), (r(3), r(4)))
    add("index", "cartesian_prod", lambda a, b: torch.cartesian_prod(a, b), (r(3), r(4)))
    add("index", "combinations", lambda a: torch.combinations(a), (r(4),))
    add("index", "kron", lambda a, b: torch.kron(a, b), (r(2, 2), r(3, 3)))
    add("index", "cross", lambda a, b: torch.linalg.cross(a, b), (r(4, 3), r(4, 3)))
    add("index", "std(unbiased)", lambda x: torch.std(x, 1), (x,))
    add("index", "var_mean", lambda x: torch.var_mean(x, 1), (x,))
    add("index", "glu", lambda x: F.glu(x, -1), (x,))
    add("index", "nn.MultiheadAttention", nn.MultiheadAttention(8, 2, batch_first=True), (r(2, 5, 8), r(2, 5, 8), r(2, 5, 8)))
    add("index", "TransformerEncoderLayer", nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, dropout=0.0), (r(2, 5, 8),))
    add("index", "LSTM", nn.LSTM(4, 6, batch_first=True), (r(2, 5, 4),))
    add("index", "GRU 2 layers", nn.GRU(4, 6, 2, batch_first=True), (r(2, 5, 4),))

    # ---- scatter family
    z = torch.zeros(4, 6)
    si = torch.randint(0, 6, (4, 2))
    add("scatter", "scatter src", lambda a, i, s: a.scatter(1, i, s), (z, si, r(4, 2)))
    add("scatter", "scatter value", lambda a, i: a.scatter(1, i, 1.0), (z, si))
    add("scatter", "scatter_add", lambda a, i, s: a.scatter_add(1, i, s), (z, si, r(4, 2)))
    for red in ("sum", "prod", "amax", "amin", "mean"):
        add("scatter", f"scatter_reduce {red}", (lambda rd: lambda a, i, s: a.scatter_reduce(1, i, s, rd))(red), (z, si, r(4, 2)))
    add("scatter", "scatter_reduce amax include_self=False", lambda a, i, s: a.scatter_reduce(1, i, s, "amax", include_self=False), (z, si, r(4, 2)))
    add("scatter", "index_add", lambda a, i, s: a.index_add(0, i, s), (x, idx, r(3, 6)))
    add("scatter", "index_copy", lambda a, i, s: a.index_copy(0, i, s), (x, idx, r(3, 6)))
    add("scatter", "index_fill", lambda a, i: a.index_fill(1, i, 0.0), (x, idx))
    add("scatter", "index_reduce prod", lambda a, i, s: a.index_reduce(0, i, s, "prod"), (x, idx, r(3, 6)))
    add("scatter", "index_put", lambda a, i, s: a.index_put((i,), s), (x, idx, r(3, 6)))
    add("scatter", "index_put accumulate", lambda a, i, s: a.index_put((i,), s, accumulate=True), (x, idx, r(3, 6)))
    add("scatter", "x[mask] = 0 (clone)", _MaskAssign(), (x,))
    add("scatter", "masked_fill", lambda a, m: a.masked_fill(m, 0.0), (x, x > 0))
    add("scatter", "masked_scatter", lambda a, m, s: a.masked_scatter(m, s), (x, x > 0, r(24)))
    add("scatter", "x[:, 1:3] = y", _SliceAssign(), (x, r(4, 2)))
    add("scatter", "x[:, 0] = y", _SelectAssign(), (x, r(4)))
    add("scatter", "slice_scatter", lambda a, s: torch.slice_scatter(a, s, 1, 1, 3), (x, r(4, 2)))
    add("scatter", "select_scatter", lambda a, s: torch.select_scatter(a, s, 1, 0), (x, r(4)))
    add("scatter", "as_strided_scatter", lambda a, s: torch.as_strided_scatter(a, s, (2, 2), (6, 1)), (x, r(2, 2)))
    add("scatter", "put", lambda a, i, s: a.put(i, s), (x, idx, r(3)))
    add("scatter", "bincount", lambda t: torch.bincount(t, minlength=5), (tgt,))
    add("scatter", "histc", lambda x: torch.histc(x, 4), (x,))
    add("scatter", "where(cond, a, b)", lambda c, a, b: torch.where(c, a, b), (x > 0, x, -x))

    # ---- follow-ups: conditions found by the first pass and by the OpInfo sweep
    add("extra", "AdaptiveAvgPool1d(4) L=10 (10%4=2, 4%2=0: uniform windows)", nn.AdaptiveAvgPool1d(4), (r(2, 3, 10),))
    add("extra", "AdaptiveAvgPool1d(3) L=10 (10%3=1: uniform windows)", nn.AdaptiveAvgPool1d(3), (r(2, 3, 10),))
    add("extra", "AdaptiveAvgPool1d(6) L=10 (10%6=4, 6%4=2: varying windows)", nn.AdaptiveAvgPool1d(6), (r(2, 3, 10),))
    add("extra", "AdaptiveAvgPool2d((4,4)) 6x6 (uniform windows)", nn.AdaptiveAvgPool2d((4, 4)), (r(1, 2, 6, 6),))
    add("extra", "AdaptiveAvgPool2d((4,5)) 6x6", nn.AdaptiveAvgPool2d((4, 5)), (r(1, 2, 6, 6),))
    add("extra", "AdaptiveAvgPool2d((7,7)) 14x14", nn.AdaptiveAvgPool2d((7, 7)), (r(1, 2, 14, 14),))
    add("extra", "AdaptiveAvgPool2d((7,7)) 7x7", nn.AdaptiveAvgPool2d((7, 7)), (r(1, 2, 7, 7),))
    add("extra", "AdaptiveAvgPool2d((7,7)) 10x10", nn.AdaptiveAvgPool2d((7, 7)), (r(1, 2, 10, 10),))
    add("extra", "AdaptiveMaxPool2d((3,3)) 9x9", nn.AdaptiveMaxPool2d((3, 3)), (r(1, 2, 9, 9),))
    add("extra", "nll_loss 3d input (N,C,d)", lambda a, t: F.nll_loss(a, t), (r(2, 5, 3), torch.randint(0, 5, (2, 3))))
    add("extra", "nll_loss 4d reduction=none", lambda a, t: F.nll_loss(a, t, reduction="none"), (r(2, 5, 3, 3), torch.randint(0, 5, (2, 3, 3))))
    add("extra", "nll_loss 4d ignore_index", lambda a, t: F.nll_loss(a, t, ignore_index=1), (r(2, 5, 3, 3), torch.randint(0, 5, (2, 3, 3))))
    add("extra", "nll_loss 1d input (C,)", lambda a, t: F.nll_loss(a, t), (r(5).log_softmax(0), torch.tensor(2)))
    add("extra", "cross_entropy 3d input (N,C,d)", lambda a, t: F.cross_entropy(a, t), (r(2, 5, 3), torch.randint(0, 5, (2, 3))))
    add("extra", "cross_entropy 5d input", lambda a, t: F.cross_entropy(a, t), (r(2, 5, 2, 2, 2), torch.randint(0, 5, (2, 2, 2, 2))))
    add("extra", "x * s.item()", lambda x, s: x * s.item(), (x, torch.tensor(2.0)))
    add("extra", "tensor_split(tensor indices)", lambda x, i: torch.tensor_split(x, i, 1), (x, torch.tensor([1, 3])))
    add("extra", "quantile(0.5, dim)", lambda x: torch.quantile(x, 0.5, dim=1), (x,))
    add("extra", "trapezoid(y, dx)", lambda y: torch.trapezoid(y), (r(6),))
    add("extra", "trapezoid(y, dx) 2d", lambda y: torch.trapezoid(y, dim=1), (x,))
    add("extra", "slice_scatter full dim", lambda a, s: torch.slice_scatter(a, s, 1, 0, 6), (x, r(4, 6)))
    add("extra", "x[:, :] = y (full slice assign)", _FullAssign(), (x, r(4, 6)))
    add("extra", "select on size-1 dim x[:, 0], x:(4,1)", lambda x: x[:, 0], (r(4, 1),))
    add("extra", "index_select identity (all idx)", lambda x, i: torch.index_select(x, 1, i), (x, torch.arange(6)))
    add("extra", "gather on 0-d self", lambda a, i: torch.gather(a, 0, i), (torch.tensor(3.0), torch.tensor([0])))
    add("extra", "const param[const idx] (embedding of buffer) + x", _ConstGather(), (r(3, 4),))
    add("extra", "param[0] (select on parameter) + x", _ParamSelect(), (r(4),))
    add("extra", "MHA self-attention (q is k is v)", _MHASelf(), (r(2, 5, 8),))
    add("extra", "MHA k is v, q different", _MHAKV(), (r(2, 5, 8), r(2, 5, 8)))
    add("extra", "MHA q,k,v all different", nn.MultiheadAttention(8, 2, batch_first=True), (r(2, 5, 8), r(2, 5, 8), r(2, 5, 8)))
    add("extra", "sort(dim=-1, stable=True)", lambda x: torch.sort(x, dim=-1, stable=True), (v,))
    add("extra", "interpolate nearest-exact scale=1 (identity)", itp(scale_factor=1.0, mode="nearest-exact"), (x2,))
    add("extra", "interpolate linear scale=1 (identity)", itp(scale_factor=1.0, mode="linear"), (x1,))
    add("extra", "interpolate area size=(8,8) (identity)", itp(size=(8, 8), mode="area"), (x2,))
    add("extra", "Tensor.unfold(1, 1, 1) (size-1 windows)", lambda x: x.unfold(1, 1, 1), (x,))
    add("extra", "resize_ via as_strided", lambda x: x.clone().resize_(2, 3), (x,))
    add("extra", "F.embedding on int32 idx", lambda w, i: F.embedding(i, w), (r(10, 4), idx.int()))
    add("extra", "index_put bool mask x[m] = v", lambda a, m, s: a.index_put((m,), s), (x, x > 0, torch.tensor(0.0)))
    return L


def _buffer_module(cls_name: str, fwd: Callable, **buffers) -> Any:
    import torch

    class _B(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for k, v in buffers.items():
                self.register_buffer(k, v)

        def forward(self, *a):
            return fwd(self, *a)
    _B.__name__ = cls_name
    return _B()


def _ConstIdx():
    import torch
    return _buffer_module("ConstIdx", lambda s, x: x[s.idx], idx=torch.tensor([2, 0, 3]))


def _MaskAssign():
    def f(s, x):
        y = x.clone()
        y[y > 0] = 0.0
        return y
    return _buffer_module("MaskAssign", f)


def _SliceAssign():
    def f(s, x, v):
        y = x.clone()
        y[:, 1:3] = v
        return y
    return _buffer_module("SliceAssign", f)


def _SelectAssign():
    def f(s, x, v):
        y = x.clone()
        y[:, 0] = v
        return y
    return _buffer_module("SelectAssign", f)


def _FullAssign():
    def f(s, x, v):
        y = x.clone()
        y[:, :] = v
        return y
    return _buffer_module("FullAssign", f)


def _ConstGather():
    import torch

    class ConstGather(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(10, 4))
            self.register_buffer("idx", torch.tensor([1, 5, 7]))

        def forward(self, x):
            return torch.nn.functional.embedding(self.idx, self.w) + x
    return ConstGather()


def _ParamSelect():
    import torch

    class ParamSelect(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.randn(3, 4))

        def forward(self, x):
            return self.p[0] + x
    return ParamSelect()


def _MHASelf():
    import torch

    class MHASelf(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.a(x, x, x)[0]
    return MHASelf()


def _MHAKV():
    import torch

    class MHAKV(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, q, kv):
            return self.a(q, kv, kv)[0]
    return MHAKV()


def _fmt_counts(c: dict) -> str:
    return ", ".join(f"{k}×{v}" for k, v in sorted(c.items())) or "—"


def run_probe(out_json: str, only: str | None = None, noopt: bool = True) -> list[dict]:
    import torch  # noqa: F401
    rows = []
    for group, name, m, args, note in cases():
        if only and only not in name and only != group:
            continue
        row: dict[str, Any] = {"group": group, "name": name, "note": note}
        t0 = time.perf_counter()
        try:
            _, row["ep_ops"] = _ep_ops(m, args)
        except Exception as e:  # noqa: BLE001
            row["ep_ops"] = [f"EXPORT FAIL {type(e).__name__}: {str(e)[:100]}"]
        try:
            res = export_case(m, args)
            row.update(res)
        except Exception as e:  # noqa: BLE001
            m_ = re.search(r"No ONNX function found for <OpOverload\(op='([^']+)', overload='([^']+)'", str(e))
            row["error"] = (f"FAIL: no ONNX function for {_short(m_.group(1) + '.' + m_.group(2))}" if m_
                            else f"FAIL: {type(e).__name__}: {str(e).strip().splitlines()[0][:150]}")
        if noopt and "error" not in row:
            try:
                row["counts_noopt"] = export_case(m, args, optimize=False, check_ort=False)["counts"]
            except Exception as e:  # noqa: BLE001
                row["counts_noopt"] = {"error": str(e)[:60]}
        row["secs"] = round(time.perf_counter() - t0, 2)
        rows.append(row)
        attr = sorted({f"{o}←{d}⇐{rt}" for o, d, rt in row.get("attr", [])})
        print(f"[{group}] {name}: ep={','.join(row['ep_ops'])} -> {row.get('error') or _fmt_counts(row.get('counts', {}))}"
              f" noopt={_fmt_counts(row.get('counts_noopt', {}))} {attr} ort={row.get('ort')} ({row['secs']}s)", flush=True)
    with open(out_json, "w") as f:
        json.dump(rows, f, indent=1, default=str)
    return rows


# --------------------------------------------------------------------------------------------
# Part 3: "which ONNX ops will this fx node export to?" without exporting the whole model
# --------------------------------------------------------------------------------------------

def _materialise(v: Any) -> Any:
    """A real tensor with the shape/dtype of a node's meta['val'] (FakeTensor); ints as is."""
    import torch
    if isinstance(v, torch.Tensor):
        shape = [int(d) for d in v.shape]  # static shapes only (SymInt -> its hint would go here)
        if v.dtype == torch.bool:
            return torch.zeros(shape, dtype=torch.bool)
        if v.dtype.is_floating_point or v.dtype.is_complex:
            return torch.randn(shape, dtype=v.dtype)
        return torch.zeros(shape, dtype=v.dtype)  # index tensors: 0 is in range for any dim
    if isinstance(v, torch.SymInt):
        return int(v.node.hint) if v.node.hint is not None else v
    return v


def one_node_module(node) -> tuple[Any, tuple]:
    """A module calling node.target on fresh inputs shaped like the node's tensor arguments.

    Every fx.Node argument that holds a tensor becomes a module input (so a gather whose data
    and index would both be constants in the real model is still reported: conservative).
    """
    import torch
    import torch.fx as fx
    from torch.utils import _pytree as pytree

    inputs: list[Any] = []
    slots: dict[Any, int] = {}

    def sub(a):
        if isinstance(a, fx.Node):
            val = a.meta.get("val")
            if isinstance(val, torch.Tensor):
                if a not in slots:
                    slots[a] = len(inputs)
                    inputs.append(_materialise(val))
                return ("__in__", slots[a])
            return _materialise(val)
        return a
    args = pytree.tree_map(sub, node.args, is_leaf=lambda x: isinstance(x, fx.Node))
    kwargs = pytree.tree_map(sub, node.kwargs, is_leaf=lambda x: isinstance(x, fx.Node))
    target = node.target

    def put(a, xs):
        if isinstance(a, tuple) and len(a) == 2 and a[0] == "__in__":
            return xs[a[1]]
        if isinstance(a, (list, tuple)):
            return type(a)(put(b, xs) for b in a)
        if isinstance(a, dict):
            return {k: put(b, xs) for k, b in a.items()}
        return a

    class OneNode(torch.nn.Module):
        def forward(self, *xs):
            return target(*put(args, xs), **put(kwargs, xs))
    return OneNode(), tuple(inputs)


def onnx_ops_for_node(node, optimize: bool = True) -> Counter:
    """Forbidden ONNX op types the exporter emits for one call_function node of a
    torch.export (non-strict, non-decomposed) graph, by exporting a one-node module."""
    import torch
    m, xs = one_node_module(node)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(m, xs, dynamo=True, optimize=optimize, verbose=False)
    return count_ops(prog.model_proto)


_STATE: dict[str, Any] = {}


def _exporter_state() -> tuple[Any, dict]:
    """The exporter's registry and decomposition table, built once per process (building them
    is most of the cost of a tiny torch.onnx.export)."""
    if not _STATE:
        from torch.onnx._internal.exporter import _decomp, _registration
        reg = _registration.ONNXRegistry.from_torchlib()
        table = _decomp.create_onnx_friendly_decomposition_table(
            set(_decomp.get_onnx_implemented_overloads(reg)))
        _STATE.update(reg=reg, table=table)
    return _STATE["reg"], _STATE["table"]


def onnx_ops_for_node_fast(node, optimize: bool = True) -> Counter:
    """As onnx_ops_for_node, but through the exporter's internal steps with the registry and
    decomposition table cached (torch 2.13 private API: _core, _fx_passes)."""
    import torch
    from torch.onnx._internal.exporter import _core, _fx_passes
    reg, table = _exporter_state()
    m, xs = one_node_module(node)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(m, xs, strict=False)
        with torch.fx.experimental._config.patch(backed_size_oblivious=True):
            ep = ep.run_decompositions(table)
            gm = ep.graph_module
            _fx_passes.insert_type_promotion_nodes(gm)
            ep._graph_module = _fx_passes.remove_assertion_nodes(gm)
        prog = _core._exported_program_to_onnx_program(ep, registry=reg)
        if optimize:
            prog.optimize()
    return count_ops(prog.model_proto)


def _timing_model():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect")
            self.pool = nn.AdaptiveAvgPool2d(5)  # 12 % 5 = 2, 5 % 2 = 1: Gather + GatherND
            self.lin = nn.Linear(8 * 25, 10)

        def forward(self, x, i):
            y = self.conv(x).relu()
            y = F.interpolate(y, scale_factor=1.5, mode="bilinear")  # clean
            y = y + F.interpolate(y, scale_factor=1.0, mode="nearest-exact")  # GatherND
            y = torch.roll(y, 1, 2)
            y = self.pool(y).flatten(1)
            return self.lin(y)[:, i]
    return M().eval(), (torch.randn(2, 3, 8, 8), torch.tensor([0, 3]))


def run_timing(n: int = 10) -> None:
    import torch
    t_import = time.perf_counter()
    m, xs = _timing_model()
    ep = torch.export.export(m, xs, strict=False)
    nodes = [nd for nd in ep.graph.nodes if nd.op == "call_function"]
    # cold: the first tiny export in this process (registry build, lazy imports, optimizer)
    target = next(nd for nd in nodes if "adaptive_avg_pool2d" in str(nd.target))
    t0 = time.perf_counter()
    first = onnx_ops_for_node(target)
    cold = time.perf_counter() - t0
    print(f"cold first one-node export ({target.target}): {cold:.2f}s -> {dict(first)}"
          f"  (process up {t0 - t_import:.1f}s before it)")
    for opt in (True, False):
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            onnx_ops_for_node(target, optimize=opt)
            times.append(time.perf_counter() - t0)
        print(f"warm one-node export optimize={opt}: median {statistics.median(times):.3f}s "
              f"min {min(times):.3f}s max {max(times):.3f}s over {n}")
    # stage breakdown of one warm one-node export
    from torch.onnx._internal.exporter import _core, _registration
    mm, xx = one_node_module(target)
    t0 = time.perf_counter()
    reg = _registration.ONNXRegistry.from_torchlib()
    t1 = time.perf_counter()
    e = torch.export.export(mm, xx, strict=False)
    t2 = time.perf_counter()
    d = _core._prepare_exported_program_for_export(e, registry=reg)
    t3 = time.perf_counter()
    prog = _core._exported_program_to_onnx_program(d, registry=reg)
    t4 = time.perf_counter()
    prog.optimize()
    t5 = time.perf_counter()
    print(f"stages: registry {t1-t0:.3f}s, torch.export {t2-t1:.3f}s, decompositions {t3-t2:.3f}s, "
          f"translate {t4-t3:.3f}s, optimize {t5-t4:.3f}s")
    _exporter_state()
    for opt in (True, False):
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            c = onnx_ops_for_node_fast(target, optimize=opt)
            times.append(time.perf_counter() - t0)
        print(f"warm cached-registry one-node query optimize={opt}: median "
              f"{statistics.median(times):.3f}s min {min(times):.3f}s max {max(times):.3f}s -> {dict(c)}")
    # per-node vs whole-model agreement
    t0 = time.perf_counter()
    per_node: dict[str, dict] = {}
    for nd in nodes:
        c = onnx_ops_for_node_fast(nd)
        if c:
            per_node[nd.name + " " + _short(str(nd.target))] = dict(c)
    t_nodes = time.perf_counter() - t0
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = torch.onnx.export(m, xs, dynamo=True, verbose=False)
    t_whole = time.perf_counter() - t0
    by_root: dict[str, Counter] = defaultdict(Counter)
    for o, _dec, root in attribute(whole):
        by_root[root][o] += 1
    print(f"cached per-node query of all {len(nodes)} call_function nodes: {t_nodes:.2f}s; "
          f"whole-model torch.onnx.export {t_whole:.2f}s")
    print("  per-node:", per_node)
    print("  whole model, by root op:", {k: dict(v) for k, v in by_root.items()})


# --------------------------------------------------------------------------------------------
# Part 4: broad sweep over PyTorch's OpInfo database (torch.testing._internal)
# --------------------------------------------------------------------------------------------

def _ensure_expecttest() -> None:
    """common_methods_invocations imports `expecttest` (a test-only dependency, not installed
    in the project venv); a stub is enough for reading OpInfo sample inputs."""
    try:
        import expecttest  # noqa: F401
    except ImportError:
        import types
        import unittest
        mod = types.ModuleType("expecttest")
        mod.TestCase = unittest.TestCase  # type: ignore[attr-defined]
        sys.modules["expecttest"] = mod


def _describe(v: Any) -> str:
    import torch
    if isinstance(v, torch.Tensor):
        return f"T{list(v.shape)}{'' if v.dtype == torch.float32 else str(v.dtype).replace('torch.', ':')}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_describe(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}={_describe(x)}" for k, x in v.items()) + "}"
    return repr(v)[:40]


def run_opinfo(out_jsonl: str, per_op: int = 3, only: str | None = None,
               after: str | None = None) -> None:
    import signal

    import torch
    from torch.utils import _pytree as pytree
    _ensure_expecttest()
    from torch.testing._internal.common_methods_invocations import op_db

    def alarm(*_):
        raise TimeoutError("timeout")
    signal.signal(signal.SIGALRM, alarm)
    skip_prefix = ("fft.", "linalg.", "sparse.", "special.", "signal.", "_refs", "nn.functional.dropout",
                   "randn", "rand", "normal", "bernoulli", "multinomial", "empty", "new_empty", "uniform")
    out = open(out_jsonl, "a")
    started = after is None
    for opi in op_db:
        name = opi.name + ("." + opi.variant_test_name if opi.variant_test_name else "")
        if not started:  # resume after a crash (a native crash ends the process silently)
            started = name == after
            continue
        if only and only not in name:
            continue
        if name.startswith(skip_prefix) or "empty" in name or "rand" in name:
            continue
        dts = opi.supported_dtypes("cpu")
        dtype = next((d for d in (torch.float32, torch.int64, torch.bool) if d in dts), None)
        if dtype is None:
            continue
        try:
            samples = [sm for sm in opi.sample_inputs("cpu", dtype, requires_grad=False)
                       if not any(isinstance(t, torch.Tensor) and t.numel() == 0
                                  for t in pytree.tree_leaves((sm.input, sm.args, sm.kwargs)))][:per_op]
        except Exception as e:  # noqa: BLE001
            print(f"{name}: samples fail {e!r}"[:200], flush=True)
            continue
        for k, sm in enumerate(samples):
            tree = (sm.input, sm.args, sm.kwargs)
            leaves, spec = pytree.tree_flatten(tree)
            pos = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]
            tens = tuple(leaves[i].detach().clone() for i in pos)
            fn = opi.op

            class S(torch.nn.Module):
                def forward(self, *xs, _leaves=leaves, _pos=pos, _spec=spec, _fn=fn):
                    ls = list(_leaves)
                    for i, x in zip(_pos, xs, strict=True):
                        ls[i] = x
                    inp, a, kw = pytree.tree_unflatten(ls, _spec)
                    return _fn(inp, *a, **kw)
            row: dict[str, Any] = {"op": name, "k": k, "sample": _describe(tree)}
            signal.alarm(60)
            try:
                try:
                    _, row["ep_ops"] = _ep_ops(S(), tens)
                except Exception as e:  # noqa: BLE001
                    row["ep_ops"] = None
                    row["error"] = f"torch.export: {type(e).__name__}"
                    raise
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    prog = torch.onnx.export(S(), tens, dynamo=True, verbose=False)
                row["counts"] = dict(count_ops(prog.model_proto))
                row["attr"] = sorted(Counter(f"{o}<-{d}<={rt}" for o, d, rt in attribute(prog)).items())
            except Exception as e:  # noqa: BLE001
                m_ = re.search(r"No ONNX function found for <OpOverload\(op='([^']+)', overload='([^']+)'", str(e))
                row.setdefault("error", f"no ONNX fn {m_.group(1)}.{m_.group(2)}" if m_ else f"{type(e).__name__}: {str(e)[:100]}")
            finally:
                signal.alarm(0)
            out.write(json.dumps(row, default=str) + "\n")
            out.flush()
            if row.get("counts"):
                print(f"{name}#{k} {row['sample'][:100]} ep={row['ep_ops']} -> {row['attr']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("static")
    s.add_argument("--json")
    p = sub.add_parser("probe")
    p.add_argument("--json", default="/tmp/exporter_probe.json")
    p.add_argument("--only")
    p.add_argument("--no-noopt", action="store_true", help="skip the optimize=False export")
    o = sub.add_parser("opinfo")
    o.add_argument("--jsonl", default="/tmp/exporter_opinfo.jsonl")
    o.add_argument("--per-op", type=int, default=3)
    o.add_argument("--only")
    o.add_argument("--after", help="resume after this OpInfo name")
    t = sub.add_parser("timing")
    t.add_argument("--n", type=int, default=10)
    a = ap.parse_args(argv)
    if a.cmd == "static":
        run_static(a.json)
    elif a.cmd == "probe":
        run_probe(a.json, a.only, noopt=not a.no_noopt)
    elif a.cmd == "opinfo":
        run_opinfo(a.jsonl, a.per_op, a.only, a.after)
    elif a.cmd == "timing":
        run_timing(a.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
