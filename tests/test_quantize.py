"""int8 quantization (issue 17), both directions.

Lower, then quantize: `fxlower.quantize_static` (onnxruntime's QDQ quantizer plus pinning)
keeps the one-hot masks exactly 0/1, gives a selection's output its source's parameters,
keeps fxlower's NaN/inf side channels in float, and costs no more accuracy than quantizing
the original. Quantize, then lower: a QDQ file's DequantizeLinear -> Gather (or Gather on
int8 -> DequantizeLinear) lowers from the file alone to a selection from the int8 table the
file holds, with the mask in QDQ form, and the same outputs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from onnxruntime.quantization import QuantFormat, QuantType
from onnxruntime.quantization import quantize_static as ort_quantize_static

import fxlower
from fxlower.api import onnx_export
from fxlower.check import check_file
from fxlower.quantize import analyse, calibration_reader, quantize_static
from fxlower.verify import draw_like
from models import load


def _first(out: Any) -> np.ndarray:
    """The first output leaf (the one onnxruntime's first output is)."""
    while not isinstance(out, torch.Tensor):
        out = out[0]
    return out.numpy()


def run(path: str | onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    src = path.SerializeToString() if isinstance(path, onnx.ModelProto) else path
    s = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return [s.run(None, f)[0] for f in feeds]


def feeds_of(path: str, data: list[tuple[torch.Tensor, ...]]) -> list[dict[str, np.ndarray]]:
    names = [i.name for i in ort.InferenceSession(path).get_inputs()]
    return [{n: t.numpy() for n, t in zip(names, x, strict=False)} for x in data]


def rel_error(outs: list[np.ndarray], refs: list[np.ndarray]) -> float:
    return float(np.mean([np.linalg.norm(o - r) / np.linalg.norm(r) for o, r in zip(outs, refs, strict=True)]))


def params(m: onnx.ModelProto, tensor: str) -> tuple[np.ndarray, np.ndarray]:
    """The scale and zero point of the QuantizeLinear reading `tensor`."""
    inits = {i.name: nh.to_array(i) for i in m.graph.initializer}
    q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor)
    return inits[q.input[1]], inits[q.input[2]]


@pytest.fixture(scope="module")
def zoo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """bert_embedding and mae: the plain export, the lowered export (exact), the draws."""
    d = tmp_path_factory.mktemp("q")
    out: dict[str, Any] = {}
    for name in ("bert_embedding", "mae"):
        model, inputs = load(name)
        orig, low = str(d / f"{name}.onnx"), str(d / f"{name}.low.onnx")
        onnx_export(model, inputs, orig)
        fxlower.export(model, inputs, low)
        cal = [draw_like(inputs, 100 + i) for i in range(8)]
        ev = [draw_like(inputs, 500 + i) for i in range(4)]
        with torch.no_grad():
            refs = [_first(model(*x)) for x in ev]
        out[name] = {"orig": orig, "low": low, "cal": cal, "ev": ev, "refs": refs, "dir": d}
    return out


def _quantize_pair(f: dict[str, Any], ours: bool) -> tuple[float, float, str]:
    """(error of the quantized original, of the quantized lowered file, the latter's path)."""
    d = f["dir"]
    q_orig, q_low = str(Path(f["orig"]).with_suffix(".q.onnx")), str(Path(f["low"]).with_suffix(
        ".fxl.q.onnx" if ours else ".ort.q.onnx"))
    kw = {"quant_format": QuantFormat.QDQ, "activation_type": QuantType.QUInt8,
          "weight_type": QuantType.QInt8}
    ort_quantize_static(f["orig"], q_orig, calibration_reader(f["orig"], f["cal"]), **kw)
    (quantize_static if ours else ort_quantize_static)(f["low"], q_low, calibration_reader(f["low"], f["cal"]), **kw)
    assert d
    e_orig = rel_error(run(q_orig, feeds_of(f["orig"], f["ev"])), f["refs"])
    e_low = rel_error(run(q_low, feeds_of(f["low"], f["ev"])), f["refs"])
    return e_orig, e_low, q_low


def test_embedding_masks_are_pinned_to_scale_one_and_selections_share_the_table_parameters(
        zoo_files: dict[str, Any]) -> None:
    f = zoo_files["bert_embedding"]
    a = analyse(onnx.load(f["low"]))
    assert len(a.selections) == 2 and not a.side  # the word and token-type lookups
    e_orig, e_low, q_low = _quantize_pair(f, ours=True)
    m = onnx.load(q_low)
    for mask in a.masks & {n.input[0] for n in m.graph.node if n.op_type == "QuantizeLinear"}:
        scale, zp = params(m, mask)
        assert float(scale) == 1.0 and int(zp) == 0
    producer = {o: n for n in m.graph.node for o in n.output}
    for y in a.selections:  # the output's parameters are those the MatMul reads its table by
        mm = producer[y]
        dq = next(producer[i] for i in mm.input if producer[i].op_type == "DequantizeLinear"
                  and not producer[i].input[0].startswith(tuple(a.masks)))
        scale, zp = params(m, y)
        inits = {i.name: nh.to_array(i) for i in m.graph.initializer}
        assert float(scale) == float(inits[dq.input[1]]) and int(zp) == int(inits[dq.input[2]])
    assert e_low <= 1.1 * e_orig, (e_low, e_orig)
    assert check_file(q_low).ok


def test_plain_quantization_of_a_lowered_embedding_gives_masks_an_inexact_scale(
        zoo_files: dict[str, Any]) -> None:
    """The other side: onnxruntime alone calibrates the mask to [0, 1] and a scale of 1/255."""
    f = zoo_files["bert_embedding"]
    _, _, q_low = _quantize_pair(f, ours=False)
    m = onnx.load(q_low)
    masks = analyse(onnx.load(f["low"])).masks & {n.input[0] for n in m.graph.node
                                                 if n.op_type == "QuantizeLinear"}
    assert masks and all(float(params(m, k)[0]) != 1.0 for k in masks)


def test_side_channels_of_an_exact_lowering_stay_in_float(zoo_files: dict[str, Any]) -> None:
    """MAE's gather of an activation, lowered exactly, carries packed keep bits; quantized
    by onnxruntime alone they are destroyed (error many times the original's), with
    fxlower.quantize_static they are never quantized."""
    f = zoo_files["mae"]
    a = analyse(onnx.load(f["low"]))
    assert a.side and a.exclude
    e_orig, e_plain, _ = _quantize_pair(f, ours=False)
    e_orig2, e_ours, q_low = _quantize_pair(f, ours=True)
    assert e_orig == e_orig2
    assert e_plain > 5 * e_orig, (e_plain, e_orig)
    assert e_ours <= 1.2 * e_orig, (e_ours, e_orig)  # README: 1.107 (1.000 with assume_finite)
    m = onnx.load(q_low)
    assert not {n.input[0] for n in m.graph.node if n.op_type == "QuantizeLinear"} & a.side


def test_mae_lowered_with_assume_finite_quantizes_as_the_original(
        zoo_files: dict[str, Any], tmp_path: Path) -> None:
    f = dict(zoo_files["mae"])
    model, inputs = load("mae")
    f["low"] = str(tmp_path / "mae.af.onnx")
    fxlower.export(model, inputs, f["low"], assume_finite=True)
    assert not {n.op_type for n in onnx.load(f["low"]).graph.node} & {"Floor", "Reciprocal"}  # no keep bits
    e_orig, e_low, q_low = _quantize_pair(f, ours=True)
    assert e_low <= 1.1 * e_orig, (e_low, e_orig)
    assert check_file(q_low).ok


def test_qoperator_format_is_refused_by_name(zoo_files: dict[str, Any], tmp_path: Path) -> None:
    f = zoo_files["bert_embedding"]
    with pytest.raises(fxlower.LoweringError, match="QDQ"):
        quantize_static(f["low"], str(tmp_path / "x.onnx"), calibration_reader(f["low"], f["cal"]),
                        quant_format=QuantFormat.QOperator)


# ---------------------------------------------------------------- the analysis, both sides


def _graph(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], x_dims: list[int]
           ) -> onnx.ModelProto:
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("idx", T.INT64, x_dims),
                                  h.make_tensor_value_info("src", T.FLOAT, [4, 3])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


@pytest.mark.parametrize("arange, x_dims, selection", [
    (np.arange(4), [5, 1], True),                # one-hot along the contracted axis
    (np.array([0, 1, 1, 3]), [5, 1], False),     # repeated values: two ones per row possible
    (np.arange(4), [5, 4], False),               # x varies along the axis: no proof
])
def test_a_selection_needs_a_one_hot_proof(arange: np.ndarray, x_dims: list[int], selection: bool) -> None:
    nodes = [h.make_node("Equal", ["idx", "ar"], ["eq"]),
             h.make_node("Cast", ["eq"], ["mask"], to=T.FLOAT),
             h.make_node("MatMul", ["mask", "src"], ["y"])]
    a = analyse(_graph(nodes, [nh.from_array(arange.astype(np.int64), "ar")], x_dims))
    assert "mask" in a.masks
    assert (a.selections == {"y": "src"}) is selection


@pytest.mark.parametrize("values, is_mask", [([0.0, 1.0, 1.0], True), ([0.0, 2.0, 1.0], False)])
def test_a_constant_is_a_mask_only_when_it_holds_zeros_and_ones(values: list[float], is_mask: bool) -> None:
    nodes = [h.make_node("Mul", ["c", "src"], ["y"])]
    a = analyse(_graph(nodes, [nh.from_array(np.array(values, np.float32), "c")], [1]))
    assert ("c" in a.masks) is is_mask


@pytest.mark.parametrize("table, side", [
    (np.array([[1.0, 2.0], [4.0, 0.25], [8.0, 3.0]]), True),   # integers and powers of two: packing
    (np.array([[0.3, -1.7], [2.2, 0.1], [5.5, 0.9]]), False),  # values: a table, never a side channel
])
def test_a_side_channel_is_computed_from_masks_and_binary_constants_only(table: np.ndarray, side: bool) -> None:
    nodes = [h.make_node("Equal", ["idx", "ar"], ["eq"]),
             h.make_node("Cast", ["eq"], ["bits"], to=T.FLOAT),
             h.make_node("MatMul", ["bits", "w"], ["y"], name="node_y")]  # no one-hot proof: [5, 3] varies
    a = analyse(_graph(nodes, [nh.from_array(np.arange(3), "ar"),
                               nh.from_array(table.astype(np.float32), "w")], [5, 3]))
    assert ("y" in a.side) is side and ("node_y" in a.exclude) is side


# ------------------------------------------------------------ quantize, then lower (ONNX path)


def _qdq_embedding(kind: str, vocab: int = 30000, dim: int = 64, scale_input: bool = False
                   ) -> onnx.ModelProto:
    """An int8 embedding table: DequantizeLinear -> Gather -> Q/DQ (onnxruntime's QDQ form),
    or Gather on the int8 table -> DequantizeLinear; the scale an input when asked."""
    rng = np.random.default_rng(0)
    inits = [nh.from_array(rng.integers(-128, 128, (vocab, dim)).astype(np.int8), "table_q"),
             nh.from_array(np.array(3, np.int8), "zp")]
    inputs = [h.make_tensor_value_info("ids", T.INT64, [2, 8])]
    if scale_input:
        inputs.append(h.make_tensor_value_info("s", T.FLOAT, []))
    else:
        inits.append(nh.from_array(np.array(0.02, np.float32), "s"))
    if kind == "dq_gather":
        nodes = [h.make_node("DequantizeLinear", ["table_q", "s", "zp"], ["table"]),
                 h.make_node("Gather", ["table", "ids"], ["emb"], axis=0),
                 h.make_node("QuantizeLinear", ["emb", "s", "zp"], ["emb_q"]),
                 h.make_node("DequantizeLinear", ["emb_q", "s", "zp"], ["out"])]
    else:
        nodes = [h.make_node("Gather", ["table_q", "ids"], ["emb_q"], axis=0),
                 h.make_node("DequantizeLinear", ["emb_q", "s", "zp"], ["out"])]
    g = h.make_graph(nodes, kind, inputs, [h.make_tensor_value_info("out", T.FLOAT, [2, 8, dim])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 21)])
    m.ir_version = 10
    onnx.checker.check_model(m)
    return m


def _feeds(vocab: int, scale_input: bool = False) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    out = []
    for _ in range(3):
        f = {"ids": rng.integers(0, vocab, (2, 8))}
        if scale_input:
            f["s"] = np.array(0.02, np.float32)
        out.append(f)
    return out


def _float_inits(m: onnx.ModelProto) -> list[int]:
    return [int(np.prod(t.dims)) for t in m.graph.initializer if t.data_type == T.FLOAT]


@pytest.mark.parametrize("kind", ["dq_gather", "gather_dq"])
def test_a_qdq_embedding_lowers_to_a_selection_from_the_int8_table(kind: str) -> None:
    m = _qdq_embedding(kind)
    out, rep = fxlower.lower_onnx(m)
    ops = Counter(n.op_type for n in out.graph.node)
    assert ops["Gather"] == 0 and [r.status for r in rep.nodes] == ["lowered"]
    assert max(_float_inits(out), default=0) <= 1  # the table stays int8: no float copy
    assert any(t.name == "table_q" and t.data_type == T.INT8 for t in out.graph.initializer)
    # the dequantized source is proven finite: no NaN/inf code path
    assert not ops.keys() & {"Floor", "Reciprocal", "Clip"}
    # the mask goes through Q/DQ at scale 1, zero point 0: an integer MatMul for the compiler
    inits = {i.name: nh.to_array(i) for i in out.graph.initializer}
    producer = {o: n for n in out.graph.node for o in n.output}
    mm = next(n for n in out.graph.node if n.op_type == "MatMul")
    kinds = sorted(producer[i].op_type for i in mm.input)
    assert kinds == ["DequantizeLinear", "DequantizeLinear"]
    mask_dq = next(producer[i] for i in mm.input if producer[i].input[0] != "table_q")
    assert float(inits[mask_dq.input[1]]) == 1.0 and int(inits[mask_dq.input[2]]) == 0
    feeds = _feeds(30000)
    for a, b in zip(run(m, feeds), run(out, feeds), strict=True):
        assert np.array_equal(a, b)
    assert check_model(out).ok


def test_a_dequantized_source_with_a_run_time_scale_keeps_the_exact_code_path() -> None:
    """The finiteness proof needs a known finite scale; a scale fed at run time could be
    inf, so the selection keeps its NaN/inf handling (and is still exact)."""
    m = _qdq_embedding("dq_gather", vocab=200, scale_input=True)
    out, rep = fxlower.lower_onnx(m)
    ops = Counter(n.op_type for n in out.graph.node)
    assert ops["Gather"] == 0 and ops["Floor"] + ops["Reciprocal"] > 0
    feeds = _feeds(200, scale_input=True)
    for a, b in zip(run(m, feeds), run(out, feeds), strict=True):
        assert np.array_equal(a, b)


def test_onnxruntimes_quantized_bert_embedding_lowers_from_the_file_with_the_same_outputs(
        zoo_files: dict[str, Any]) -> None:
    f = zoo_files["bert_embedding"]
    q_orig = str(Path(f["orig"]).with_suffix(".q2.onnx"))
    ort_quantize_static(f["orig"], q_orig, calibration_reader(f["orig"], f["cal"]), quant_format=QuantFormat.QDQ)
    out, rep = fxlower.lower_onnx(q_orig)
    assert all(r.status == "lowered" for r in rep.nodes) and check_model(out).ok
    table = next(t for t in onnx.load(q_orig).graph.initializer if t.name == "word_embeddings.weight_quantized")
    assert max(_float_inits(out)) < int(np.prod(table.dims))
    feeds = feeds_of(f["orig"], f["ev"])
    for a, b in zip(run(q_orig, feeds), run(out, feeds), strict=True):
        assert np.array_equal(a, b)


def check_model(m: onnx.ModelProto) -> Any:
    from fxlower.check import check_model as check
    return check(m)
