"""The `fxlower` command line: check, lower, report, demo. It only calls down into the API.

    fxlower check FILE.onnx [FILE ...] [--target NAME] [--forbid OP,...] [--allow OP,...]
    fxlower targets                       the target profiles: source, date, what each forbids
    fxlower lower SPEC -o OUT.onnx        SPEC = path/to/file.py:factory | package.module:factory
                                          [--report-json FILE] [--quiet]
    fxlower lower IN.onnx -o OUT.onnx     an ONNX file: its gather/scatter nodes replaced in place
                                          [--input-shape NAME=D0,D1,...] [--verify-inputs F.npz]
    fxlower report SPEC|IN.onnx           what would be rewritten, what not and why
                                          [--format text|json]
    fxlower demo                          in a checkout: lower the zoo (models/), print a table

A factory takes no arguments and returns (model, example_inputs) or
(model, example_inputs, example_kwargs).
Exit codes: 0 ok, 1 forbidden ops / lowering or verification failed, 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import FxlowerError
from .spec import load_spec

__all__ = ["build_parser", "load_spec", "main"]


def _cmd_check(args: argparse.Namespace) -> int:
    from .check import check_file
    from .opnames import parse_op_list
    from .targets import get_target

    try:
        forbid = parse_op_list(args.forbid) if args.forbid else None
        allow = parse_op_list(args.allow) if args.allow else None
    except ValueError as e:
        raise FxlowerError(f"bad op list: {e}") from e
    target = None
    if args.target is not None:
        try:
            target = get_target(args.target)
        except FxlowerError as e:  # an unknown name is a usage error (exit 2)
            raise FxlowerError(str(e)) from e
    status = 0
    verdicts = []
    for f in args.files:
        try:
            result = check_file(f, forbid=forbid, allow=allow, target=target)
        except FxlowerError as e:
            if args.format == "text":
                raise
            status = 2
            verdicts.append({"file": f, "ok": False, "error": str(e)})
            if args.format == "github":
                print(f"::error file={_gh(f, prop=True)},title=fxlower check::{_gh(str(e))}")
            continue
        if not result.ok:
            status = max(status, 1)
        if args.format == "text":
            print(result.format())
        elif args.format == "github":
            for v in result.violations:
                print(f"::error file={_gh(f, prop=True)},title=fxlower check::{_gh(v.format())}")
        verdicts.append(result.to_dict())
    if args.format == "json":
        import json

        print(json.dumps({"schema": "fxlower-check/1", "ok": status == 0,
                          "results": verdicts}, indent=2))
    return status


def _gh(text: str, prop: bool = False) -> str:
    """A GitHub Actions workflow-command value: %, CR and LF escaped; in a property (the
    file) also , and :."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(",", "%2C").replace(":", "%3A") if prop else text


def _cmd_targets(args: argparse.Namespace) -> int:
    from .targets import DEFAULT_TARGET, aliases, load_profiles

    profiles = load_profiles()
    newest = {v: k for k, v in aliases(profiles).items()}
    for i, (name, target) in enumerate(sorted(profiles.items())):
        if i:
            print()
        text = target.describe()
        tags = (["default"] if name == DEFAULT_TARGET else []) + (
            [f"also '{newest[name]}', the newest version"] if name in newest else [])
        if tags:
            first, _, rest = text.partition("\n")
            text = f"{first}  [{'; '.join(tags)}]\n{rest}"
        print(text)
    return 0


def _verbose(args: argparse.Namespace) -> bool | None:
    """Progress on stderr: on a terminal unless -q (fxlower.progress)."""
    return False if args.quiet else None


def _lower_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"assume_finite": args.assume_finite, "merge": args.merge, "embedding": args.embedding,
            "verbose": _verbose(args)}


def _is_onnx(spec: str) -> bool:
    return spec.endswith(".onnx") or (Path(spec).is_file() and not spec.endswith(".py"))


def _lower_onnx(args: argparse.Namespace) -> tuple[Any, Any]:
    import numpy as np

    from .errors import LoweringError
    from .onnx_lower import lower_onnx, parse_input_shapes

    runs = None
    if getattr(args, "verify_inputs", None):
        runs = []
        for f in args.verify_inputs:
            try:
                with np.load(f) as data:
                    runs.append({k: data[k] for k in data.files})
            except (OSError, ValueError) as e:
                raise FxlowerError(f"--verify-inputs {f}: cannot read it as .npz: {e}") from e
    from . import progress

    try:
        with progress.session(_verbose(args)):
            return lower_onnx(args.spec, target=args.target, input_shapes=parse_input_shapes(
                args.input_shape or []), assume_finite=args.assume_finite,
                verify=not args.no_verify, verify_inputs=runs)
    except FxlowerError:
        raise
    except Exception as e:  # one line, never a traceback: a file fxlower did not foresee
        first = (str(e).strip().splitlines() or [""])[0]
        raise LoweringError(f"{args.spec}: lowering failed: {type(e).__name__}: {first} "
                            "(please report it with the file)") from e


def _cmd_lower_onnx(args: argparse.Namespace) -> int:
    from .check import check_model
    from .errors import LoweringError
    from .onnx_lower import save

    model, report = _lower_onnx(args)
    print(report.format())
    _write_report_json(args, report)
    result = check_model(model, target=args.target)
    if not result.ok and args.on_forbidden == "raise":
        raise LoweringError(f"{args.spec}: forbidden ops would remain, nothing written "
                            f"(--on-forbidden warn writes it): " + "; ".join(report.remaining))
    out = Path(args.output)
    save(model, out, external=report.external_data, data_dir=report.data_dir)
    print(f"wrote {out}" + (f" (tensors in {out.name}.data)" if (
        out.parent / f"{out.name}.data").exists() and report.external_data else ""))
    return 0 if result.ok else 1


def _cmd_lower(args: argparse.Namespace) -> int:
    from .api import export

    if _is_onnx(args.spec):
        return _cmd_lower_onnx(args)
    model, inputs, kwargs = load_spec(args.spec)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = export(model, inputs, out, example_kwargs=kwargs, verify=not args.no_verify,
                    target=args.target, on_forbidden=args.on_forbidden, **_lower_kwargs(args))
    print(report.format())
    _write_report_json(args, report)
    print(f"wrote {out}")
    return 1 if report.onnx.get("forbidden") else 0  # --on-forbidden warn: written, not clean


def _cmd_report(args: argparse.Namespace) -> int:
    from .api import lower, report_of

    if _is_onnx(args.spec):
        _print_report(args, _lower_onnx(args)[1])
        return 0
    model, inputs, kwargs = load_spec(args.spec)
    lowered = lower(model, inputs, example_kwargs=kwargs, on_forbidden="warn",
                    verify=not args.no_verify,
                    target=args.target, **_lower_kwargs(args))
    _print_report(args, report_of(lowered))
    return 0


def _json(report: Any) -> str:
    """A report's data (schema fxlower-report/1) as JSON text."""
    import json

    return json.dumps(report.to_dict(), indent=2)


def _print_report(args: argparse.Namespace, report: Any) -> None:
    print(_json(report) if args.format == "json" else report.format())


def _write_report_json(args: argparse.Namespace, report: Any) -> None:
    """--report-json FILE: the report's data written to FILE."""
    if args.report_json:
        Path(args.report_json).write_text(_json(report) + "\n")


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main(args.models, out_dir=Path(args.out), full=args.full)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fxlower", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser(
        "check", help="fail when an ONNX file holds a forbidden op",
        description="Check ONNX files against a target profile (default: generic, which forbids "
        "the Gather and Scatter families). Without --target, --forbid replaces the default "
        "list and --allow switches to allow-list mode. With --target, they adjust the profile: "
        "--forbid adds ops to what it forbids, --allow lifts ops from what it forbids and adds "
        "them to its allow list (if it has one); an op in both flags is forbidden.",
    )
    c.add_argument("files", nargs="+", metavar="FILE.onnx")
    c.add_argument("--target", metavar="NAME",
                   help="check against a target profile (see `fxlower targets`): its "
                        "forbidden ops, its allow list, and int64 tensors if it has no int64")
    c.add_argument("--forbid", help="comma-separated op types (default: the Gather and Scatter "
                                    "families; with --target: forbidden on top of the profile)")
    c.add_argument("--allow", help="comma-separated op types: every other op is a violation "
                                   "(with --target: allowed on top of the profile)")
    c.add_argument("--format", choices=["text", "json", "github"], default="text",
                   help="json: one machine-readable verdict (schema fxlower-check/1: per file "
                   "the target, node count, op counts and violations with node, op, subgraph "
                   "path, reason and condition); github: a workflow annotation per violation")
    c.set_defaults(func=_cmd_check)

    t = sub.add_parser("targets", help="list the target profiles: source, date, what each forbids")
    t.set_defaults(func=_cmd_targets)

    for name, func, helptext in (
        ("lower", _cmd_lower, "lower, export to ONNX, check and compare in onnxruntime"),
        ("report", _cmd_report, "what would be rewritten, what not and why"),
    ):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("spec", metavar="SPEC", help="path/to/file.py:factory, "
                       "package.module:factory, or an ONNX file (IN.onnx)")
        if name == "lower":
            s.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
            s.add_argument("--on-forbidden", choices=["raise", "warn"], default="raise",
                           help="warn: write the file although forbidden ops remain (they "
                           "are listed, and the exit status is 1)")
            s.add_argument("--report-json", metavar="FILE",
                           help="also write the report as JSON (schema fxlower-report/1: "
                           "rewrites with node, pass and cost; skipped with reasons; "
                           "remaining forbidden ops; verification; timings)")
        else:
            s.add_argument("--format", choices=["text", "json"], default="text",
                           help="json: the report as data (schema fxlower-report/1, the "
                           "package's report.schema.json)")
        s.add_argument("-q", "--quiet", action="store_true",
                       help="no progress on stderr (shown only on a terminal, for stages "
                       "over a second)")
        s.add_argument("--no-verify", action="store_true", help="skip the numerical verification")
        s.add_argument("--target", metavar="NAME", help="a target profile (see `fxlower targets`): "
                       "lower only what it lacks")
        s.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                       help="ONNX input: bind an input's symbolic dims (repeat per input)")
        s.add_argument("--verify-inputs", action="append", metavar="FILE.npz",
                       help="ONNX input: verify on these inputs (arrays named after the "
                       "model's inputs; repeat for more runs) instead of fresh draws")
        s.add_argument("--assume-finite", action="store_true",
                       help="float sources hold no NaN/inf/-0.0 (cheaper mask products)")
        s.add_argument("--merge", choices=["auto", "always", "never"], default="auto")
        s.add_argument("--embedding", choices=["matmul", "host"], default="matmul",
                       help="host: table lookups run on the host and the device graph takes "
                       "the rows as inputs (written beside OUT.onnx as OUT.host.onnx)")
        s.set_defaults(func=func)

    d = sub.add_parser("demo", help="in a checkout: lower the zoo's models (models/) and print "
                       "the report table")
    d.add_argument("models", nargs="*", help="zoo names (default: all small ones)")
    d.add_argument("--out", default="build", help="output folder (default: build)")
    d.add_argument("--full", action="store_true", help="also the full-size BERT-base and ViT-B/16")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", module="torch")
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation chatter
    try:
        return int(args.func(args))
    except FxlowerError as e:
        from .errors import OnnxCheckError

        print(f"fxlower {args.cmd}: error: {e}", file=sys.stderr)
        usage_like = isinstance(e, OnnxCheckError) or type(e) is FxlowerError
        return 2 if usage_like else 1


if __name__ == "__main__":
    sys.exit(main())
