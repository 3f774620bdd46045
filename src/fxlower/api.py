"""The Python API: `lower` and `export`. The CLI sits on top of these."""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
import torch.fx as fx
from torch.utils import _pytree as pytree

from . import census, graph, progress
from . import host as host_split
from .call import as_positional, bind_runs, keyword_view
from .capture import capture
from .errors import LoweringError, VerificationError
from .normalise import normalise
from .report import Report, advise
from .rewrite import AnyPass, Context, Options, run_passes
from .verify import Mismatch, References, verify

REPORT_ATTR = "fxlower_report"


def _keyword_call(model: Any, args: tuple[Any, ...] | None, kwargs: Any, verify_inputs: Any
                  ) -> tuple[torch.nn.Module, tuple[Any, ...], Any]:
    """Keyword example inputs: the model's keyword view and its positional inputs
    (fxlower.call), `verify_inputs` mapped the same way."""
    if not isinstance(kwargs, Mapping):
        raise LoweringError(f"example_kwargs must be a dict of keyword inputs, not "
                            f"{type(kwargs).__name__}")
    _check_model(model, args)
    view, inputs, binding = keyword_view(model, args or (), kwargs)
    return view, inputs, bind_runs(binding, verify_inputs)


def _check_model(model: Any, inputs: tuple[Any, ...] | None) -> None:
    """Refuse what fxlower cannot lower, with the cause."""
    if not isinstance(model, torch.nn.Module):
        raise LoweringError(f"expected a torch.nn.Module, got {type(model).__name__}")
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.device.type != "cpu":
            raise LoweringError(
                f"{name} is on device '{t.device}': fxlower lowers and verifies on the CPU; "
                "move the model with model.cpu() first"
            )
    for t in pytree.tree_leaves(inputs) if inputs is not None else []:
        if isinstance(t, torch.Tensor) and t.device.type != "cpu":
            raise LoweringError(f"an example input is on device '{t.device}'; pass CPU tensors")


def _references(model: torch.nn.Module, inputs: tuple[Any, ...], verify_inputs: Any
                ) -> References:
    """Verification's references, with the first one, the model on the example inputs, run
    now: wrong arity, shapes or dtypes are named before any tracer runs."""
    refs = References(model, inputs, verify_inputs=verify_inputs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            refs.out(0)
    except VerificationError as e:  # any failure of the user's own forward
        cause = e.__cause__ if e.__cause__ is not None else e
        first = (str(cause).strip().splitlines() or [""])[0]
        raise LoweringError(
            f"the model fails on the example inputs: {type(cause).__name__}: {first}") from e
    return refs


def _passes() -> list[AnyPass]:
    from fxlower.passes import PASSES  # the registry lives in the shipped passes package

    registry: list[AnyPass] = PASSES
    return registry


class _Session:
    """One call of `lower`: the model captured and normalised once (`base`); every lowering
    (the first, and one per bisection step or rollback) runs the enabled rewrites on a
    snapshot of that graph (graph.snapshot: module tree copied, parameters shared), and
    verification runs the original once per input for all of them (verify.References)."""

    def __init__(self, model: torch.nn.Module, inputs: tuple[Any, ...] | None,
                 options: Options, passes: Sequence[AnyPass], tracer: str) -> None:
        self.inputs, self.options, self.passes = inputs, options, passes
        self.forbidden = census.forbidden_by(options.target)
        report = Report()
        with progress.stage("capture") as st:
            cap = capture(model, inputs, tracer)
            st.summary = cap.method
        gm = cap.gm
        report.capture, report.capture_note = cap.method, cap.note
        report.seconds["capture"] = st.seconds
        with progress.stage("normalise") as st:
            if inputs is not None:
                graph.from_export(gm)
                graph.annotate(gm, inputs)
            if normalise(gm, report, options.target) and inputs is not None:
                graph.annotate(gm, inputs)
            report.ops_before = census.census(gm, self.forbidden)
            report.model_macs = census.graph_macs(gm)
        report.seconds["normalise"] = st.seconds
        self.base, self.base_report = gm, report
        # lookups embedding="host" would move (named in the advice when they cost much)
        self.hostable = set() if options.embedding == "host" else {
            n.name for n in host_split.candidates(gm) if host_split.host_problem(n) is None}

    def lower(self, enabled: Callable[[str], bool]) -> tuple[fx.GraphModule, Report]:
        """The enabled rewrites on a fresh snapshot of the normalised graph."""
        gm = cast(fx.GraphModule, graph.snapshot(self.base))
        report = copy.deepcopy(self.base_report)
        inputs = self.inputs
        feed = [inputs]  # what the graph being rewritten takes (the device's inputs after a host split)

        def reannotate() -> None:
            if feed[0] is not None:
                graph.annotate(gm, feed[0])

        t0 = time.perf_counter()
        result: fx.GraphModule = gm
        if self.options.embedding == "host" and inputs is not None:
            result = _split_host(gm, inputs, report)
            if result is not gm:
                feed[0] = host_split.device_inputs(result, inputs)
                reannotate()
        ctx = Context(gm=gm, options=self.options, has_shapes=inputs is not None)
        run_passes(gm, self.passes, ctx, report, enabled=enabled, reannotate=reannotate)
        graph.erase_dead(gm)
        gm.graph.lint()
        gm.recompile()
        report.ops_after = census.census(gm, self.forbidden)
        report.remaining = census.remaining(gm, self.forbidden)
        report.advice = advise(report.applied, report.model_macs, self.hostable)
        report.seconds["rewrite"] = time.perf_counter() - t0
        return result, report


def _split_host(gm: fx.GraphModule, inputs: tuple[Any, ...], report: Report) -> fx.GraphModule:
    """embedding="host": table lookups go to a host graph (fxlower.host)."""
    from .report import Skipped

    composed, lookups, refused = host_split.split(gm)
    report.host = [dataclasses.asdict(h) for h in lookups]
    for n, reason in refused:
        origin = str(n.meta.get("fxl_origin") or n.name)
        report.skipped.append(Skipped("host", n.name, origin, reason))
    return composed


def _host_onnx_runner(host_gm: fx.GraphModule, composed: fx.GraphModule, host_path: str
                      ) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """The device file's inputs for the model's inputs, computed by running the host file
    in onnxruntime (so `export`'s comparison covers host.onnx -> device.onnx end to end).
    The exporter keeps the inputs the host graph uses, in order (it may rename them)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(host_path, providers=["CPUExecutionProvider"])
    used = [bool(n.users) for n in host_gm.graph.nodes if n.op == "placeholder"]
    wanted = [i.name for i in sess.get_inputs()]
    if len(wanted) != sum(used):
        raise LoweringError(f"{host_path} takes {len(wanted)} inputs, its graph uses {sum(used)}")

    def run(run_inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        args = [a for a, u in zip(host_split.host_inputs(composed, run_inputs), used, strict=False)
                if u]
        feed = {w: a.numpy() for w, a in zip(wanted, args, strict=True)}
        return tuple(torch.from_numpy(o) for o in sess.run(None, feed))

    return run


def host_path_of(path: str | os.PathLike[str]) -> str:
    """Where `export` writes the host lookups of an embedding="host" model: OUT.host.onnx."""
    p = os.fspath(path)
    stem = p[:-5] if p.endswith(".onnx") else p
    return stem + ".host.onnx"


def lower(
    model: torch.nn.Module,
    example_inputs: Any = None,
    *,
    example_kwargs: Mapping[str, Any] | None = None,
    verify: bool = True,
    on_mismatch: str = "rollback",
    on_forbidden: str = "raise",
    assume_finite: bool = False,
    merge: str = "auto",
    tracer: str = "auto",
    target: Any = None,
    embedding: str = "matmul",
    verify_inputs: Sequence[Any] | None = None,
    passes: Sequence[AnyPass] | None = None,
    enabled: Callable[[str], bool] | None = None,
    verbose: bool | None = None,
) -> fx.GraphModule:
    """Lower `model` into a GraphModule free of gather-family ops, and verify it.

    Args:
        model: the nn.Module; never modified (capture and rewriting work on copies).
        example_inputs: a tensor or tuple of positional inputs. Shapes are specialised to
            them. Without them (and without example_kwargs) only symbolic tracing is
            possible and verification is skipped.
        example_kwargs: keyword inputs, as the model is called (`model(**example_kwargs)`,
            a tokenizer's output): captured, verified and exported like positional ones;
            the lowered module takes them by the same names (`lowered(**example_kwargs)`)
            and the exported file's inputs are named after them. Arguments the call skips
            keep their defaults; a keyword value with no tensor in it (`use_cache=False`)
            is fixed at capture, as torch.export fixes it (fxlower.call).
        verify: compare the lowered module with the original on the example inputs and on
            fresh draws.
        on_mismatch: when verification fails, the rewrite responsible is found by bisection
            over the applied rewrites. "rollback" (default): undo it, re-verify, repeat, and
            list it in `report.rolled_back`; "raise": raise VerificationError naming the
            output, the error and the rewrite.
        on_forbidden: "raise" (LoweringError if a gather-family op remains) or "warn".
        assume_finite: promise that float sources hold no NaN/inf/-0.0 (skips the code path
            that carries them through a mask product exactly).
        merge: "auto" | "always" | "never" for merging chains of linear layers.
        tracer: "auto" (symbolic_trace, falling back to torch.export), "symbolic_trace" or
            "export".
        target: a profile name ("generic" default, "rknn2", "kneron", "ethos-u55", "tidl"; see
            `fxlower targets`) or a `fxlower.Target`: ops the target lacks are lowered with a
            formulation whose ops it has; ops it runs natively are kept.
        embedding: "matmul" (default): table lookups become one-hot products on the device
            (2*V FLOPs per output value of a V-row table). "host": lookups of a stored table
            by an index taken from the inputs move to a host graph; the result is a module
            with submodules `host` (the lookups: run it before the device, on the CPU) and
            `device` (the gather-free graph, taking the rows as inputs); calling it runs
            both. `report.host` lists the lookups and the FLOPs each saves.
        verify_inputs: a list of input tuples (same arity as example_inputs; with
            example_kwargs, dicts of keyword inputs or (args, kwargs) pairs) to verify on
            instead of fresh random draws: for models whose valid inputs are narrower than
            the example's shapes and value ranges. Without it, a fresh draw the original
            model itself fails on is skipped and listed in `report.verification`.
        passes: the passes to run (default: fxlower.passes.PASSES).
        enabled: predicate over rewrite ids ("<pass>:<node>") to switch single rewrites off.
        verbose: progress on stderr (fxlower.progress): None (default) shows a stage that
            runs over a second on a terminal and nothing in a pipe; False never; True also
            when stderr is not a terminal. Stages are logged at INFO (logger "fxlower")
            whatever this is.

    Returns the GraphModule; its report is `lowered.fxlower_report` (`fxlower.Report`).
    """
    if on_mismatch not in ("rollback", "raise"):
        raise ValueError("on_mismatch must be 'rollback' or 'raise'")
    if on_forbidden not in ("raise", "warn"):
        raise ValueError("on_forbidden must be 'raise' or 'warn'")
    if merge not in ("auto", "always", "never"):
        raise ValueError("merge must be 'auto', 'always' or 'never'")
    if embedding not in ("matmul", "host"):
        raise ValueError("embedding must be 'matmul' or 'host'")
    with progress.session(verbose):
        inputs = as_positional(example_inputs)
        if example_kwargs is not None:
            model, inputs, verify_inputs = _keyword_call(model, inputs, example_kwargs,
                                                         verify_inputs)
        _check_model(model, inputs)
        if verify_inputs is not None and inputs is None:
            raise LoweringError("verify_inputs needs example_inputs too (they fix the shapes)")
        refs = None if inputs is None else _references(model, inputs, verify_inputs)
        from .targets import get_target

        tgt = get_target(target)
        options = Options(assume_finite=assume_finite, merge=merge, target=tgt, embedding=embedding)
        plist = list(_passes() if passes is None else passes)
        on = enabled or (lambda rid: True)
        session = _Session(model, inputs, options, plist, tracer)
        with progress.stage("rewrite") as st:
            gm, report = session.lower(on)
            st.summary = f"{len(report.applied)} rewrites"

        if inputs is None:
            report.verification = {"skipped": "no example_inputs"}
            if verify:
                warnings.warn("fxlower.lower: no example_inputs, so verification was skipped",
                              stacklevel=2)
        elif verify:
            assert refs is not None
            with progress.stage("verify") as st:
                gm, report, rolled, figures = _verified(session, model, gm, report, inputs,
                                                        refs, on, on_mismatch)
                st.summary = f"{figures.get('runs', 0)} runs"
            report.rolled_back = rolled
            report.verification = figures
            report.seconds["verify"] = st.seconds

        if report.remaining:
            msg = "forbidden ops remain after lowering: " + "; ".join(report.remaining)
            reasons = [f"{s.op}: {s.reason}" for s in report.skipped if s.reason != "switched off"]
            if reasons:
                msg += " (skipped: " + "; ".join(reasons) + ")"
            if report.rolled_back:
                msg += " (rolled back because verification failed: " + "; ".join(report.rolled_back) + ")"
            if on_forbidden == "raise":
                raise LoweringError(msg)
            warnings.warn(msg, stacklevel=2)
            report.warnings.append(msg)
        setattr(gm, REPORT_ATTR, report)
        return gm


def _verified(session: _Session, model: torch.nn.Module, gm: fx.GraphModule, report: Report,
              inputs: tuple[Any, ...], refs: References, on: Callable[[str], bool],
              on_mismatch: str) -> tuple[fx.GraphModule, Report, list[str], dict[str, Any]]:
    """Verify the lowering; on a mismatch find the rewrite responsible (bisection) and
    raise, or roll it back and lower again, until verification passes."""
    mismatches, figures = _check_outputs(model, gm, inputs, refs)
    off: set[str] = set()
    rolled: list[str] = []
    while mismatches:
        first = mismatches[0]
        more = f" ({len(mismatches) - 1} more mismatches)" if len(mismatches) > 1 else ""
        ids = [a.rewrite_id for a in report.applied]
        culprit = _bisect(session, model, inputs, refs, on, off, ids)
        if culprit is None:
            hint = ("" if "example inputs" in first.output else
                    "; it matches on the example inputs, so the tracer likely baked in a "
                    "branch taken on their values: if the model only accepts such inputs, "
                    "pass verify_inputs=[...] with valid ones")
            raise VerificationError(
                f"{first.output}: {first.message}{more}; the captured graph differs from "
                f"the model before any rewrite ({report.capture}: "
                f"{report.capture_note or 'ok'}){hint}"
            )
        node = next(a for a in report.applied if a.rewrite_id == culprit)
        if on_mismatch == "raise":
            raise VerificationError(
                f"{first.output}: {first.message}{more}; caused by rewrite {culprit} "
                f"({node.op}: {node.detail})"
            )
        off.add(culprit)
        rolled.append(f"{culprit} ({node.op}): {first.output}: {first.message}")
        gm, report = session.lower(lambda r: on(r) and r not in off)
        mismatches, figures = _check_outputs(model, gm, inputs, refs)
    return gm, report, rolled, figures


def _check_outputs(model: Any, gm: Any, inputs: tuple[Any, ...], refs: References
                   ) -> tuple[list[Mismatch], dict[str, Any]]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return verify(model, gm, inputs, refs=refs)
    except VerificationError:  # about the original model or the inputs: not the lowering's
        raise
    except Exception as e:  # noqa: BLE001 - the lowered module failed to run at all
        return [Mismatch("output", f"the lowered module raised {e!r}", float("inf"))], {}


def _bisect(
    session: _Session,
    model: torch.nn.Module,
    inputs: tuple[Any, ...],
    refs: References,
    on: Callable[[str], bool],
    off: set[str],
    ids: list[str],
) -> str | None:
    """The rewrite whose addition first makes verification fail: bisection over prefixes of
    the applied rewrites (in the order they were applied), log2(n) re-lowerings. None when
    the capture alone (no rewrite at all) already fails."""

    def fails(k: int) -> bool:
        progress.step(f"finding the rewrite that fails: first {k} of {len(ids)}")
        keep = set(ids[:k])
        gm, _ = session.lower(lambda r: r in keep and on(r) and r not in off)
        return bool(_check_outputs(model, gm, inputs, refs)[0])

    if fails(0):
        return None
    lo, hi = 0, len(ids)  # prefix lo passes, prefix hi fails
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fails(mid):
            hi = mid
        else:
            lo = mid
    return ids[hi - 1]


def report_of(lowered: fx.GraphModule) -> Report:
    """The report `lower` attached to its result."""
    return cast(Report, getattr(lowered, REPORT_ATTR))


def export(
    model: torch.nn.Module,
    example_inputs: Any = None,
    path: str | os.PathLike[str] | None = None,
    *,
    example_kwargs: Mapping[str, Any] | None = None,
    forbid: Any = None,
    allow: Any = None,
    target: Any = None,
    **lower_kwargs: Any,
) -> Report:
    """Lower for `target`, export to ONNX (dynamo exporter), prove that no op the target
    lacks remains (`forbid`/`allow` adjust the check as in `fxlower check`), and compare
    onnxruntime's outputs with the original model's. Returns the report. Keyword inputs
    (`example_kwargs`) as in `lower`: the file's inputs are named after them."""

    if path is None:
        raise LoweringError("fxlower.export needs the output path: export(model, "
                            "example_inputs, path) or export(model, path=..., example_kwargs=...)")
    with progress.session(lower_kwargs.get("verbose")):
        return _export(model, example_inputs, path, example_kwargs, forbid, allow, target,
                       lower_kwargs)


def _export(model: torch.nn.Module, example_inputs: Any, path: str | os.PathLike[str],
            example_kwargs: Mapping[str, Any] | None, forbid: Any, allow: Any, target: Any,
            lower_kwargs: dict[str, Any]) -> Report:
    from .check import check_file

    inputs = as_positional(example_inputs)
    if example_kwargs is not None:
        model, inputs, runs = _keyword_call(model, inputs, example_kwargs,
                                            lower_kwargs.get("verify_inputs"))
        if runs is not None:
            lower_kwargs["verify_inputs"] = runs
    if inputs is None:
        raise LoweringError("fxlower.export needs example_inputs or example_kwargs")
    lowered = lower(model, inputs, target=target, **lower_kwargs)
    report = report_of(lowered)
    split = host_split.parts(lowered)
    prepare = None
    with progress.stage("export") as st:
        if split is None:
            try:
                onnx_export(lowered, inputs, path)
            except Exception as e:  # noqa: BLE001 - named, with its node and a remedy
                raise LoweringError(export_failure(e, model, inputs)) from e
        else:  # embedding="host": the device graph goes to `path`, the lookups beside it
            host_gm, device = split
            host_path = host_path_of(path)
            onnx_export(host_gm, host_split.host_inputs(lowered, inputs), host_path)
            onnx_export(device, host_split.device_inputs(lowered, inputs), path)
            report.onnx["host_path"] = str(host_path)
            prepare = _host_onnx_runner(host_gm, lowered, host_path)
    report.seconds["export"] = st.seconds
    with progress.stage("check") as st:
        result = check_file(path, forbid=forbid, allow=allow, target=target)
        st.summary = f"{len(result.violations)} forbidden"
    report.seconds["check"] = st.seconds
    report.onnx.update({"path": str(path), "nodes": result.n_nodes,
                        "forbidden": len(result.violations), "op_counts": result.op_counts})
    if not result.ok:  # the file is the proof: what it holds remains, whatever the graph said
        _file_remaining(report, result)
        msg = "the exported ONNX file still has forbidden ops:\n" + result.format()
        if lower_kwargs.get("on_forbidden", "raise") == "raise":
            raise LoweringError(msg)
        warnings.warn(msg, stacklevel=3)
        report.warnings.append(msg)
    with progress.stage("onnxruntime") as st:
        err = ort_compare(model, inputs, path, prepare=prepare,
                          verify_inputs=lower_kwargs.get("verify_inputs"))
    report.seconds["onnxruntime"] = st.seconds
    report.onnx["ort_max_abs_error"] = err
    return report


def _file_remaining(report: Report, result: Any) -> None:
    """The exported file's forbidden nodes go to `report.onnx["remaining"]`; when the graph
    census named none (an op the census does not know exports to one), they become
    `report.remaining` / `ops_after` (keyed "ONNX <op>"): the report never says clean when
    the file is not."""
    found = [v for v in result.violations if not v.is_int64]
    report.onnx["remaining"] = [v.format() for v in found]
    if report.remaining:
        return
    for v in found:
        report.remaining.append(f"{v.format()} of the exported file")
        key = f"ONNX {v.qualified_op}"
        report.ops_after[key] = report.ops_after.get(key, 0) + 1


# Remedies for the exporter failures met on real models, by a phrase of the innermost cause.
_EXPORT_REMEDIES = (
    ("Cannot view a tensor", "a view of a tensor whose layout the exporter's decompositions "
     "changed (its scaled_dot_product_attention is one); with transformers, "
     "attn_implementation='eager' avoids that path"),
    ("No ONNX function found", "the exporter has no ONNX function for this op at this opset: "
     "spell the op differently in the model, or give torch.onnx.export a "
     "custom_translation_table"),
)


def export_failure(e: BaseException, model: torch.nn.Module, inputs: tuple[Any, ...]) -> str:
    """What to tell a user when the lowered module does not export: the innermost cause, the
    graph node the exporter was at, whether the original model exports (if it does not,
    the limit is the exporter's), and a remedy where one is known."""
    import re

    chain, seen = [], set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    inner = chain[-1]
    cause = f"{type(inner).__name__}: {(str(inner).strip().splitlines() or [''])[0]}"
    text = "\n".join(str(c) for c in chain)
    node = re.search(r"(?:translating node|While executing) %(\w+)[^\n]*?target=([\w.]+)", text)
    at = f" at node '{node.group(1)}' ({node.group(2)})" if node else ""
    try:
        with tempfile.TemporaryDirectory() as d:
            onnx_export(model, inputs, os.path.join(d, "original.onnx"))
        original = ("the original model exports: this is fxlower's failure, please report it "
                    "with this message")
    except Exception:  # noqa: BLE001 - the point: does the original fail too?
        original = "the original model does not export either (the exporter's limit)"
    remedy = next((r for phrase, r in _EXPORT_REMEDIES if phrase in text), (
        "torch.onnx.export(..., report=True) writes the exporter's own report"))
    return f"torch.onnx.export failed on the lowered module{at}: {cause}; {original}; {remedy}"


def onnx_export(module: torch.nn.Module, inputs: tuple[Any, ...], path: str | os.PathLike[str]) -> None:
    """torch.onnx.export with the dynamo exporter, quietly, into one self-contained file."""
    import contextlib
    import io
    import logging

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module, inputs, dynamo=True, verbose=False)
        assert prog is not None  # the dynamo exporter always returns its ONNXProgram
        prog.save(str(path), external_data=False)


def ort_compare(model: torch.nn.Module, inputs: tuple[Any, ...], path: str | os.PathLike[str],
                *, draws: int = 2,
                prepare: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None,
                verify_inputs: Any = None) -> float:
    """Run the ONNX file in onnxruntime on the example inputs and fresh draws and compare
    with the original model, with the same tolerance as `verify` (grounded in the original's
    own fp32 error against a float64 run). Returns the max abs error; raises
    VerificationError on a mismatch. `prepare` maps the model's inputs to the file's (the
    host lookups of an embedding="host" model). `verify_inputs` replaces the fresh draws,
    as in `lower`; a fresh draw the original fails on is skipped."""
    import numpy as np
    import onnxruntime as ort

    from .verify import compare, no_draw_left

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    refs = References(model, inputs, draws=draws, draw_seed=1000, verify_inputs=verify_inputs)
    worst = 0.0
    skipped: list[str] = []
    fresh_done = 0
    for i, run in enumerate(refs.runs):
        ref, why = refs.out(i)
        skipped += why
        if ref is None:
            continue
        fresh_done += run.fresh
        run_inputs = run.inputs
        fed = run_inputs if prepare is None else prepare(run_inputs)
        leaves = [t for t in pytree.tree_leaves(fed) if isinstance(t, torch.Tensor)]
        feed = {n: (t.float() if t.dtype == torch.bfloat16 else t).numpy()
                for n, t in zip(names, leaves, strict=False)}
        got = sess.run(None, feed)
        ref_leaves = [t for t in pytree.tree_leaves(ref) if isinstance(t, torch.Tensor)]
        got_t = [torch.from_numpy(np.asarray(g)) for g in got]
        got_t = [g.to(a.dtype) if g.dtype != a.dtype and a.dtype == torch.bfloat16 else g
                 for g, a in zip(got_t, ref_leaves, strict=False)]
        if len(got_t) != len(ref_leaves):
            raise VerificationError(
                f"onnxruntime returned {len(got_t)} outputs, the model {len(ref_leaves)}")
        mism, w, _, _ = compare(tuple(ref_leaves), tuple(got_t), None)
        if any(m.error != float("inf") for m in mism):  # the floor exceeded: widen (verify)
            out64 = refs.out64(i)
            ref64 = None if out64 is None else tuple(
                t for t in pytree.tree_leaves(out64) if isinstance(t, torch.Tensor))
            mism, w, _, _ = compare(tuple(ref_leaves), tuple(got_t), ref64)
        if mism:
            hint = ("; fresh draws are random values in the example's range: if such inputs "
                    "are not valid for the model (attention masks with leading zeros, say), "
                    "the plain export may differ there too; pass verify_inputs=[...] with "
                    "valid ones") if run.fresh else ""
            raise VerificationError(f"onnxruntime vs original ({run.label}): "
                                    f"{mism[0].output}: {mism[0].message}{hint}")
        worst = max(worst, w)
    if skipped and not fresh_done:
        raise VerificationError(no_draw_left(skipped))
    return worst


__all__ = ["lower", "export", "report_of", "onnx_export", "ort_compare", "tempfile"]
