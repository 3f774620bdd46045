"""The README's per-target table (`make targets-table`): each zoo model through
`fxlower.export(model, inputs, path, target=T)` for every packaged profile, and the written
file re-checked by `fxlower check --target T` in a fresh process (the CI gate as users run
it). A cell is `ok` when that check passes; otherwise the first line of what fxlower said
(what the target lacks, or why no exact formulation exists there). `--corpus` makes the same
table for the corpus of real transformers architectures (models/corpus/, `make
targets-corpus`).

Each (model, target) cell runs in a fresh process of its own (`--cell MODEL TARGET`, which
prints the cell as one JSON line), `--jobs` at a time, each stopped after `--timeout` s.
That process computes the cell with `cell`, the one function that does; tests/test_target_zoo.py
calls the same `cell` in-process and compares it with the README's table, read back by
`read_tables` (the inverse of `table_lines`, which writes it).

    python tools/target_table.py [MODEL ...] [--corpus] [--jobs N] [--timeout S] [--out FILE]

A MODEL is looked up among the zoo's names first, then the corpus's.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Collection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ["mae", "bert_embedding", "topk_attention", "hf_bert", "hf_vit", "hf_resnet"]

# The footnote of a corpus row whose plain export fails (models.corpus.ORIGINAL_EXPORT_FAILS).
MARK = "‡"


def _load(name: str) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """A model by name: the zoo's entry of that name, else the corpus's, with the keywords
    `export` gets: a corpus model is verified on inputs made like its example
    (`verify_inputs`, as `make corpus` does: masks padded at the end, as tokenizers pad),
    not on fresh random draws, whose masks no tokenizer makes."""
    import models
    import models.corpus

    if name in models.ZOO:
        model, inputs = models.load(name)
        return model, inputs, {}
    model, inputs = models.corpus.load(name)
    return model, inputs, {"verify_inputs": models.corpus.input_draws(model)}


def cell_path(folder: Path, name: str, target: str) -> Path:
    """Where `cell` writes the ONNX file of (name, target) in `folder`."""
    return folder / f"{name}.{target}.onnx"


def cell(name: str, target: str, folder: Path) -> str:
    """The verdict of one (model, target) cell, as the table shows it: `fxlower.export` of
    the model with `target=target` into `cell_path(folder, name, target)`, then `fxlower
    check --target` on that file in a fresh process (the CI gate as users run it). `ok` when
    the check passes; otherwise what fxlower said, summarised (`_summary`), or the error of
    the check. Runs in the calling process: `--cell` runs it in a fresh one per cell, and
    tests/test_target_zoo.py runs it in pytest's."""
    import fxlower

    path = cell_path(folder, name, target)
    try:
        model, inputs, kw = _load(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fxlower.export(model, inputs, path, target=target, **kw)
    except fxlower.FxlowerError as e:
        return _summary(str(e))
    except Exception as e:  # noqa: BLE001 - not fxlower's own error: shown as it is
        return _short(f"{type(e).__name__}: {_first_line(e)}")
    r = subprocess.run([sys.executable, "-m", "fxlower", "check", str(path), "--target", target],
                       capture_output=True, text=True)
    if r.returncode == 0:
        return "ok"
    lines = (r.stdout or r.stderr).strip().splitlines()
    return "check fails: " + _short(lines[-1] if lines else f"exit status {r.returncode}")


def _summary(text: str) -> str:
    """What a cell says of a failure: the ops (or int64 tensors) the file still holds, or
    the op a rewrite kept and the reason given for that very node; when the lowered module
    does not export, whether the plain export of the original fails too (the exporter's
    limit, before fxlower) and the exporter's error."""
    import re

    if text.startswith("the exported ONNX file still has forbidden ops"):
        ops = sorted(set(re.findall(r"\bop ([\w:]+) \(", text)))
        parts = (["lacks " + ", ".join(ops)] if ops else []) + (
            ["int64 tensors"] if "int64 tensor" in text else []) + (
            ["a condition broken"] if "breaks a condition" in text else [])
        return "; ".join(parts) or "file check fails"
    failed = re.match(r"torch\.onnx\.export failed on the lowered module[^:]*: (.*?); "
                      r"the original model (does not export either|exports)", text, re.S)
    if failed:
        cause, original = failed.groups()
        if original == "exports":
            return _short(f"lowered module does not export ({cause})")
        return _short(f"plain export fails ({cause})")
    head, _, skipped = text.partition(" (skipped: ")
    kept = re.findall(r"(?:^|; |: )([^;:]+?) \(exports to ([\w, ]+)\)", head)
    reasons = dict(p.split(": ", 1) for p in skipped.rstrip(")").split("; ") if ": " in p)
    if kept:
        origin, ops = kept[0]
        why = reasons.get(origin.strip())
        return _short(f"keeps {ops} ({origin.strip()}{': ' + why if why else ''})")
    return _short(text.splitlines()[0])


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else ""


def _short(text: str, width: int = 130) -> str:
    text = text.replace("|", "/")
    return text if len(text) <= width else text[: width - 1] + "…"


def _run_cell(name: str, target: str, folder: Path) -> int:
    """`--cell`: one cell in this process, printed as the last line of stdout (JSON)."""
    t0 = time.perf_counter()
    text = cell(name, target, folder)
    print(json.dumps({"model": name, "target": target, "cell": text,
                      "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    return 0


class _Cells:
    """Runs cells in fresh processes, each in a process group of its own so that a timeout
    (or Ctrl-C) stops the cell and the `fxlower check` it may have started."""

    def __init__(self, folder: Path, timeout: float) -> None:
        self.folder, self.timeout = folder, timeout
        self.live: set[subprocess.Popen[str]] = set()
        self.lock = threading.Lock()
        self.stopped = False

    def run(self, name: str, target: str) -> tuple[str, float]:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--cell", name, target,
               "--dir", str(self.folder)]
        t0 = time.perf_counter()
        with self.lock:
            if self.stopped:
                return "not run (stopped)", 0.0
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, start_new_session=True)
            self.live.add(p)
        try:
            out, err = p.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._kill(p)
            p.communicate()
            return f"timeout after {self.timeout:g} s", time.perf_counter() - t0
        finally:
            with self.lock:
                self.live.discard(p)
        seconds = time.perf_counter() - t0
        for line in reversed(out.strip().splitlines()):
            if line.startswith("{"):
                try:
                    return str(json.loads(line)["cell"]), seconds
                except (ValueError, KeyError):
                    break
        last = (err.strip().splitlines() or [""])[-1]
        return _short(f"cell process failed (exit status {p.returncode}): {last}"), seconds

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            for p in list(self.live):
                self._kill(p)

    @staticmethod
    def _kill(p: subprocess.Popen[str]) -> None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def table_lines(names: list[str], targets: list[str], results: dict[tuple[str, str], str],
                marks: Collection[str] = ()) -> list[str]:
    """The table in Markdown: a row per model (`MARK` after a name in `marks`), a column per
    target, each cell `results[model, target]`."""
    lines = ["| model | " + " | ".join(targets) + " |",
             "|" + " --- |" * (len(targets) + 1)]
    lines += [f"| {f'{n} {MARK}' if n in marks else n} | "
              + " | ".join(results[n, t] for t in targets) + " |" for n in names]
    return lines


def read_tables(text: str, targets: list[str]) -> dict[str, dict[str, str]]:
    """Every row of every table in `text` (a README) laid out as `table_lines` lays one out
    for `targets` (a header of exactly `model` and those targets, in that order): the model
    name (without `MARK`) -> target -> cell text. A model in two such tables must have the
    same cells in both; a row with a cell too many or too few is an error."""
    header = ["model", *targets]
    rows: dict[str, dict[str, str]] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if _cells(lines[i]) != header:
            i += 1
            continue
        i += 2  # the header and the --- line
        while i < len(lines) and lines[i].startswith("|"):
            name, *cells = _cells(lines[i])
            if len(cells) != len(targets):
                raise ValueError(f"line {i + 1}: {len(cells)} cells for {len(targets)} "
                                 f"targets: {lines[i]}")
            name = name.removesuffix(f" {MARK}")
            row = dict(zip(targets, cells, strict=True))
            if rows.setdefault(name, row) != row:
                raise ValueError(f"line {i + 1}: {name} has other cells in an earlier table")
            i += 1
    return rows


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table line (no cell holds `|`: `_short` makes it `/`)."""
    line = line.strip()
    if not (line.startswith("|") and line.endswith("|")):
        return []
    return [c.strip() for c in line[1:-1].split("|")]


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def main(argv: list[str] | None = None) -> int:
    import models
    from models.corpus import CORPUS, ORIGINAL_EXPORT_FAILS

    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("models", nargs="*",
                   help=f"zoo or corpus names (default: {', '.join(MODELS)})")
    p.add_argument("--corpus", action="store_true",
                   help="every model of the corpus (models/corpus/)")
    p.add_argument("--jobs", type=int, default=2, help="cells run at once (default 2)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds a cell may take (default 600)")
    p.add_argument("--out", type=Path, help="write the table to FILE too, under a line "
                   "naming the date, the torch/transformers versions and the command")
    p.add_argument("--cell", nargs=2, metavar=("MODEL", "TARGET"), help=argparse.SUPPRESS)
    p.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.cell:
        if args.dir is not None:
            return _run_cell(args.cell[0], args.cell[1], args.dir)
        with tempfile.TemporaryDirectory() as d:
            return _run_cell(args.cell[0], args.cell[1], Path(d))
    if args.corpus and args.models:
        p.error("give model names or --corpus, not both")
    if args.jobs < 1:
        p.error("--jobs must be at least 1")
    names = list(CORPUS) if args.corpus else args.models or MODELS
    unknown = [n for n in names if n not in models.ZOO and n not in CORPUS]
    if unknown:
        p.error(f"not a zoo or corpus model: {', '.join(unknown)}")

    from fxlower.targets import load_profiles

    targets = sorted(load_profiles())
    results: dict[tuple[str, str], str] = {}
    with tempfile.TemporaryDirectory() as d, \
            concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        cells = _Cells(Path(d), args.timeout)
        futures = {pool.submit(cells.run, n, t): (n, t) for n in names for t in targets}
        try:
            for f in concurrent.futures.as_completed(futures):
                name, t = futures[f]
                text, seconds = f.result()
                results[name, t] = text
                print(f"{name:16} {t:12} {text}  [{seconds:.0f} s]", file=sys.stderr,
                      flush=True)
        except BaseException:
            for f in futures:
                f.cancel()
            cells.stop()
            raise

    marks = {n for n in names if n not in models.ZOO and n in ORIGINAL_EXPORT_FAILS}
    lines = table_lines(names, targets, results, marks)
    marked = sorted({ORIGINAL_EXPORT_FAILS[n] for n in marks})
    if marked:
        lines += ["", f"{MARK} the plain torch.onnx.export of the original model fails: "
                  + "; ".join(marked) + ". A cell shows what fxlower.export did with it."]
    print("\n".join(lines))
    if args.out is not None:
        command = shlex.join(["python", "tools/target_table.py",
                              *(sys.argv[1:] if argv is None else argv)])
        head = (f"Made {datetime.date.today().isoformat()} with torch {_version('torch')}, "
                f"transformers {_version('transformers')}: `{command}`")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(head + "\n\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
