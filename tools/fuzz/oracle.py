"""The fuzzer's oracle: lower a model and compare the result with the original.

`evaluate(build, inputs, fresh, ...)` builds the model twice, lowers one copy with
`fxlower.lower(..., verify=False)` and compares the two in eager PyTorch, on the example
inputs (called as users call it, autograd on) and on a second draw (under no_grad):

- "exact" (gather / scatter / select families): bit-exact (`fxlower.testing.same`: dtype,
  shape, NaN places, values, the sign of zero), except sums the report itself calls "not
  bit-exact", which must stay within rounding as below;
- "merge" (conv / linear / BN merges): each element NaN / +inf / -inf / finite as in the
  original or as in the exact (float64) result, finite ones within the first-order rounding
  bound `2 (sum of fan-ins + 8) eps B` of a float64 run (`bound_differences`), and the same
  lowering of a float64 copy within that bound at float64's eps (the algebra is exact).

With onnx=True a rewritten case is also exported, checked for forbidden ops and run in
onnxruntime against eager PyTorch. The result is an `Outcome` (equal, refused, untouched,
different, error, invalid, harness). The fuzzer (tools/fuzz/fuzz.py) calls it for every
case and the regression tests it writes (tests/regressions/) call it for one.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import os
import tempfile
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from torch.utils import _pytree as pytree

from fxlower.testing import same

CASE_FILENAME = "<fuzz case>"  # the file name a drawn model's code is compiled under

__all__ = ["CASE_FILENAME", "Outcome", "bound_differences", "evaluate", "exact_differences", "same",
           "where_raised"]


@dataclasses.dataclass
class Outcome:
    """How one case ended. kind: equal | refused | untouched | different | error | invalid |
    harness (the fuzzer drew a model it cannot build: a bug of tools/fuzz)."""

    kind: str
    applied: list[str] = dataclasses.field(default_factory=list)
    details: list[str] = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    remaining: list[str] = dataclasses.field(default_factory=list)
    message: str = ""
    onnx: str = ""  # "" (not tried) | equal | different | error | skipped
    onnx_message: str = ""
    verify_tol: bool = False  # a merge fxlower's own verification tolerance would reject

    @property
    def failed(self) -> bool:
        return self.kind in ("different", "error", "harness") or self.onnx in ("different", "error")


def _line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0][:300] if msg else ''}"


def where_raised(e: BaseException) -> str:
    """The exception and the innermost frame inside fxlower, its passes, the fuzzer or a drawn
    case's code (or the last frame)."""
    frames = traceback.extract_tb(e.__traceback__)
    mine = [f for f in frames if "fxlower" in f.filename or "/passes/" in f.filename
            or "/tools/fuzz/" in f.filename or f.filename == CASE_FILENAME]
    pick = mine or frames
    at = ""
    if pick:
        f = pick[-1]
        at = f" at {os.path.basename(f.filename)}:{f.lineno} ({f.name})"
    return _line(e) + at


def _clone(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(t.clone() if isinstance(t, torch.Tensor) else t for t in args)


def _run(model: Any, args: tuple[Any, ...], grad: bool = False) -> Any:
    """Run the model on copies of args, under no_grad (or with autograd on, as a user's plain
    call would: outputs detached)."""
    if not grad:
        with torch.no_grad():
            return model(*_clone(args))
    with torch.enable_grad():
        out = model(*_clone(args))
    return pytree.tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, out)


def _leaves(out: Any) -> list[Any]:
    return pytree.tree_leaves(out)


def _first_diff(a: torch.Tensor, b: torch.Tensor) -> str:
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"expected {tuple(a.shape)} {a.dtype}, got {tuple(b.shape)} {b.dtype}"
    af, bf = a.reshape(-1), b.reshape(-1)
    for j in range(af.numel()):
        if not same(af[j:j + 1], bf[j:j + 1]):
            pos = tuple(int(v) for v in torch.unravel_index(torch.tensor(j), a.shape)) if a.dim() else ()
            n = sum(not same(af[i:i + 1], bf[i:i + 1]) for i in range(min(af.numel(), 4096)))
            return f"{n} of {a.numel()} elements differ, first at {pos}: expected {af[j].item()!r}, got {bf[j].item()!r}"
    return "differs"


def exact_differences(ref: Any, got: Any) -> list[str]:
    """Empty when every output leaf is bit-identical (`fxlower.testing.same`)."""
    la, lb = _leaves(ref), _leaves(got)
    if len(la) != len(lb):
        return [f"{len(lb)} output leaves instead of {len(la)}"]
    out = []
    for i, (a, b) in enumerate(zip(la, lb, strict=True)):
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            if not same(a, b):
                out.append(f"output {i}: {_first_diff(a, b)}")
        elif a != b:
            out.append(f"output {i}: {a!r} != {b!r}")
    return out


def _double(args: tuple[Any, ...], absolute: bool = False) -> tuple[Any, ...]:
    def one(t: Any) -> Any:
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            t = t.double()
            return t.abs() if absolute else t
        return t
    return tuple(one(t) for t in args)


def abs_twin(model: nn.Module) -> nn.Module:
    """The model in float64 with |W|, |b| and BN means negated in magnitude, so that run on |x|
    it bounds sum |w| |x| of every output (eval BN: (|x| + |mean|) * |gamma| / sigma + |beta|)."""
    m = copy.deepcopy(model).double()
    with torch.no_grad():
        for p in m.parameters():
            p.abs_()
        for name, b in m.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(-b.abs())
    return m


def fan_in(*modules: nn.Module) -> int:
    """Sum of the fan-ins of every weight (float tensors of rank >= 2) in the modules."""
    total = 0
    for m in modules:
        seen = set()
        for t in [*m.parameters(), *m.buffers()]:
            if id(t) in seen or not t.is_floating_point() or t.dim() < 2:
                continue
            seen.add(id(t))
            total += t[0].numel()
    return total


def _classes(t: torch.Tensor) -> torch.Tensor:
    """0 finite, 1 NaN, 2 +inf, 3 -inf."""
    c = torch.zeros(t.shape, dtype=torch.int8)
    c[torch.isnan(t)] = 1
    c[torch.isposinf(t)] = 2
    c[torch.isneginf(t)] = 3
    return c


def bound_differences(ref: Any, got: Any, ref64: Any, bound: Any, fanin: int) -> list[str]:
    """Rewrites that are only within rounding. Non-finite values: each element is NaN / +inf /
    -inf / finite as in the original (in its dtype) or as in the exact result (float64,
    rounded to the dtype): a different summation order may overflow where PyTorch's did not,
    or not where it did, but never invents a non-finite value. Finite elements (where the
    exact result is finite): |got - ref64| <= 2 (fanin + 8) eps B + a subnormal floor, B the
    run on absolute values."""
    la, lb, l64, lB = _leaves(ref), _leaves(got), _leaves(ref64), _leaves(bound)
    if len(la) != len(lb):
        return [f"{len(lb)} output leaves instead of {len(la)}"]
    out = []
    for i, (a, b, r, B) in enumerate(zip(la, lb, l64, lB, strict=True)):
        if not isinstance(a, torch.Tensor) or not a.is_floating_point():
            if not (isinstance(b, torch.Tensor) and same(a, b)):
                out.append(f"output {i}: {_first_diff(a, b) if isinstance(b, torch.Tensor) else b}")
            continue
        if a.shape != b.shape or a.dtype != b.dtype:
            out.append(f"output {i}: {_first_diff(a, b)}")
            continue
        ca, cb, cr = _classes(a), _classes(b), _classes(r.to(a.dtype))
        wrong = (cb != ca) & (cb != cr)
        if bool(wrong.any()):
            j = int(torch.nonzero(wrong.reshape(-1))[0])
            out.append(f"output {i}: {int(wrong.sum())} of {a.numel()} elements NaN/inf where neither "
                       f"the original nor the exact result is, first: expected "
                       f"{a.reshape(-1)[j].item()!r} (exact {r.reshape(-1)[j].item()!r}), got "
                       f"{b.reshape(-1)[j].item()!r}")
            continue
        fin = (cb == 0) & torch.isfinite(r) & torch.isfinite(B)
        info = torch.finfo(a.dtype)
        tol = 2 * (fanin + 8) * info.eps * B + 4 * (fanin + 8) * info.tiny
        err = (b.double() - r).abs()
        bad = fin & (err > tol)
        if bool(bad.any()):
            j = int(torch.nonzero(bad.reshape(-1))[0])
            out.append(f"output {i}: {int(bad.sum())} of {a.numel()} elements beyond the rounding "
                       f"bound, first: error {err.reshape(-1)[j].item():.3g} > "
                       f"{tol.reshape(-1)[j].item():.3g} (value {r.reshape(-1)[j].item():.6g})")
    return out


def _is_bn_name(name: str) -> bool:
    return "bn" in name


def evaluate(build: Callable[[], nn.Module], inputs: tuple[Any, ...], fresh: tuple[Any, ...], *,
             tracer: str = "symbolic_trace", check: str = "exact", onnx: bool = False,
             mkldnn: bool = True, **lower_kw: Any) -> Outcome:
    """Lower a model built by `build()` and compare it with the original (see the module
    docstring). `check`: "exact" or "merge". mkldnn=False runs every PyTorch conv on its
    native kernels. Used by the fuzzer and by the regression tests it writes."""
    with torch.backends.mkldnn.flags(enabled=mkldnn):
        return _evaluate(build, inputs, fresh, tracer, check, onnx, lower_kw)


def _evaluate(build: Callable[[], nn.Module], inputs: tuple[Any, ...], fresh: tuple[Any, ...],
              tracer: str, check: str, onnx: bool, lower_kw: dict[str, Any]) -> Outcome:
    import fxlower
    from fxlower.errors import LoweringError

    try:
        m_ref, m_low = build(), build()
    except Exception as e:  # noqa: BLE001
        return Outcome("harness", message=f"building the model failed: {where_raised(e)}")
    try:
        ref = [_run(m_ref, inputs, grad=True), _run(m_ref, fresh)]
    except Exception as e:  # noqa: BLE001 - PyTorch rejects the drawn op: not a case
        return Outcome("invalid", message=_line(e))
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            gm = fxlower.lower(m_low, _clone(inputs), verify=False, tracer=tracer,
                               on_forbidden="warn", **lower_kw)
    except LoweringError as e:
        return Outcome("refused", skipped=[("capture", str(e))], message=str(e))
    except Exception as e:  # noqa: BLE001
        return Outcome("error", message=f"fxlower.lower raised {where_raised(e)}")
    rep = fxlower.report_of(gm)
    out = Outcome(
        "equal" if rep.applied else ("refused" if rep.skipped or rep.remaining else "untouched"),
        applied=[a.pass_name for a in rep.applied], details=[a.detail for a in rep.applied],
        skipped=[(s.pass_name, s.reason) for s in rep.skipped if s.reason != "switched off"],
        remaining=list(rep.remaining))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = [_run(gm, inputs, grad=True), _run(gm, fresh)]  # as users call it, and not
    except Exception as e:  # noqa: BLE001
        out.kind, out.message = "error", f"the lowered module raised {where_raised(e)}"
        return out
    mode = check
    if check == "exact" and any("not bit-exact" in d for d in out.details):
        mode = "sum"  # more writers than the unrolled, ordered sum: within rounding only
    problems: list[str] = []
    refs64: list[Any] = []
    fanin = 0
    if mode not in ("exact", "grounded"):
        fanin = (fan_in(m_ref, gm) + 8 * sum(_is_bn_name(n) for n, _ in m_ref.named_buffers())
                 if mode == "merge" else max(t.numel() for t in inputs))
    for r, (args, rf, gt) in enumerate(zip((inputs, fresh), ref, got, strict=True)):
        what = "example inputs" if r == 0 else "fresh draw"
        if mode == "exact":
            p = exact_differences(rf, gt)
        elif mode == "grounded":  # a rewrite exact only to rounding of its own kind (layer
            from fxlower.verify import compare  # norm's decomposition): verify's tolerance,

            twin = copy.deepcopy(build()).double()  # grounded in the original's own float32
            p = [f"{m.output}: {m.message}"  # error, here on draws lower() never saw
                 for m in compare(rf, gt, _run(twin, _double(args)))[0]]
        else:
            twin = copy.deepcopy(build()).double()
            ref64 = _run(twin, _double(args))
            refs64.append(ref64)
            bnd = _run(abs_twin(build()) if mode == "merge" else twin, _double(args, absolute=True))
            p = bound_differences(rf, gt, ref64, bnd, fanin)
        problems += [f"{what}: {x}" for x in p]
    if mode == "merge" and out.applied and not problems:
        problems += _float64_algebra(build, inputs, tracer, lower_kw, fanin)
        from fxlower.verify import compare
        for rf, gt, r64 in zip(ref, got, refs64, strict=True):
            if compare(rf, gt, r64)[0]:
                out.verify_tol = True
    if problems:
        out.kind, out.message = "different", "; ".join(problems[:3])
        return out
    if onnx and out.applied:
        out.onnx, out.onnx_message = _onnx_check(build, gm, inputs, fresh, ref, mode, fanin, rep,
                                                 lower_kw.get("target"))
    return out


def _float64_algebra(build: Callable[[], nn.Module], inputs: tuple[Any, ...], tracer: str,
                     lower_kw: dict[str, Any], fanin: int) -> list[str]:
    """The same lowering of a float64 copy must match the float64 original to float64
    rounding: the merge's algebra is exact."""
    import fxlower

    a64 = _double(inputs)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            gm64 = fxlower.lower(build().double(), a64, verify=False, tracer=tracer,
                                 on_forbidden="warn", **lower_kw)
        got = _run(gm64, a64)
    except Exception as e:  # noqa: BLE001
        return [f"float64: lowering or running the float64 copy raised {where_raised(e)}"]
    ref = _run(build().double(), a64)
    bnd = _run(abs_twin(build()), _double(inputs, absolute=True))
    return [f"float64: {p}" for p in bound_differences(ref, got, ref, bnd, fanin)]


def _onnx_check(build: Callable[[], nn.Module], gm: Any, inputs: tuple[Any, ...],
                fresh: tuple[Any, ...], ref: list[Any], mode: str, fanin: int, rep: Any,
                target: Any) -> tuple[str, str]:
    """Export the lowered module, check the file for forbidden ops (generic target, nothing
    refused) and compare onnxruntime with eager PyTorch."""
    import numpy as np
    import onnxruntime as ort

    from fxlower.api import onnx_export
    from fxlower.check import check_file

    if any(t.dtype == torch.bfloat16 for t in (*inputs, *_leaves(ref[0])) if isinstance(t, torch.Tensor)):
        return "skipped", "bfloat16 inputs or outputs (numpy has no bfloat16)"
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "lowered.onnx")
        try:
            onnx_export(gm, _clone(inputs), path)
        except Exception as e:  # noqa: BLE001
            try:
                onnx_export(build(), _clone(inputs), os.path.join(d, "original.onnx"))
            except Exception:  # noqa: BLE001
                return "skipped", f"neither the original nor the lowered module exports: {_line(e)}"
            return "error", f"the lowered module does not export, the original does: {_line(e)}"
        if target in (None, "generic") and not rep.remaining:
            res = check_file(path)
            if not res.ok:
                return "different", "forbidden ops in the exported file: " + "; ".join(
                    v.format() for v in res.violations[:3])
        try:
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            names = [i.name for i in sess.get_inputs()]
            if len(names) != len(inputs):
                return "skipped", f"the ONNX file has {len(names)} inputs, the model {len(inputs)}"
            runs = [sess.run(None, {n: t.numpy() for n, t in zip(names, args, strict=True)})
                    for args in (inputs, fresh)]
        except Exception as e:  # noqa: BLE001 - does onnxruntime run the original?
            try:
                p0 = os.path.join(d, "original.onnx")
                onnx_export(build(), _clone(inputs), p0)
                s0 = ort.InferenceSession(p0, providers=["CPUExecutionProvider"])
                s0.run(None, {i.name: t.numpy() for i, t in zip(s0.get_inputs(), inputs, strict=False)})
            except Exception:  # noqa: BLE001
                return "skipped", f"onnxruntime runs neither the original nor the lowered file: {_line(e)}"
            return "error", f"onnxruntime runs the original but not the lowered file: {_line(e)}"
        def differences(r: int, outs: list[Any]) -> list[str]:
            got = [torch.from_numpy(np.asarray(o).copy()) for o in outs]
            if mode == "exact":
                return exact_differences(ref[r], got)
            args = (inputs, fresh)[r]
            ref64 = _run(copy.deepcopy(build()).double(), _double(args))
            bnd = _run(abs_twin(build()) if mode == "merge" else build().double(),
                       _double(args, absolute=True))
            return bound_differences(ref[r], got, ref64, bnd, fanin)

        for r, outs in enumerate(runs):
            p = differences(r, outs)
            if not p:
                continue
            what = f"onnxruntime ({'example inputs' if r == 0 else 'fresh draw'}): {p[0]}"
            # onnxruntime may itself differ from eager PyTorch for the original op (TopK
            # with sorted=False orders its outputs its own way): then it is no rewrite's doing
            try:
                p0 = os.path.join(d, "original.onnx")
                onnx_export(build(), _clone(inputs), p0)
                s0 = ort.InferenceSession(p0, providers=["CPUExecutionProvider"])
                outs0 = s0.run(None, {i.name: t.numpy() for i, t in
                                      zip(s0.get_inputs(), (inputs, fresh)[r], strict=True)})
                if differences(r, outs0):
                    return "skipped", f"onnxruntime differs from eager PyTorch for the original too: {what}"
            except Exception:  # noqa: BLE001 - the original does not export or run: ours differs
                pass
            return "different", what
    return "equal", ""
