"""`make corpus`: every model of the corpus (models/corpus/) through the user's path, against
the plain export of the same model in the same run.

For each entry, in a fresh process of its own (a failure or a leak stays there):
1. the plain export, `torch.onnx.export(model, inputs, dynamo=True)`: its Gather/Scatter-
   family nodes, its size, and onnxruntime's error against the PyTorch model;
2. `fxlower.export(model, inputs, path, on_forbidden="warn", verify_inputs=more)`: lower,
   verify, export, check, compare in onnxruntime; the same figures for its file. `more` are
   two more inputs made like the example (models.corpus.input_draws: masks padded at the
   end, as tokenizers make them), the inputs every comparison here runs on;
3. onnxruntime latency of both files, interleaved rounds on the same fresh inputs (median).

The rules of issue 12, checked per model (a row that breaks one is a failure, and the
command exits 1): `lower` succeeds and its file exports; the file passes `fxlower check`;
`lower`'s own report (its census, before export adds what the file holds) says clean exactly
when the file is;
onnxruntime's error is within 4x the plain export's own error (plus the verification floor,
8 eps x the output's scale, for outputs the plain export gets bit-exact); the file is at
most 1.25x the plain export's size + 256 KB.

    python tools/corpus.py [NAME ...] [--rounds 20] [--out build]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FAMILY = ("Gather", "GatherElements", "GatherND", "Scatter", "ScatterElements", "ScatterND")
SIZE_FACTOR, SIZE_SLACK = 1.25, 256 * 1024
ERROR_FACTOR = 4.0


def _short(e: BaseException) -> str:
    """The innermost cause's first line: what a user needs to know."""
    while e.__cause__ is not None:
        e = e.__cause__
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first}"[:300]


def _family(op_counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in sorted(op_counts.items()) if k in FAMILY}


def _ort_runs(refs: Any, path: str) -> tuple[float, float, Any]:
    """(max abs error, output scale, session) of an ONNX file against the PyTorch model on
    `refs` (a fxlower.verify.References: the example inputs and the inputs `fxlower.export`
    verifies on; the original runs once per input for both files)."""
    import onnxruntime as ort
    import torch
    from torch.utils import _pytree as pytree

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    err, scale = 0.0, 0.0
    for i, run in enumerate(refs.runs):
        ref = refs.out(i)[0]
        if ref is None:
            continue
        leaves = [t for t in pytree.tree_leaves(run.inputs) if isinstance(t, torch.Tensor)]
        got = sess.run(None, {n: t.numpy() for n, t in zip(names, leaves, strict=False)})
        want = [t for t in pytree.tree_leaves(ref) if isinstance(t, torch.Tensor)]
        for a, b in zip(want, got, strict=False):
            b = torch.from_numpy(b)
            if not a.is_floating_point():
                err = max(err, 0.0 if torch.equal(a, b.to(a.dtype)) else float("inf"))
                continue
            fin = a.isfinite()
            if fin.any():
                err = max(err, (a[fin].double() - b[fin].double()).abs().max().item())
                scale = max(scale, a[fin].abs().max().item())
    return err, scale, sess


def _latency(sessions: list[Any], inputs: tuple[Any, ...], rounds: int) -> list[float]:
    """Median ms per session over `rounds` interleaved rounds on the same inputs."""
    import torch
    from torch.utils import _pytree as pytree

    leaves = [t.numpy() for t in pytree.tree_leaves(inputs) if isinstance(t, torch.Tensor)]
    feeds = [{i.name: v for i, v in zip(s.get_inputs(), leaves, strict=False)} for s in sessions]
    times: list[list[float]] = [[] for _ in sessions]
    for s, f in zip(sessions, feeds, strict=True):  # warm-up
        s.run(None, f)
    for _ in range(rounds):
        for k, (s, f) in enumerate(zip(sessions, feeds, strict=True)):
            t0 = time.perf_counter()
            s.run(None, f)
            times[k].append((time.perf_counter() - t0) * 1000)
    return [statistics.median(t) for t in times]


def run_one(name: str, rounds: int = 20) -> dict[str, Any]:
    """One corpus entry through the plain export and fxlower.export; the row of the table."""
    import torch

    import fxlower
    import models
    from fxlower.api import onnx_export
    from fxlower.check import check_file
    from fxlower.verify import References
    from models.corpus import input_draws, load

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    row: dict[str, Any] = {"name": name}
    if name.startswith("zoo:"):  # a zoo entry: fxlower's own fresh draws
        model, inputs = models.load(name[4:])
        more = None
    else:
        model, inputs = load(name)
        more = input_draws(model, 2)
    with tempfile.TemporaryDirectory() as d:
        plain, low = os.path.join(d, "plain.onnx"), os.path.join(d, "lowered.onnx")
        t0 = time.perf_counter()
        try:
            onnx_export(model, inputs, plain)
        except Exception as e:  # noqa: BLE001 - recorded; the baseline below replaces it
            row["plain_error"] = _short(e)
            # The baseline of a model whose plain export fails (ORIGINAL_EXPORT_FAILS): the
            # same export of a copy whose parameters do not require grad, which the
            # exporter's bug does not reach; fxlower must export the model as it is.
            frozen = copy.deepcopy(model).requires_grad_(False)
            try:
                onnx_export(frozen, inputs, plain)
            except Exception as e2:  # noqa: BLE001 - no baseline at all: the row fails
                row["baseline_error"] = _short(e2)
                return judge(row)
            row["baseline"] = "plain export of a copy with requires_grad_(False)"
        row["plain_s"] = time.perf_counter() - t0
        row["plain_bytes"] = os.path.getsize(plain)
        row["before"] = _family(check_file(plain).op_counts)
        # the runs fxlower.export compares on (same draws), the original run once per input
        refs = References(model, inputs, draws=2, draw_seed=1000, verify_inputs=more)
        plain_err, scale, plain_sess = _ort_runs(refs, plain)
        row["plain_ort_err"], row["scale"] = plain_err, scale
        t0 = time.perf_counter()
        try:
            report = fxlower.export(model, inputs, low, on_forbidden="warn",
                                    verify_inputs=more)
        except Exception as e:  # noqa: BLE001 - the failure is the row's finding
            row["lower_error"] = _short(e)
            row["trace"] = traceback.format_exc(limit=-3)[-1500:]
            return judge(row)
        row["lower_export_s"] = time.perf_counter() - t0
        row["lower_s"] = sum(v for k, v in report.seconds.items() if k != "export")
        row["bytes"] = os.path.getsize(low)
        row["after"] = _family(report.onnx["op_counts"])
        row["check_ok"] = report.onnx["forbidden"] == 0
        row["report_clean"] = not report.remaining
        # what `lower` alone claimed, before export added the file's own findings
        row["census_clean"] = not [r for r in report.remaining
                                   if not r.endswith("of the exported file")]
        row["remaining"] = report.remaining
        row["rewrites"] = report.counts()
        row["capture"] = report.capture
        err, _, low_sess = _ort_runs(refs, low)
        row["ort_err"] = err
        if rounds:
            row["plain_ms"], row["ms"] = _latency([plain_sess, low_sess], inputs, rounds)
    return judge(row)


def judge(row: dict[str, Any]) -> dict[str, Any]:
    """The failed rules of a finished row, in `row["failed"]` (empty: all hold)."""
    failed = []
    if "baseline_error" in row:
        failed.append(f"no plain export to compare with: {row['plain_error']}")
    elif "lower_error" in row:
        failed.append(f"fxlower.export fails: {row['lower_error']}")
    else:
        if not row["check_ok"]:
            failed.append(f"file keeps {row['after']}")
        if row.get("census_clean", row["report_clean"]) != row["check_ok"] \
                or row["report_clean"] != row["check_ok"]:
            failed.append("lower's report and the file disagree on what remains")
        floor = 8 * 1.1920929e-07 * row["scale"]
        if row["ort_err"] > ERROR_FACTOR * row["plain_ort_err"] + floor:
            failed.append(f"onnxruntime error {row['ort_err']:.3g} > {ERROR_FACTOR:g}x the plain "
                          f"export's {row['plain_ort_err']:.3g}")
        if row["bytes"] > SIZE_FACTOR * row["plain_bytes"] + SIZE_SLACK:
            failed.append(f"file {row['bytes']:,} B > {SIZE_FACTOR}x plain "
                          f"{row['plain_bytes']:,} B + 256 KB")
    row["failed"] = failed
    return row


def _fmt_counts(c: dict[str, int] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in c.items()) if c else "0"


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| model | gather/scatter before → after | rewrites | ORT err (plain → lowered) "
            "| size KB (plain → lowered) | ORT ms (plain → lowered) | ratio | lower s | verdict |\n"
            "|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        if "bytes" not in r:
            lines.append(f"| {r['name']} | | | | | | | | **fails**: {'; '.join(r['failed'])} |")
            continue
        rw = ", ".join(f"{k} {v}" for k, v in sorted(r["rewrites"].items())) or "none"
        ms = (f"{r['plain_ms']:.3f} → {r['ms']:.3f}", f"{r['ms'] / r['plain_ms']:.2f}") \
            if "ms" in r else ("", "")
        verdict = "ok" if not r["failed"] else "**" + "; ".join(r["failed"]) + "**"
        name = r["name"] + (" ‡" if "plain_error" in r else "")
        lines.append(
            f"| {name} | {_fmt_counts(r['before'])} → {_fmt_counts(r['after'])} | {rw} "
            f"| {r['plain_ort_err']:.2g} → {r['ort_err']:.2g} "
            f"| {r['plain_bytes'] / 1024:,.0f} → {r['bytes'] / 1024:,.0f} | {ms[0]} | {ms[1]} "
            f"| {r['lower_s']:.1f} | {verdict} |")
    if any("plain_error" in r for r in rows):
        lines.append("\n‡ the plain export of the original fails (" + next(
            r["plain_error"] for r in rows if "plain_error" in r) + "); its columns show the "
            "plain export of a copy with requires_grad_(False).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", help="corpus entries (default: all)")
    p.add_argument("--zoo", action="store_true",
                   help="the zoo's small entries (models/) instead, as zoo:<name>")
    p.add_argument("--rounds", type=int, default=20, help="latency rounds per file")
    p.add_argument("--out", default="build", help="where corpus.md / corpus.json go")
    p.add_argument("--timeout", type=int, default=600, help="seconds per model")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: one entry, JSON on stdout
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.rounds), default=str))
        return 0
    import models
    from models.corpus import CORPUS

    names = args.names or ([f"zoo:{n}" for n in models.SMALL] if args.zoo else list(CORPUS))
    rows = []
    for name in names:
        t0 = time.perf_counter()
        try:
            out = subprocess.run(
                [sys.executable, __file__, "--one", name, "--rounds", str(args.rounds)],
                capture_output=True, text=True, timeout=args.timeout, cwd=ROOT)
            last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
            row = json.loads(last) if last.startswith("{") else judge(
                {"name": name, "lower_error": (out.stderr.strip().splitlines() or ["died"])[-1]})
        except subprocess.TimeoutExpired:
            row = judge({"name": name, "lower_error": f"timed out after {args.timeout} s"})
        rows.append(row)
        print(f"{name}: {'ok' if not row['failed'] else '; '.join(row['failed'])} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    out_dir = ROOT / args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "corpus.json").write_text(json.dumps(rows, indent=1, default=str))
    md = table(rows)
    (out_dir / "corpus.md").write_text(md + "\n")
    print(md)
    bad = [r["name"] for r in rows if r["failed"]]
    print(f"{len(rows) - len(bad)} of {len(rows)} models hold every rule"
          + (f"; failing: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
