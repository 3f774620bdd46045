"""Tests of fxlower.check and fxlower.testing: finding forbidden ops in ONNX files.

Every model is built here with onnx.helper (opset 17) and, where a file is needed, saved under
tmp_path. One test exports a real torch module with the dynamo exporter.
"""

from __future__ import annotations

import builtins
import os
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import (
    AttributeProto,
    FunctionProto,
    GraphProto,
    ModelProto,
    NodeProto,
    TensorProto,
    helper,
)

from fxlower.check import (
    DEFAULT_FORBIDDEN,
    MAX_SUBGRAPH_DEPTH,
    CheckResult,
    Violation,
    check_file,
    check_model,
    parse_op_list,
)
from fxlower.cli import main
from fxlower.errors import OnnxCheckError
from fxlower.testing import assert_no_forbidden_ops

OPSET = 17
FLOAT, INT64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL

# ---------------------------------------------------------------------------------------------
# model builders


def _vi(name: str, elem_type: int = FLOAT, shape: Sequence[int | str] = ("n", 4)) -> Any:
    return helper.make_tensor_value_info(name, elem_type, shape)


def _model(
    nodes: Sequence[NodeProto],
    inputs: Sequence[Any],
    outputs: Sequence[Any],
    *,
    functions: Sequence[FunctionProto] = (),
    initializers: Sequence[TensorProto] = (),
    validate: bool = True,
) -> ModelProto:
    graph = helper.make_graph(list(nodes), "main", list(inputs), list(outputs), list(initializers))
    opsets = [helper.make_opsetid("", OPSET)]
    opsets += [helper.make_opsetid(d, 1) for d in sorted({f.domain for f in functions})]
    model = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    if validate:  # the test models are real ONNX models, not just bags of nodes
        onnx.checker.check_model(model)
    return model


def _save(model: ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def clean_model() -> ModelProto:
    nodes = [
        helper.make_node("Add", ["x", "x"], ["s"], name="add0"),
        helper.make_node("Relu", ["s"], ["y"], name="relu0"),
    ]
    return _model(nodes, [_vi("x", shape=[3, 4])], [_vi("y", shape=[3, 4])])


def gather_model() -> ModelProto:
    nodes = [
        helper.make_node("Gather", ["x", "idx"], ["g"], name="gather_main", axis=0),
        helper.make_node("Relu", ["g"], ["y"], name="relu0"),
    ]
    return _model(nodes, [_vi("x", shape=[3, 4]), _vi("idx", INT64, [2])], [_vi("y", shape=[2, 4])])


def _branch(name: str, nodes: Sequence[NodeProto], out: str) -> GraphProto:
    return helper.make_graph(list(nodes), name, [], [_vi(out)])


def if_model() -> ModelProto:
    """Gather hidden in the then_branch of an If; the else branch is clean."""
    then_g = _branch(
        "then", [helper.make_node("Gather", ["x", "idx"], ["t"], name="gather_then")], "t"
    )
    else_g = _branch("else", [helper.make_node("Identity", ["x"], ["e"], name="id_else")], "e")
    node = helper.make_node(
        "If", ["cond"], ["y"], name="if0", then_branch=then_g, else_branch=else_g
    )
    inputs = [_vi("cond", BOOL, []), _vi("x", shape=[3, 4]), _vi("idx", INT64, [2])]
    return _model([node], inputs, [_vi("y")])


def _loop_body(nodes: Sequence[NodeProto]) -> GraphProto:
    """A Loop body (iter, cond, v) -> (cond, v); the given nodes must produce 'v_out'."""
    keep = helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_cond")
    return helper.make_graph(
        [keep, *nodes],
        "body",
        [_vi("iter", INT64, []), _vi("cond_in", BOOL, []), _vi("v_in")],
        [_vi("cond_out", BOOL, []), _vi("v_out")],
    )


def _loop_model(body: GraphProto) -> ModelProto:
    node = helper.make_node("Loop", ["trip", "cond", "v0"], ["v_final"], name="loop0", body=body)
    inputs = [
        _vi("trip", INT64, []),
        _vi("cond", BOOL, []),
        _vi("v0", shape=[3, 4]),
        _vi("idx", INT64, [2]),
        _vi("flag", BOOL, []),
    ]
    return _model([node], inputs, [_vi("v_final")])


def loop_model() -> ModelProto:
    """GatherElements in a Loop body."""
    body = _loop_body(
        [helper.make_node("GatherElements", ["v_in", "idx"], ["v_out"], name="gather_loop")]
    )
    return _loop_model(body)


def nested_model() -> ModelProto:
    """GatherND in the else_branch of an If inside a Loop body."""
    then_g = _branch("then", [helper.make_node("Identity", ["v_in"], ["t"], name="id_t")], "t")
    else_g = _branch(
        "else", [helper.make_node("GatherND", ["v_in", "idx"], ["e"], name="gather_deep")], "e"
    )
    inner_if = helper.make_node(
        "If", ["flag"], ["v_out"], name="inner_if", then_branch=then_g, else_branch=else_g
    )
    return _loop_model(_loop_body([inner_if]))


def function_model(body_op: str = "Gather") -> ModelProto:
    """The main graph calls local function pkg.mod::Foo, whose body holds ``body_op``."""
    foo = helper.make_function(
        "pkg.mod",
        "Foo",
        ["a", "b"],
        ["c"],
        [helper.make_node(body_op, ["a", "b"], ["c"], name="foo_body")],
        [helper.make_opsetid("", OPSET)],
    )
    call = helper.make_node("Foo", ["x", "idx"], ["y"], name="call_foo", domain="pkg.mod")
    inputs = [_vi("x", shape=[3, 4]), _vi("idx", INT64, [2])]
    return _model([call], inputs, [_vi("y")], functions=[foo])


def deep_model(levels: int) -> ModelProto:
    """``levels`` nested If then_branches with a Gather at the bottom, built in place.

    helper.make_node cannot build this: past ~32 levels protobuf's decoder depth limit (100
    messages) trips when it copies the attribute, so the nesting is grown field by field.
    """
    model = ModelProto(ir_version=8)
    model.opset_import.add(domain="", version=OPSET)
    graph = model.graph
    for level in range(levels):
        node = graph.node.add(op_type="If", name=f"if{level}", input=["cond"], output=["o"])
        attr = node.attribute.add(name="then_branch", type=AttributeProto.GRAPH)
        graph = attr.g
    graph.node.add(op_type="Gather", name="deep_gather", input=["a", "b"], output=["o"])
    return model


# ---------------------------------------------------------------------------------------------
# the walk


def test_clean_model_passes(tmp_path: Path) -> None:
    path = _save(clean_model(), tmp_path / "clean.onnx")
    result = check_file(path)
    assert isinstance(result, CheckResult)
    assert result.ok
    assert result.violations == []
    assert result.path == str(path)
    assert result.n_nodes == 2
    assert result.op_counts == {"Add": 1, "Relu": 1}
    assert result.format() == f"{path}: ok (2 nodes checked, no forbidden ops)"


def test_gather_in_main_graph_is_named(tmp_path: Path) -> None:
    path = _save(gather_model(), tmp_path / "gather.onnx")
    result = check_file(path)
    assert not result.ok
    assert result.violations == [Violation("Gather", "", "gather_main", "graph")]
    assert result.op_counts == {"Gather": 1, "Relu": 1}
    text = result.format()
    lines = text.splitlines()
    assert len(lines) == 2  # one violation line, one summary line
    assert lines[0] == f"{path}: forbidden op Gather (node 'gather_main') in graph"
    assert lines[1] == f"{path}: FAILED: 1 violation (Gather x1) in 2 nodes"


def test_gather_in_if_then_branch(tmp_path: Path) -> None:
    result = check_file(_save(if_model(), tmp_path / "if.onnx"))
    assert result.violations == [
        Violation("Gather", "", "gather_then", "graph/If 'if0'.then_branch")
    ]
    assert result.n_nodes == 3  # If, Gather, Identity
    assert "graph/If 'if0'.then_branch" in result.format()


def test_gather_elements_in_loop_body(tmp_path: Path) -> None:
    result = check_file(_save(loop_model(), tmp_path / "loop.onnx"))
    assert result.violations == [
        Violation("GatherElements", "", "gather_loop", "graph/Loop 'loop0'.body")
    ]
    assert result.op_counts == {"Loop": 1, "Identity": 1, "GatherElements": 1}


def test_gather_nd_in_if_nested_in_loop(tmp_path: Path) -> None:
    result = check_file(_save(nested_model(), tmp_path / "nested.onnx"))
    where = "graph/Loop 'loop0'.body/If 'inner_if'.else_branch"
    assert result.violations == [Violation("GatherND", "", "gather_deep", where)]
    assert f"forbidden op GatherND (node 'gather_deep') in {where}" in result.format()


def test_gather_in_local_function_body(tmp_path: Path) -> None:
    result = check_file(_save(function_model(), tmp_path / "func.onnx"))
    assert result.violations == [Violation("Gather", "", "foo_body", "function 'pkg.mod::Foo'")]
    assert result.op_counts == {"pkg.mod::Foo": 1, "Gather": 1}
    assert result.n_nodes == 2


def test_subgraph_inside_function_is_walked() -> None:
    then_g = _branch("then", [helper.make_node("GatherND", ["a", "b"], ["t"], name="gnd")], "t")
    else_g = _branch("else", [helper.make_node("Identity", ["a"], ["e"])], "e")
    foo = helper.make_function(
        "pkg",
        "Foo",
        ["p", "a", "b"],
        ["c"],
        [helper.make_node("If", ["p"], ["c"], then_branch=then_g, else_branch=else_g)],
        [helper.make_opsetid("", OPSET)],
    )
    call = helper.make_node("Foo", ["p", "x", "i"], ["y"], domain="pkg")
    inputs = [_vi("p", BOOL, []), _vi("x"), _vi("i", INT64)]
    model = _model([call], inputs, [_vi("y")], functions=[foo])
    result = check_model(model)
    # unnamed nodes are located by op type and index
    assert result.violations == [
        Violation("GatherND", "", "gnd", "function 'pkg::Foo'/If #0.then_branch")
    ]
    assert result.path is None
    assert result.format().startswith("<model>: forbidden op GatherND (node 'gnd')")


def test_graph_attribute_with_wrong_type_tag_is_still_walked() -> None:
    model = if_model()
    for attr in model.graph.node[0].attribute:
        attr.type = AttributeProto.UNDEFINED  # a graph must not hide behind a missing tag
    result = check_model(model)
    assert [v.node_name for v in result.violations] == ["gather_then"]


def test_graphs_attribute_and_training_info_are_walked() -> None:
    model = clean_model()
    node = model.graph.node.add(op_type="Custom", name="holder", domain="x")
    sub = helper.make_graph([helper.make_node("Gather", ["a", "b"], ["c"], name="g0")], "s", [], [])
    node.attribute.append(helper.make_attribute("bodies", [sub, sub]))
    algo = helper.make_graph(
        [helper.make_node("GatherND", ["a", "b"], ["c"], name="t0")], "a", [], []
    )
    model.training_info.add(algorithm=algo)
    result = check_model(model)
    assert [(v.op_type, v.where) for v in result.violations] == [
        ("Gather", "graph/Custom 'holder'.bodies[0]"),
        ("Gather", "graph/Custom 'holder'.bodies[1]"),
        ("GatherND", "training_info[0].algorithm"),
    ]


def test_hostile_names_cannot_forge_report_lines() -> None:
    model = gather_model()
    model.graph.node[0].name = "x\n/tmp/other.onnx: ok (1 nodes checked, no forbidden ops)\x1b[2K"
    result = check_model(model)
    text = result.format()
    assert len(text.splitlines()) == 2
    assert "\x1b" not in text
    assert result.violations[0].node_name.startswith("x\\n/tmp/other.onnx")


def test_invalid_utf8_names_are_reported_not_crashed(tmp_path: Path) -> None:
    # proto2 string fields are not UTF-8 checked: upb hands back bytes for them
    data = gather_model().SerializeToString().replace(b"gather_main", b"gather_\xffain")
    path = tmp_path / "utf8.onnx"
    path.write_bytes(data)
    result = check_file(path)
    assert result.violations[0].node_name == "gather_\\xffain"
    assert "gather_\\xffain" in result.format()


# ---------------------------------------------------------------------------------------------
# forbid / allow


def test_default_forbidden_is_the_gather_and_scatter_families() -> None:
    assert DEFAULT_FORBIDDEN == {
        "Gather", "GatherElements", "GatherND", "Scatter", "ScatterElements", "ScatterND"
    }


def test_default_flags_the_scatter_family() -> None:
    model = clean_model()
    for i, op in enumerate(["ScatterND", "ScatterElements", "Scatter"]):
        model.graph.node.add(op_type=op, input=["y", "i", "u"], output=[f"s{i}"], name=f"sc{i}")
    result = check_model(model)
    assert [(v.op_type, v.reason) for v in result.violations] == [
        ("ScatterND", "forbidden"), ("ScatterElements", "forbidden"), ("Scatter", "forbidden")
    ]
    assert result.target is None  # the default: no target named in the report
    assert check_model(model, forbid={"Gather"}).ok  # an explicit list still replaces it


def test_custom_forbid_list(tmp_path: Path) -> None:
    path = _save(gather_model(), tmp_path / "gather.onnx")
    result = check_file(path, forbid={"Relu"})
    assert result.violations == [Violation("Relu", "", "relu0", "graph")]
    assert check_file(path, forbid=()).ok
    assert check_file(path, forbid="Relu, Gather").n_nodes == 2
    assert len(check_file(path, forbid="Relu, Gather").violations) == 2


def test_plain_names_match_any_domain_qualified_names_one_domain() -> None:
    model = clean_model()
    model.graph.node.add(op_type="Gather", domain="com.microsoft", name="ms_gather")
    model.graph.node.add(op_type="Relu", domain="ai.onnx", name="relu_ai_onnx")
    result = check_model(model)
    assert result.violations == [Violation("Gather", "com.microsoft", "ms_gather", "graph")]
    assert "forbidden op com.microsoft::Gather" in result.format()
    assert check_model(model, forbid={"ai.onnx::Gather"}).ok
    assert len(check_model(model, forbid={"com.microsoft::Gather"}).violations) == 1
    # "" and "ai.onnx" are one domain
    assert len(check_model(model, forbid={"ai.onnx::Relu"}).violations) == 2
    assert len(check_model(model, forbid={"::Relu"}).violations) == 2


def test_local_function_call_is_not_matched_by_plain_name() -> None:
    model = function_model(body_op="Add")
    model.functions[0].name = "Gather"  # a local function that happens to be named Gather
    model.graph.node[0].op_type = "Gather"
    assert check_model(model).ok  # the call is not the op; its body (Add) is clean
    assert len(check_model(model, forbid={"pkg.mod::Gather"}).violations) == 1


def test_local_function_in_default_domain_does_not_shield_op() -> None:
    model = function_model(body_op="Add")
    model.functions[0].domain = ""
    model.functions[0].name = "Gather"
    model.graph.node[0].domain = ""
    model.graph.node[0].op_type = "Gather"
    assert [v.node_name for v in check_model(model).violations] == ["call_foo"]


def test_allow_list_flags_op_not_allowed() -> None:
    model = clean_model()
    model.graph.node.add(op_type="Mul", input=["y", "y"], output=["z"], name="mul0")
    result = check_model(model, allow={"Add", "Relu"})
    assert result.violations == [Violation("Mul", "", "mul0", "graph", "not in allow list")]
    assert "op Mul (node 'mul0') in graph is not in allow list" in result.format()
    assert check_model(model, allow="Add,Relu,Mul").ok


def test_allow_list_does_not_lift_forbid() -> None:
    result = check_model(gather_model(), allow={"Gather", "Relu"})
    assert [(v.op_type, v.reason) for v in result.violations] == [("Gather", "forbidden")]


def test_allow_list_checks_function_body_not_call() -> None:
    model = function_model(body_op="Mul")
    result = check_model(model, allow={"Add"})
    assert result.violations == [
        Violation("Mul", "", "foo_body", "function 'pkg.mod::Foo'", "not in allow list")
    ]
    assert check_model(model, allow={"Mul"}).ok


def test_parse_op_list() -> None:
    assert parse_op_list("Gather,GatherND") == {"Gather", "GatherND"}
    assert parse_op_list(" Gather , com.microsoft :: GatherND ") == {
        "Gather",
        "com.microsoft::GatherND",
    }
    assert parse_op_list("ai.onnx::Gather") == {"::Gather"}
    for bad in ["", " ", "Gather,", "Gather,,GatherND", "com.microsoft::"]:
        with pytest.raises(ValueError):
            parse_op_list(bad)
    with pytest.raises(ValueError):
        check_model(clean_model(), forbid=["Gather", " "])


# ---------------------------------------------------------------------------------------------
# external data is never read


def test_external_data_is_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weight = helper.make_tensor("w", FLOAT, [1024], [0.0] * 1024)
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in [("location", "../../etc/passwd"), ("offset", "0"), ("length", "4096")]:
        weight.external_data.add(key=key, value=value)
    nodes = [
        helper.make_node("Add", ["x", "w"], ["s"], name="add_w"),
        helper.make_node("GatherElements", ["s", "idx"], ["y"], name="ge"),
    ]
    inputs = [_vi("x", shape=[1024]), _vi("idx", INT64, [1024])]
    model = _model(nodes, inputs, [_vi("y")], initializers=[weight], validate=False)
    path = _save(model, tmp_path / "ext.onnx")

    opened: list[str] = []
    real_open = builtins.open

    def spy_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(os.fspath(file) if isinstance(file, (str, os.PathLike)) else repr(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    with pytest.raises(OnnxCheckError, match=r"'\.\./\.\./etc/passwd', outside the model's folder"):
        check_file(path)  # invalid ONNX (onnx's checker rejects it too): not judged, exit 2
    monkeypatch.undo()
    assert opened == [str(path)]  # the model file and nothing else

    # the default onnx.load would try to follow the location (and fail or refuse)
    with pytest.raises(Exception):  # noqa: B017 - onnx raises ValidationError or OSError
        onnx.load(path)

    # the same data inside the folder: checked, still never opened (its size is stat'ed)
    (tmp_path / "w.bin").write_bytes(b"\0" * 4096)
    for e in weight.external_data:
        if e.key == "location":
            e.value = "w.bin"
    model = _model(nodes, inputs, [_vi("y")], initializers=[weight], validate=False)
    path = _save(model, tmp_path / "ext_ok.onnx")
    opened.clear()
    monkeypatch.setattr(builtins, "open", spy_open)
    result = check_file(path)
    monkeypatch.undo()
    assert opened == [str(path)]
    assert result.violations == [Violation("GatherElements", "", "ge", "graph")]
    assert result.n_nodes == 2


# ---------------------------------------------------------------------------------------------
# unreadable and invalid files


def _assert_check_error(path: Path, *fragments: str) -> None:
    with pytest.raises(OnnxCheckError, match=re.escape(str(path))) as info:
        check_file(path)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    _assert_check_error(tmp_path / "nope.onnx", "no such file")


def test_directory(tmp_path: Path) -> None:
    _assert_check_error(tmp_path, "is a directory")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    _assert_check_error(path, "empty")


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "random.onnx"
    path.write_bytes(random.Random(0).randbytes(256))
    _assert_check_error(path, "not a valid ONNX model")


def test_truncated_model(tmp_path: Path) -> None:
    data = if_model().SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    _assert_check_error(path, "not a valid ONNX model")


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("hello world\nthis is not a model\n")
    _assert_check_error(path, "not a valid ONNX model")


def test_protobuf_that_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "graph_only.onnx"
    path.write_bytes(gather_model().graph.SerializeToString())  # a GraphProto, not a ModelProto
    _assert_check_error(path, "holds no graph")


def test_extension_does_not_select_another_parser(tmp_path: Path) -> None:
    path = _save(gather_model(), tmp_path / "model.json")  # onnx.load would parse JSON here
    assert [v.node_name for v in check_file(path).violations] == ["gather_main"]


def test_depth_limit() -> None:
    ok = check_model(deep_model(MAX_SUBGRAPH_DEPTH))
    assert [v.node_name for v in ok.violations] == ["deep_gather"]
    assert ok.violations[0].where.count("/") == MAX_SUBGRAPH_DEPTH
    with pytest.raises(OnnxCheckError, match="subgraphs nested deeper than 64 levels"):
        check_model(deep_model(MAX_SUBGRAPH_DEPTH + 1))


def test_deep_file_hits_protobuf_depth_limit(tmp_path: Path) -> None:
    path = _save(deep_model(40), tmp_path / "deep.onnx")
    _assert_check_error(path, "nested too deeply")


def test_check_model_rejects_non_model() -> None:
    with pytest.raises(TypeError):
        check_model(gather_model().graph)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# fuzz: mutated bytes never escape as anything but OnnxCheckError

_FUZZ_BASE = nested_model()
_FUZZ_BASE.functions.extend(function_model().functions)
_FUZZ_BYTES = _FUZZ_BASE.SerializeToString()

_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, len(_FUZZ_BYTES) - 1), st.integers(1, 255)),
    st.tuples(st.just("set"), st.integers(0, len(_FUZZ_BYTES) - 1), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, len(_FUZZ_BYTES)), st.just(0)),
    st.tuples(st.just("delete"), st.integers(0, len(_FUZZ_BYTES) - 1), st.integers(1, 16)),
)


def _mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, arg in mutations:
        if not buf:
            break
        pos = min(pos, len(buf) - 1)
        if kind == "flip":
            buf[pos] ^= arg
        elif kind == "set":
            buf[pos] = arg
        elif kind == "truncate":
            del buf[pos:]
        else:
            del buf[pos : pos + arg]
    return bytes(buf)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=st.lists(_mutation, min_size=1, max_size=8))
def test_fuzz_mutated_model(
    tmp_path_factory: pytest.TempPathFactory, mutations: list[tuple[str, int, int]]
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "mutated.onnx"
    path.write_bytes(_mutate(_FUZZ_BYTES, mutations))
    try:
        result = check_file(path, allow={"Identity"})
    except OnnxCheckError as e:
        assert str(path) in str(e)
    else:
        assert isinstance(result, CheckResult)
        assert result.n_nodes == sum(result.op_counts.values())
        text = result.format()
        assert len(text.splitlines()) == (1 if result.ok else len(result.violations) + 1)


# ---------------------------------------------------------------------------------------------
# fxlower.testing


def test_assert_no_forbidden_ops(tmp_path: Path) -> None:
    path = _save(gather_model(), tmp_path / "gather.onnx")
    assert assert_no_forbidden_ops(clean_model()).ok
    assert assert_no_forbidden_ops(str(path), forbid={"Add"}).ok
    with pytest.raises(AssertionError) as info:
        assert_no_forbidden_ops(path)
    assert str(info.value) == check_file(path).format()
    with pytest.raises(AssertionError, match="not in allow list"):
        assert_no_forbidden_ops(clean_model(), allow={"Add"})
    with pytest.raises(OnnxCheckError):
        assert_no_forbidden_ops(tmp_path / "missing.onnx")
    with pytest.raises(TypeError):
        assert_no_forbidden_ops(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# a real exporter file


def test_torch_dynamo_export_of_gather_is_flagged(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")

    class TakeAlongRows(torch.nn.Module):
        def forward(self, x: Any, idx: Any) -> Any:
            return torch.gather(x, 1, idx)

    path = tmp_path / "gather_export.onnx"
    args = (torch.randn(2, 4), torch.tensor([[0, 1], [2, 3]]))
    torch.onnx.export(TakeAlongRows().eval(), args, str(path), dynamo=True)
    result = check_file(path)
    assert "GatherElements" in {v.op_type for v in result.violations}
    assert "GatherElements" in result.format()


# ---------------------------------------------------------------------------------------------
# validate before judging (issue 15): files onnx's checker rejects are exit 2, one line


def _one_line_exit_2(path: Path, fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and fragment in err[0], err


def test_a_tensor_declaring_more_than_any_file_can_hold(tmp_path: Path, capsys) -> None:
    big = TensorProto(name="big", data_type=FLOAT, dims=[2**31, 2**31, 2**20])
    model = _model([helper.make_node("Identity", ["big"], ["y"])], [],
                   [_vi("y", shape=[2**31, 2**31, 2**20])], initializers=[big], validate=False)
    _one_line_exit_2(_save(model, tmp_path / "big.onnx"), "more than any file can hold", capsys)


def test_stored_data_shorter_than_declared(tmp_path: Path, capsys) -> None:
    t = helper.make_tensor("t", FLOAT, [2, 2], [1.0, 2.0, 3.0, 4.0], raw=False)
    t.dims[0] = 5  # declares 10 values, holds 4
    model = _model([helper.make_node("Identity", ["t"], ["y"])], [], [_vi("y", shape=[5, 2])],
                   initializers=[t], validate=False)
    _one_line_exit_2(_save(model, tmp_path / "short.onnx"), "onnx.checker", capsys)


def test_external_data_shorter_than_declared_is_caught_by_its_size(tmp_path: Path,
                                                                   capsys) -> None:
    w = TensorProto(name="w", data_type=FLOAT, dims=[1024], data_location=TensorProto.EXTERNAL)
    for key, value in [("location", "w.bin"), ("offset", "0")]:
        w.external_data.add(key=key, value=value)
    (tmp_path / "w.bin").write_bytes(b"\0" * 100)  # 4096 bytes declared
    model = _model([helper.make_node("Relu", ["w"], ["y"])], [], [_vi("y", shape=[1024])],
                   initializers=[w], validate=False)
    _one_line_exit_2(_save(model, tmp_path / "m.onnx"), "holds 100 bytes", capsys)


def test_an_op_onnx_does_not_know(tmp_path: Path, capsys) -> None:
    model = _model([helper.make_node("NoSuchOp", ["x"], ["y"])], [_vi("x")], [_vi("y")],
                   validate=False)
    _one_line_exit_2(_save(model, tmp_path / "m.onnx"), "NoSuchOp", capsys)


def test_json_and_github_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    g = helper.make_graph([helper.make_node("Gather", ["w", "i"], ["y"], axis=0, name="emb")],
                          "g", [_vi("i", INT64, [3, 40])], [_vi("y", FLOAT, [3, 40, 4])],
                          [helper.make_tensor("w", FLOAT, [30, 4], [0.0] * 120)])
    path = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)]),
                 tmp_path / "m,1.onnx")
    bad = tmp_path / "junk.onnx"
    bad.write_bytes(b"not onnx at all")
    assert main(["check", str(path), str(bad), "--target", "kneron", "--format", "json"]) == 2
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["schema"] == "fxlower-check/1" and verdict["ok"] is False
    first, second = verdict["results"]
    assert first["file"] == str(path) and first["target"] == "kneron" and first["nodes"] == 1
    (v,) = first["violations"]
    assert (v["op"], v["node"], v["where"], v["reason"]) == (
        "Gather", "emb", "graph", "outside the target's condition")
    assert v["detail"] == "Gather with a single index only (indices numel: 120)"
    assert second["ok"] is False and "not a valid ONNX model" in second["error"]

    assert main(["check", str(path), "--format", "github"]) == 1
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith(f"::error file={str(path).replace(',', '%2C')},title=fxlower check::")
    assert line.endswith("forbidden op Gather (node 'emb') in graph")
    assert main(["check", str(_save(clean_model(), tmp_path / "ok.onnx")), "--format",
                 "github"]) == 0
    assert capsys.readouterr().out == ""
