"""The corpus through the ONNX path (`make onnx-corpus`): every entry exported to ONNX by
both of torch's exporters (dynamo, and TorchScript with symbolic batch and sequence dims
that `--input-shape` then binds), then lowered from the file alone by `fxlower.lower_onnx`
as a user holding only the file would; per file: the gather/scatter nodes before -> after,
whether every other op type kept its count, whether `fxlower check` passes the output,
onnxruntime's agreement on fresh inputs, the sizes and the time.

    python tools/onnx_corpus.py [NAME ...] [--markdown]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _export(model: Any, inputs: tuple[Any, ...], path: Path, dynamo: bool) -> None:
    import torch

    names = [f"input_{k}" for k in range(len(inputs))]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if dynamo:
            torch.onnx.export(model, inputs, str(path), dynamo=True, input_names=names)
        else:
            axes = {n: {0: "batch", 1: "seq"} if t.dim() >= 2 else {0: "batch"}
                    for n, t in zip(names, inputs, strict=True)}
            torch.onnx.export(model, inputs, str(path), dynamo=False, opset_version=17,
                              input_names=names, dynamic_axes=axes)


def row(name: str, dynamo: bool, tmp: Path) -> dict[str, Any]:
    import onnx

    import fxlower
    from fxlower.check import check_model
    from fxlower.onnx_lower import FAMILY
    from models.corpus import load

    exporter = "dynamo" if dynamo else "torchscript"
    out: dict[str, Any] = {"model": name, "exporter": exporter}
    model, inputs = load(name)
    path = tmp / f"{name}_{exporter}.onnx"
    try:
        _export(model, inputs, path, dynamo)
    except Exception as e:  # noqa: BLE001 - recorded: the plain export fails, not fxlower
        out["error"] = f"the plain export fails: {type(e).__name__}"
        return out
    before = onnx.load(str(path))
    shapes = {i.name: list(t.shape) for i, t in zip(
        [i for i in before.graph.input], inputs, strict=False)}
    t0 = time.perf_counter()
    try:
        after, rep = fxlower.lower_onnx(path, input_shapes=None if dynamo else shapes)
    except Exception as e:  # noqa: BLE001
        out["error"] = f"{type(e).__name__}: {str(e)[:200]}"
        return out
    out["seconds"] = time.perf_counter() - t0
    cb = Counter(n.op_type for n in before.graph.node)
    ca = Counter(n.op_type for n in after.graph.node)
    out["family_before"] = {op: cb[op] for op in FAMILY if cb[op]}
    out["family_after"] = {op: ca[op] for op in FAMILY if ca[op]}
    out["others_kept"] = all(ca[op] >= n for op, n in cb.items() if op not in FAMILY)
    out["check_ok"] = check_model(after).ok
    out["ort_match"] = rep.verification.get("matched")
    out["size"] = (before.ByteSize(), after.ByteSize())
    out["statuses"] = dict(Counter(r.status for r in rep.nodes))
    out["remaining"] = rep.remaining
    return out


def _fam(d: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(d.items())) or "none"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | exporter | gather/scatter before | after | lowered / folded | other ops kept "
             "| check | onnxruntime | size | s |", "|" + " --- |" * 10]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['exporter']} | {r['error']} |" + " |" * 7)
            continue
        st = r["statuses"]
        a, b = r["size"]
        lines.append(
            f"| {r['model']} | {r['exporter']} | {_fam(r['family_before'])} | "
            f"{_fam(r['family_after'])} | {st.get('lowered', 0)} / {st.get('folded', 0)} | "
            f"{'yes' if r['others_kept'] else 'NO'} | {'ok' if r['check_ok'] else 'fails'} | "
            f"{'same' if r['ort_match'] else ('-' if r['ort_match'] is None else 'DIFFERS')} | "
            f"{a / 1e6:.2f} -> {b / 1e6:.2f} MB ({(b - a) / a:+.0%}) | {r['seconds']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from models.corpus import CORPUS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", help="corpus entries (default: all)")
    p.add_argument("--markdown", action="store_true", help="print the README table")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in args.names or list(CORPUS):
            for dynamo in (True, False):
                r = row(name, dynamo, Path(d))
                rows.append(r)
                print(f"{name:16} {r['exporter']:11} " + (r.get("error") or (
                    f"{_fam(r['family_before'])} -> {_fam(r['family_after'])}; others kept "
                    f"{r['others_kept']}, check {r['check_ok']}, ort {r['ort_match']}, "
                    f"{r['seconds']:.1f}s" + (f"; {r['remaining'][0][:160]}" if r["remaining"]
                                              else ""))), flush=True)
    if args.markdown:
        print(markdown(rows))
    bad = [r for r in rows if "error" not in r and not (
        r["others_kept"] and r["ort_match"] is not False)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
