"""The README's int8 table (issue 17): what onnxruntime's static QDQ quantization costs a
model fxlower lowered, against what it costs the original, on the same calibration data.

For each model: the plain export and the lowered export (`fxlower.export`, assume_finite=True
as the README's recipe says; the exact lowering too when it differs), each quantized by
onnxruntime's `quantize_static` (the original) and by `fxlower.quantize_static` (the lowered
file), in two settings: uint8 activations / int8 weights per tensor, and int8 / int8 per
channel. Error = mean over 8 evaluation inputs of ||quantized - float original|| / ||float
original|| on the first output; ratio = error(lowered, quantized) / error(original,
quantized), target <= 1.1. Every quantized lowered file is re-checked by `fxlower check`.
The other direction: the quantized original lowered from the file alone (`lower_onnx`),
gather-free, and its error ratio against the quantized original (a selection of the same
int8 values: 1.000 when exact), with the largest float initializer it holds.

    python tools/quant_table.py [--models a,b] [--out build/quant.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from onnxruntime.quantization import QuantFormat, QuantType  # noqa: E402
from onnxruntime.quantization import quantize_static as ort_quantize_static  # noqa: E402

import fxlower  # noqa: E402
from fxlower.api import onnx_export  # noqa: E402
from fxlower.check import check_file  # noqa: E402
from fxlower.quantize import calibration_reader, quantize_static  # noqa: E402
from fxlower.verify import draw_like  # noqa: E402

ZOO_MODELS = ["bert_embedding", "mae", "topk_attention", "hf_bert", "hf_distilbert", "hf_gpt2",
              "hf_vitmae"]
CORPUS_MODELS = ["distilbert", "gpt2", "opt", "clip_text"]
SETTINGS: dict[str, dict[str, Any]] = {
    "u8/s8 per tensor": {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8,
                         "per_channel": False},
    "s8/s8 per channel": {"activation_type": QuantType.QInt8, "weight_type": QuantType.QInt8,
                          "per_channel": True},
}


def _first(out: Any) -> np.ndarray:
    while not isinstance(out, torch.Tensor):
        out = out[0] if isinstance(out, (tuple, list)) else next(iter(out.values()))
    return out.detach().numpy()


def _run(path: str, data: list[tuple[torch.Tensor, ...]]) -> list[np.ndarray]:
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in s.get_inputs()]
    return [s.run(None, {n: t.numpy() for n, t in zip(names, x, strict=False)})[0] for x in data]


def _error(outs: list[np.ndarray], refs: list[np.ndarray]) -> float:
    return float(np.mean([np.linalg.norm(o - r) / np.linalg.norm(r) for o, r in zip(outs, refs, strict=True)]))


def _largest_float_init(path: str) -> int:
    m = onnx.load(path)
    sizes = [int(np.prod(t.dims)) for t in m.graph.initializer
             if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)]
    return max(sizes, default=0)


def measure(name: str, d: str) -> list[dict[str, Any]]:
    if name in CORPUS_MODELS:
        from models.corpus import input_draws
        from models.corpus import load as load_corpus
        model, inputs = load_corpus(name)

        def draws(n: int, seed: int) -> list[tuple[torch.Tensor, ...]]:
            return input_draws(model, n, seed)
    else:
        from models import load
        model, inputs = load(name)

        def draws(n: int, seed: int) -> list[tuple[torch.Tensor, ...]]:
            return [draw_like(inputs, seed + i) for i in range(n)]
    verify_inputs = draws(2, 900)
    orig = f"{d}/{name}.onnx"
    onnx_export(model, inputs, orig)
    lowered = {}
    for af in (True, False):
        path = f"{d}/{name}.low{'.af' if af else ''}.onnx"
        fxlower.export(model, inputs, path, assume_finite=af, verify_inputs=verify_inputs)
        lowered[af] = path
    exact_differs = onnx.load(lowered[True]).graph != onnx.load(lowered[False]).graph
    cal, ev = draws(16, 100), draws(8, 500)
    with torch.no_grad():
        refs = [_first(model(*x)) for x in ev]
    rows = []
    for setting, kw in SETTINGS.items():
        q_orig = f"{d}/{name}.q.onnx"
        ort_quantize_static(orig, q_orig, calibration_reader(orig, cal), quant_format=QuantFormat.QDQ, **kw)
        e_orig = _error(_run(q_orig, ev), refs)
        row: dict[str, Any] = {"model": name, "setting": setting, "e_orig": e_orig}
        for af, path in lowered.items():
            if not af and not exact_differs:
                row["ratio_exact"] = None
                continue
            q_low = path.replace(".onnx", ".q.onnx")
            quantize_static(path, q_low, calibration_reader(path, cal), quant_format=QuantFormat.QDQ, **kw)
            e_low = _error(_run(q_low, ev), refs)
            ok = check_file(q_low).ok
            if af:
                row.update(e_low=e_low, ratio=e_low / e_orig, check=ok)
            else:
                row.update(ratio_exact=e_low / e_orig, check_exact=ok)
        # the other direction: the quantized original lowered from the file alone
        low_q, rep = fxlower.lower_onnx(q_orig)
        path2 = f"{d}/{name}.q.lowered.onnx"
        onnx.save(low_q, path2)
        row.update(ratio_onnx=_error(_run(path2, ev), refs) / e_orig, check_onnx=check_file(path2).ok,
                   float_init=_largest_float_init(path2), table_init=_largest_float_init(q_orig))
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | setting | int8 original error | int8 lowered error | ratio | ratio, exact lowering "
             "| `fxlower check` | int8 original lowered by `lower_onnx`: ratio, check, largest float initializer |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        exact = "same file" if r["ratio_exact"] is None else f"{r['ratio_exact']:.3f}"
        lines.append(
            f"| {r['model']} | {r['setting']} | {r['e_orig']:.4f} | {r['e_low']:.4f} | {r['ratio']:.3f} | {exact} "
            f"| {'clean' if r['check'] else 'FORBIDDEN OPS'} | {r['ratio_onnx']:.3f}, "
            f"{'clean' if r['check_onnx'] else 'FORBIDDEN OPS'}, {r['float_init']:,} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--models", default=",".join(ZOO_MODELS + CORPUS_MODELS))
    ap.add_argument("--out", default=str(ROOT / "build" / "quant.md"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        for name in args.models.split(","):
            t = time.perf_counter()
            got = measure(name, d)
            rows += got
            for r in got:
                print(f"{name:16s} {r['setting']:18s} ratio {r['ratio']:.3f}  exact "
                      f"{r['ratio_exact'] if r['ratio_exact'] is None else round(r['ratio_exact'], 3)}  "
                      f"onnx path {r['ratio_onnx']:.3f}  ({time.perf_counter() - t:.0f} s)", flush=True)
    table = markdown(rows)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    Path(args.out).write_text(table)
    print(table)
    print(f"{len(rows)} rows in {time.perf_counter() - t0:.0f} s -> {args.out}")
    bad = [r for r in rows if r["ratio"] > 1.1 or not r["check"] or not r["check_onnx"]]
    for r in bad:
        print(f"FAILS: {r['model']} {r['setting']}: ratio {r['ratio']:.3f}, check {r['check']}, "
              f"onnx-path check {r['check_onnx']}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
