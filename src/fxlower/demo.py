"""`fxlower demo` / `make demo`: lower every model of the zoo, write build/<model>.onnx and a
report table (terminal and build/report.md). A checkout command: the zoo is the repository's
models/ folder, which is not installed with the package; elsewhere it fails with exit status 2.

Per model: Gather-family ONNX nodes before -> after (both files exported in this run),
each rewrite's count, convolutions merged, max verification error, lowering time, and
onnxruntime latency of the original and the lowered file (median of interleaved runs).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from .api import export, onnx_export
from .call import keyword_view
from .check import check_file
from .errors import FxlowerError
from .spec import load_spec
from .verify import draw_like

GATHER_FAMILY = ("Gather", "GatherElements", "GatherND")


def _zoo(full: bool) -> dict[str, str]:
    """The repository's model zoo (models/ in a checkout: it is not installed with fxlower)."""
    root = Path.cwd()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        import models  # the repository's models/ folder

        zoo: dict[str, str] = dict(models.ZOO)
        names = list(models.SMALL)
        if full:
            names += [n for n in getattr(models, "FULL", []) if n not in names]
    except (ImportError, AttributeError):
        raise FxlowerError(
            "the demo lowers the model zoo of a fxlower checkout (its models/ folder, which is "
            "not installed with the package): run `fxlower demo` or `make demo` from the root "
            f"of a checkout ({root} has no models/ zoo)"
        ) from None
    return {n: zoo[n] for n in names}


def _ort_latency(paths: list[Path], feeds: list[dict[str, Any]], rounds: int = 20) -> list[float]:
    """Median seconds per run of each file, runs interleaved so noise hits all alike."""
    import onnxruntime as ort

    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in paths]
    times: list[list[float]] = [[] for _ in paths]
    for s, f in zip(sessions, feeds, strict=True):
        for _ in range(3):
            s.run(None, f)
    for _ in range(rounds):
        for i, (s, f) in enumerate(zip(sessions, feeds, strict=True)):
            t0 = time.perf_counter()
            s.run(None, f)
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def _feed(path: Path, inputs: tuple[Any, ...]) -> dict[str, Any]:
    import onnxruntime as ort

    names = [i.name for i in ort.InferenceSession(str(path)).get_inputs()]
    tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
    return {n: t.numpy() for n, t in zip(names, tensors, strict=False)}


def _gathers(counts: dict[str, int]) -> int:
    return sum(counts.get(k, 0) for k in GATHER_FAMILY)


def run_one(name: str, spec: str, out_dir: Path) -> dict[str, Any]:
    model, inputs, kwargs = load_spec(spec)
    if kwargs is not None:  # keyword inputs: the model's positional view (fxlower.call)
        model, inputs, _ = keyword_view(model, inputs, kwargs)
    row: dict[str, Any] = {"model": name}
    orig_path = out_dir / f"{name}.original.onnx"
    onnx_export(model, inputs, orig_path)
    before = check_file(orig_path)
    row["gathers_before"] = _gathers(before.op_counts)
    path = out_dir / f"{name}.onnx"
    t0 = time.perf_counter()
    report = export(model, inputs, path)
    row["seconds"] = time.perf_counter() - t0
    after = check_file(path)
    row["gathers_after"] = _gathers(after.op_counts)
    row["rewrites"] = report.counts()
    row["convs_merged"] = sum(1 for a in report.applied if a.pass_name.startswith("merge_conv"))
    row["max_err"] = report.verification.get("max_abs_error", float("nan"))
    row["ort_err"] = report.onnx.get("ort_max_abs_error", float("nan"))
    fresh = draw_like(inputs, 7)
    lat = _ort_latency([orig_path, path], [_feed(orig_path, fresh), _feed(path, fresh)])
    row["ms_original"], row["ms_lowered"] = lat[0] * 1e3, lat[1] * 1e3
    row["skipped"] = len(report.skipped)
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    head = ("| model | Gather-family before → after | rewrites | convs merged | "
            "max verify err | ORT err | lower+export s | ORT ms original | ORT ms lowered | ratio |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | FAILED: {r['error']} |||||||||")
            continue
        rw = ", ".join(f"{k} {v}" for k, v in sorted(r["rewrites"].items())) or "none"
        lines.append(
            f"| {r['model']} | {r['gathers_before']} → {r['gathers_after']} | {rw} | "
            f"{r['convs_merged']} | {r['max_err']:.2g} | {r['ort_err']:.2g} | "
            f"{r['seconds']:.1f} | {r['ms_original']:.3f} | {r['ms_lowered']:.3f} | "
            f"{r['ms_lowered'] / r['ms_original']:.2f} |"
        )
    return "\n".join(lines)


def machine() -> str:
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")


def main(names: list[str], *, out_dir: Path, full: bool = False) -> int:
    zoo = _zoo(full)
    if names:
        unknown = [n for n in names if n not in zoo]
        if unknown:
            print(f"fxlower demo: unknown models {unknown}; known: {sorted(zoo)}", file=sys.stderr)
            return 2
        zoo = {n: zoo[n] for n in names}
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    rows: list[dict[str, Any]] = []
    status = 0
    for i, (name, spec) in enumerate(zoo.items(), 1):
        print(f"[{i}/{len(zoo)}] {name} ...", end=" ", flush=True)
        t0 = time.perf_counter()
        try:
            row = run_one(name, spec, out_dir)
            print(f"ok ({time.perf_counter() - t0:.1f}s, Gather-family "
                  f"{row['gathers_before']} -> {row['gathers_after']})", flush=True)
        except Exception as e:  # noqa: BLE001 - one failing model must not hide the others
            status = 1
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            row = {"model": name, "error": f"{type(e).__name__}: {msg[:200]}"}
            print(f"FAILED: {row['error']}", flush=True)
            if os.environ.get("FXLOWER_DEBUG"):
                traceback.print_exc()
        rows.append(row)
    table = format_table(rows)
    text = (f"# fxlower demo report\n\nMachine: {machine()}\n\n{table}\n\n"
            "ORT ms: median of 20 interleaved onnxruntime runs on the same fresh inputs.\n")
    (out_dir / "report.md").write_text(text)
    print()
    print(table)
    print(f"\nwrote {out_dir / 'report.md'} and {len(rows)} ONNX files in {out_dir}/")
    return status
