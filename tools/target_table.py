"""The README's per-target table (`make targets-table`): each zoo model through
`fxlower.export(model, inputs, path, target=T)` for every packaged profile, and the written
file re-checked by `fxlower check --target T` in a fresh process (the CI gate as users run
it). A cell is `ok` when that check passes; otherwise the first line of what fxlower said
(what the target lacks, or why no exact formulation exists there).

    python tools/target_table.py [MODEL ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ["mae", "bert_embedding", "topk_attention", "hf_bert", "hf_vit", "hf_resnet"]


def cell(name: str, target: str, folder: Path) -> str:
    import fxlower
    from models import load

    model, inputs = load(name)
    path = folder / f"{name}.{target}.onnx"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fxlower.export(model, inputs, path, target=target)
    except fxlower.FxlowerError as e:
        return _summary(str(e))
    r = subprocess.run([sys.executable, "-m", "fxlower", "check", str(path), "--target", target],
                       capture_output=True, text=True)
    if r.returncode == 0:
        return "ok"
    return "check fails: " + _short((r.stdout or r.stderr).strip().splitlines()[-1])


def _summary(text: str) -> str:
    """What a cell says of a failure: the ops (or int64 tensors) the file still holds, or
    the op a rewrite kept and the reason given for that very node."""
    import re

    if text.startswith("the exported ONNX file still has forbidden ops"):
        ops = sorted(set(re.findall(r"\bop ([\w:]+) \(", text)))
        parts = (["lacks " + ", ".join(ops)] if ops else []) + (
            ["int64 tensors"] if "int64 tensor" in text else []) + (
            ["a condition broken"] if "breaks a condition" in text else [])
        return "; ".join(parts) or "file check fails"
    head, _, skipped = text.partition(" (skipped: ")
    kept = re.findall(r"(?:^|; |: )([^;:]+?) \(exports to ([\w, ]+)\)", head)
    reasons = dict(p.split(": ", 1) for p in skipped.rstrip(")").split("; ") if ": " in p)
    if kept:
        origin, ops = kept[0]
        why = reasons.get(origin.strip())
        return _short(f"keeps {ops} ({origin.strip()}{': ' + why if why else ''})")
    return _short(text.splitlines()[0])


def _short(text: str, width: int = 130) -> str:
    text = text.replace("|", "/")
    return text if len(text) <= width else text[: width - 1] + "…"


def main(argv: list[str] | None = None) -> int:
    from fxlower.targets import load_profiles

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="*", help=f"zoo names (default: {', '.join(MODELS)})")
    args = p.parse_args(argv)
    targets = sorted(load_profiles())
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in args.models or MODELS:
            cells = []
            for t in targets:
                c = cell(name, t, Path(d))
                print(f"{name:16} {t:12} {c}", file=sys.stderr, flush=True)
                cells.append(c)
            rows.append((name, cells))
    print("| model | " + " | ".join(targets) + " |")
    print("|" + " --- |" * (len(targets) + 1))
    for name, cells in rows:
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
