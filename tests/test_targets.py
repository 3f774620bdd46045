"""Tests of fxlower.targets (the target profiles) and of checking ONNX models against them:
the packaged profiles, the Target API, op checks per profile and int64 detection.

Models are built here with onnx.helper (opset 17); a few are bags of nodes (the checker never
validates), built with ``_bag``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import FunctionProto, ModelProto, NodeProto, TensorProto, helper

import fxlower
from fxlower.check import (
    DEFAULT_FORBIDDEN,
    INT64_SHAPE_INPUTS,
    REASON_CONDITION,
    REASON_INT64,
    Violation,
    check_file,
    check_model,
)
from fxlower.errors import LoweringError, OnnxCheckError
from fxlower.targets import (
    DEFAULT_TARGET,
    GENERIC_FORBIDDEN,
    Condition,
    Facts,
    Target,
    get_target,
    load_profiles,
)
from fxlower.testing import assert_no_forbidden_ops

OPSET = 17
FLOAT, INT64, INT32, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL
FLOAT16 = TensorProto.FLOAT16
PROFILES = ["ethos-u55", "ethos-u85", "generic", "kneron", "kneron-520", "rknn2@1.4.0",
            "rknn2@2.x", "tidl"]
NO_INT64 = Target(name="no-int64", int64=False)

ONNX_OPS = {s.name for s in onnx.defs.get_all_schemas_with_history()}


# ---------------------------------------------------------------------------------------------
# builders


def _vi(name: str, elem_type: int = FLOAT, shape: Sequence[int | str] = (3, 4)) -> Any:
    return helper.make_tensor_value_info(name, elem_type, shape)


def _model(
    nodes: Sequence[NodeProto],
    inputs: Sequence[Any],
    outputs: Sequence[Any],
    *,
    initializers: Sequence[TensorProto] = (),
    value_info: Sequence[Any] = (),
    functions: Sequence[FunctionProto] = (),
    validate: bool = True,
) -> ModelProto:
    graph = helper.make_graph(
        list(nodes), "main", list(inputs), list(outputs), list(initializers),
        value_info=list(value_info),
    )
    opsets = [helper.make_opsetid("", OPSET)]
    opsets += [helper.make_opsetid(d, 1) for d in sorted({f.domain for f in functions})]
    model = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    if validate:
        onnx.checker.check_model(model, full_check=True)
    return model


def _bag(op_types: Sequence[str]) -> ModelProto:
    """One node per op type (no tensor types): for op checks only."""
    model = ModelProto(ir_version=8)
    model.opset_import.add(domain="", version=OPSET)
    for i, op in enumerate(op_types):
        model.graph.node.add(op_type=op, name=f"n{i}_{op}", input=[f"t{i}"], output=[f"t{i + 1}"])
    return model


def _int64_names(result: Any) -> list[str]:
    """The tensor names of the int64 violations, in order."""
    out = []
    for v in result.violations:
        if v.reason == REASON_INT64:
            m = re.match(r"'([^']*)'", v.detail)
            out.append(m.group(1) if m else v.detail)
    return out


def _const(name: str, values: Sequence[int], dtype: int = INT64) -> TensorProto:
    return helper.make_tensor(name, dtype, [len(values)], list(values))


# ---------------------------------------------------------------------------------------------
# the packaged profiles


def test_every_profile_loads_with_source_and_date() -> None:
    profiles = load_profiles()
    assert sorted(profiles) == PROFILES
    for name, target in profiles.items():
        assert isinstance(target, Target)
        assert target.name == name
        assert target.title and target.version and target.remarks
        assert target.source
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", target.date), (name, target.date)
        if name != "generic":
            assert target.source.startswith("https://github.com/"), target.source
            assert re.search(r"/blob/[0-9a-f]{40}/", target.source), target.source


@pytest.mark.parametrize("name", PROFILES)
def test_profile_json_is_complete_and_consistent(name: str) -> None:
    path = resources.files("fxlower").joinpath("profiles", f"{name}.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert set(data) - {"conditions"} == {
        "name", "title", "source", "version", "date", "allow", "forbid", "int64", "notes", "remarks"
    }
    for op, conditions in data.get("conditions", {}).items():  # conditions on allowed ops,
        assert op in (data["allow"] or ONNX_OPS) and op not in data["forbid"], op  # quoted
        for c in conditions:
            assert set(c) == {"kind", "value", "text", "quote"} and c["quote"] and c["text"]
    assert set(data["source"]) == {"repo", "path", "commit", "url"}
    assert data["name"] == name
    assert isinstance(data["int64"], bool)
    allow = set(data["allow"] or ())
    forbid = set(data["forbid"])
    assert len(forbid) == len(data["forbid"]) and len(allow) == len(data["allow"] or ())
    assert not allow & forbid  # an op both allowed and forbidden would be a contradiction
    # every name is a real ONNX op type, so a typo cannot silently match nothing
    assert allow | forbid <= ONNX_OPS, (allow | forbid) - ONNX_OPS
    assert set(data["notes"]) <= ONNX_OPS
    target = get_target(name)
    assert target.allow == (None if data["allow"] is None else frozenset(allow))
    assert target.forbid == frozenset(forbid)
    assert dict(target.notes) == data["notes"]


def test_generic_is_the_default_and_matches_default_forbidden() -> None:
    generic = get_target(None)
    assert DEFAULT_TARGET == "generic" and generic.name == "generic"
    assert generic.forbid == GENERIC_FORBIDDEN == DEFAULT_FORBIDDEN
    assert GENERIC_FORBIDDEN == {
        "Gather", "GatherElements", "GatherND", "Scatter", "ScatterElements", "ScatterND"
    }
    assert generic.allow is None and generic.int64


def test_no_profile_has_scatter_elements() -> None:
    # every published list lacks ScatterElements (TIDL maps only ScatterND, constrained);
    # GatherElements only RKNN-Toolkit2 2.x lists, GatherND only the Ethos-U85 (TOSA GATHER)
    for target in load_profiles().values():
        assert not target.allows("ScatterElements"), target.name
        assert not target.allows("Scatter"), target.name
        assert target.allows("GatherND") == (target.name == "ethos-u85"), target.name
        assert target.allows("GatherElements") == (target.name == "rknn2@2.x"), target.name


def test_ethos_u85_runs_what_the_u55_cannot() -> None:
    u55, u85 = get_target("ethos-u55"), get_target("ethos-u85")
    for op in ("Gather", "GatherND", "ScatterND", "Where", "Equal", "Less", "And"):
        assert not u55.allows(op) and u85.allows(op), op
    for op in ("GatherElements", "ScatterElements", "GridSample"):
        assert not u85.allows(op), op
    assert not u85.int64


def test_rknn2_versions_differ_where_their_tables_differ() -> None:
    old, new = get_target("rknn2@1.4.0"), get_target("rknn2@2.x")
    for op in ("GatherElements", "ScatterND", "LayerNormalization", "Erf", "Expand", "And"):
        assert not old.allows(op) and new.allows(op), op  # listed from 2.x (1.5.0, 2.1.0...)
    for op in ("Det", "ReduceSumSquare"):
        assert old.allows(op) and not new.allows(op), op  # "Not Supported" in 2.3.2
    for op in ("Gather",):
        assert old.allows(op) and new.allows(op)
    for op in ("GatherND", "ScatterElements"):
        assert not old.allows(op) and not new.allows(op)
    assert "2.3.2" in new.title and "1.4.0" in old.title


def test_a_bare_versioned_name_means_the_newest_and_says_so() -> None:
    t = get_target("rknn2")
    assert t.name == "rknn2@2.x" and t.allows("GatherElements")
    assert "'rknn2' means the newest packaged version, rknn2@2.x" in t.remarks[-1]
    assert get_target("RKNN2").name == "rknn2@2.x"
    r = subprocess.run([sys.executable, "-m", "fxlower", "targets"], capture_output=True,
                       text=True, check=True)
    assert "rknn2@2.x: Rockchip RKNN-Toolkit2 2.3.2" in r.stdout
    assert "[also 'rknn2', the newest version]" in r.stdout


def test_rknn2_facts() -> None:
    t = get_target("rknn2@1.4.0")
    assert t.allow is not None
    assert t.allows("Gather")
    for op in ["GatherElements", "GatherND", "ScatterND", "ScatterElements", "TopK", "NonZero",
               "Range", "OneHot", "Expand", "CumSum"]:
        assert op in t.forbid, op
    assert "bool/int8/float" in t.note("Cast")
    assert t.allows("Cast")
    # ops of opsets after 12 are not in the table, so not allowed
    assert not t.allows("LayerNormalization")


def test_kneron_facts() -> None:
    t = get_target("kneron")
    assert t.allows("Gather") and t.note("Gather") == "single index"
    for op in ["Equal", "Greater", "Less", "Where", "Cast", "OneHot", "Shape"]:
        assert not t.allows(op) and op in t.forbid, op
    assert t.allows("MatMul")
    assert "not supported on KL520" in t.note("MatMul")
    k520 = get_target("kneron-520")
    assert not k520.allows("MatMul") and "MatMul" in k520.forbid
    assert k520.allows("Gather") and k520.note("Gather") == "single index"
    # KL720 lacks Div: the family profile forbids it and says which chips have it
    assert not t.allows("Div") and "KL530/KL630/KL730: Y" in t.note("Div")


def test_ethos_u55_facts() -> None:
    t = get_target("ethos-u55")
    assert t.allow is None and t.int64 is False
    assert GENERIC_FORBIDDEN <= t.forbid
    for op in ["Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Where", "And", "Or",
               "Xor", "Not"]:
        assert op in t.forbid, op
    assert t.allows("Conv") and t.allows("MatMul")
    assert "int8" in t.note("MatMul")


def test_tidl_facts() -> None:
    t = get_target("tidl")
    assert t.allow is not None and not t.forbid
    assert t.allows("Gather") and "one-dimensional" in t.note("Gather")
    assert t.allows("ScatterND") and "int32" in t.note("ScatterND")
    for op in ["Slice", "Equal", "Where", "GatherElements"]:
        assert not t.allows(op), op


# ---------------------------------------------------------------------------------------------
# the Target API


def test_target_accepts_plain_sets_and_strings() -> None:
    t = Target(allow={"Add", "Relu"}, forbid=["Gather"])
    assert t.name == "custom"
    assert isinstance(t.allow, frozenset) and t.allow == {"Add", "Relu"}
    assert isinstance(t.forbid, frozenset) and t.forbid == {"Gather"}
    assert Target(allow="Add, Relu").allow == {"Add", "Relu"}
    assert Target(forbid={"ai.onnx::Gather"}).forbid == {"::Gather"}
    assert hash(t) == hash(Target(allow=frozenset({"Add", "Relu"}), forbid={"Gather"}))
    assert t == Target(allow=["Relu", "Add"], forbid=("Gather",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.int64 = False  # type: ignore[misc]
    with pytest.raises(ValueError):
        Target(allow={"Add", " "})
    with pytest.raises(TypeError):
        Target(forbid=[1])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        Target(int64="no")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Target(name="")


def test_allows_and_forbidden_in() -> None:
    t = Target(allow={"Add", "Gather", "com.acme::Fancy"}, forbid={"Gather"})
    assert t.allows("Add")
    assert not t.allows("Gather")  # forbid wins over allow
    assert not t.allows("Mul")
    assert t.allows("Fancy", "com.acme") and t.allows("com.acme::Fancy")
    assert not t.allows("Fancy")  # a qualified name matches its domain only
    assert t.forbidden_in(["Add", "Gather", "Mul"]) == {"Gather", "Mul"}
    generic = get_target("generic")
    assert generic.forbidden_in(["MatMul", "ScatterND", "Gather"]) == {"ScatterND", "Gather"}
    # a plain forbidden name matches any domain, as in the checker
    assert generic.forbids("Gather", "com.microsoft") and not generic.allows("com.microsoft::Gather")


def test_adjusted_extends_and_lifts() -> None:
    rknn = get_target("rknn2@1.4.0")
    assert rknn.adjusted() is rknn
    t = rknn.adjusted(allow={"Expand", "LayerNormalization"}, forbid="Where")
    assert t.name == "rknn2@1.4.0"
    assert t.allows("Expand") and t.allows("LayerNormalization")
    assert "Expand" not in t.forbid
    assert not t.allows("Where") and "Where" in t.forbid
    assert t.allows("Gather") and not t.allows("TopK")
    # without an allow list, --allow only lifts a forbidden op
    g = get_target("generic").adjusted(allow={"Gather"})
    assert g.allow is None and g.allows("Gather") and not g.allows("GatherND")
    assert not get_target("generic").adjusted(allow={"X"}, forbid={"X"}).allows("X")


def test_get_target() -> None:
    t = Target(name="mine", allow={"Add"})
    assert get_target(t) is t
    assert get_target("RKNN2@1.4.0").name == "rknn2@1.4.0"
    with pytest.raises(LoweringError) as info:
        get_target("rknn3")
    message = str(info.value)
    assert "'rknn3'" in message
    for name in PROFILES:
        assert name in message
    with pytest.raises(TypeError):
        get_target(3)  # type: ignore[arg-type]


def test_describe_names_source_date_int64_and_forbidden_ops() -> None:
    text = get_target("rknn2@1.4.0").describe()
    assert text.startswith("rknn2@1.4.0: ")
    assert "doc/RKNNToolKit2_OP_Support-1.4.0.md" in text
    assert "read on: " in text and "int64:   yes" in text
    assert "only these 78 ops" in text and "TopK" in text
    assert "int64:   no" in get_target("ethos-u55").describe()
    assert "every op outside the allow list" in get_target("tidl").describe()


# ---------------------------------------------------------------------------------------------
# op checks against profiles


@pytest.mark.parametrize("name", PROFILES)
def test_profile_flags_exactly_what_it_lacks(name: str) -> None:
    target = get_target(name)  # (ops with conditions: see test_conditions_*)
    allowed = sorted((target.allow or {"Add", "Conv", "Relu", "MatMul"}) - target.forbid
                     - set(target.conditions))
    assert check_model(_bag(allowed), target=name).ok
    forbidden = sorted(target.forbid)
    result = check_model(_bag(forbidden + allowed), target=name)
    assert [(v.op_type, v.reason) for v in result.violations] == [
        (op, "forbidden") for op in forbidden
    ]
    assert result.target == name
    if target.allow is not None:
        outside = sorted(ONNX_OPS - target.allow - target.forbid)
        result = check_model(_bag(outside), target=name)
        assert [(v.op_type, v.reason) for v in result.violations] == [
            (op, "not in allow list") for op in outside
        ]


def test_topk_under_rknn2() -> None:
    nodes = [
        helper.make_node("TopK", ["x", "k"], ["v", "i"], name="topk0", axis=1),
        helper.make_node("Gather", ["x", "i"], ["g"], name="gather0", axis=1),
        helper.make_node("Relu", ["v"], ["y"], name="relu0"),
    ]
    model = _model(
        nodes, [_vi("x")], [_vi("y", shape=[3, 2]), _vi("g", shape=[3, 3, 2])],
        initializers=[_const("k", [2])],
    )
    result = check_model(model, target="rknn2@1.4.0")
    assert result.violations == [Violation("TopK", "", "topk0", "graph")]
    assert result.format().splitlines()[-1] == (
        "<model>: FAILED: 1 violation (TopK x1) in 3 nodes, target rknn2@1.4.0"
    )
    # the default (generic) flags the Gather instead; rknn2 has Gather
    assert [v.op_type for v in check_model(model).violations] == ["Gather"]
    assert check_model(model, target="rknn2@1.4.0", allow={"TopK"}).ok


def test_equal_and_where_under_kneron() -> None:
    nodes = [
        helper.make_node("Equal", ["a", "b"], ["m"], name="eq0"),
        helper.make_node("Where", ["m", "a", "b"], ["w"], name="where0"),
        helper.make_node("MatMul", ["w", "c"], ["y"], name="mm0"),
    ]
    inputs = [_vi("a"), _vi("b"), _vi("c", shape=[4, 2])]
    model = _model(nodes, inputs, [_vi("y", shape=[3, 2])])
    result = check_model(model, target="kneron")
    assert [(v.op_type, v.node_name, v.reason) for v in result.violations] == [
        ("Equal", "eq0", "forbidden"), ("Where", "where0", "forbidden")
    ]
    result = check_model(model, target="kneron-520")
    assert [v.op_type for v in result.violations] == ["Equal", "Where", "MatMul"]
    assert check_model(model).ok  # generic has all three


def test_target_checks_subgraphs_and_functions() -> None:
    then_g = helper.make_graph([helper.make_node("Where", ["c", "x", "x"], ["t"], name="w_then")],
                               "then", [], [_vi("t")])
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["e"], name="id_else")],
                               "else", [], [_vi("e")])
    foo = helper.make_function("pkg", "Foo", ["a"], ["b"],
                               [helper.make_node("Less", ["a", "a"], ["b"], name="lt_fn")],
                               [helper.make_opsetid("", OPSET)])
    nodes = [
        helper.make_node("If", ["c"], ["y"], name="if0", then_branch=then_g, else_branch=else_g),
        helper.make_node("Foo", ["x"], ["z"], name="call", domain="pkg"),
    ]
    model = _model(nodes, [_vi("c", BOOL, []), _vi("x")], [_vi("y"), _vi("z", BOOL)],
                   functions=[foo])
    result = check_model(model, target="ethos-u55")
    assert [(v.op_type, v.where) for v in result.violations] == [
        ("Where", "graph/If 'if0'.then_branch"), ("Less", "function 'pkg::Foo'")
    ]


def test_check_file_and_testing_helper_take_a_target(tmp_path: Path) -> None:
    nodes = [helper.make_node("CumSum", ["x", "ax"], ["y"], name="cumsum0")]
    axis = helper.make_tensor("ax", INT64, [], [1])
    model = _model(nodes, [_vi("x")], [_vi("y")], initializers=[axis])
    path = tmp_path / "cumsum.onnx"
    path.write_bytes(model.SerializeToString())
    result = check_file(path, target="rknn2@1.4.0")
    assert result.violations == [Violation("CumSum", "", "cumsum0", "graph")]
    assert result.path == str(path) and result.target == "rknn2@1.4.0"
    assert check_file(path).ok
    assert check_file(path).format() == f"{path}: ok (1 node checked, no forbidden ops)"
    assert check_file(path, target="generic").format() == (
        f"{path}: ok (1 node checked, no forbidden ops, target generic)"
    )
    assert assert_no_forbidden_ops(path).ok
    with pytest.raises(AssertionError, match="forbidden op CumSum"):
        assert_no_forbidden_ops(path, target="rknn2@1.4.0")
    with pytest.raises(LoweringError, match="known targets"):
        check_file(path, target="nope")


# ---------------------------------------------------------------------------------------------
# int64 tensors


def test_int64_graph_input_and_output() -> None:
    nodes = [helper.make_node("Add", ["i", "i"], ["o"], name="add0")]
    model = _model(nodes, [_vi("i", INT64)], [_vi("o", INT64)])
    assert check_model(model, target="generic").ok
    result = check_model(model, target=NO_INT64)
    assert result.violations == [
        Violation("tensor", "", "", "graph", REASON_INT64, "'i' (graph input)"),
        Violation("Add", "", "add0", "graph", REASON_INT64, "'o' (graph output)"),
    ]
    lines = result.format().splitlines()
    assert lines[0] == "<model>: int64 tensor 'i' (graph input) in graph (target has no int64)"
    assert lines[-1] == (
        "<model>: FAILED: 2 violations (int64 tensor x2) in 1 node, target no-int64"
    )
    assert [v.is_int64 for v in result.violations] == [True, True]


def test_int64_initializer_unless_only_shape_data() -> None:
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape0"),
        helper.make_node("Unsqueeze", ["r", "axes"], ["u"], name="unsq0"),
        helper.make_node("Cast", ["u"], ["y"], name="cast0", to=FLOAT),
        helper.make_node("Add", ["bias", "bias"], ["b2"], name="addb"),
        helper.make_node("Cast", ["b2"], ["z"], name="castb", to=FLOAT),
    ]
    inits = [_const("shape", [4, 3]), _const("axes", [0]), _const("bias", [1, 2, 3])]
    model = _model(nodes, [_vi("x")], [_vi("y", shape=[1, 4, 3]), _vi("z", shape=[3])],
                   initializers=inits)
    result = check_model(model, target=NO_INT64)
    # the Reshape shape and Unsqueeze axes are int64 by the ONNX spec: not reported
    assert _int64_names(result) == ["bias"]
    assert result.violations[0].detail == "'bias' (initializer)"
    # an initializer that is also used as data is reported
    model.graph.node.append(helper.make_node("Add", ["axes", "axes"], ["a2"], name="adda"))
    assert _int64_names(check_model(model, target=NO_INT64)) == ["axes", "bias"]
    assert set(INT64_SHAPE_INPUTS["Slice"]) == {1, 2, 3, 4}


def test_int64_initializer_that_is_also_a_graph_input_is_reported() -> None:
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape0")]
    model = _model(nodes, [_vi("x"), _vi("shape", INT64, [2])], [_vi("y", shape=[4, 3])],
                   initializers=[_const("shape", [4, 3])])
    # an overridable initializer is runtime data, not a constant
    assert _int64_names(check_model(model, target=NO_INT64)) == ["shape"]


def test_cast_to_int64_and_int64_constants() -> None:
    nodes = [
        helper.make_node("Cast", ["x"], ["xi"], name="cast_i64", to=INT64),
        helper.make_node("Cast", ["x"], ["xf"], name="cast_f", to=FLOAT),
        helper.make_node("Cast", ["x"], ["x32"], name="cast_i32", to=INT32),
        helper.make_node("Constant", [], ["k"], name="const_k",
                         value=helper.make_tensor("kv", INT64, [1], [2])),
        helper.make_node("Equal", ["xi", "k"], ["m"], name="eq0"),
        helper.make_node("Constant", [], ["ax"], name="const_ax", value_ints=[0]),
        helper.make_node("Unsqueeze", ["m", "ax"], ["y"], name="unsq0"),
    ]
    model = _model(nodes, [_vi("x")], [_vi("y", BOOL, [1, 3, 4]), _vi("xf"), _vi("x32", INT32)])
    result = check_model(model, target="ethos-u55")
    int64 = [v for v in result.violations if v.is_int64]
    assert [(v.op_type, v.node_name, v.detail) for v in int64] == [
        ("Cast", "cast_i64", "'xi' (output of Cast 'cast_i64', to=INT64)"),
        ("Constant", "const_k", "'k' (value of Constant 'const_k')"),
    ]  # the Constant axes of the Unsqueeze are shape data
    assert [v.op_type for v in result.violations if not v.is_int64] == ["Equal"]
    assert not [v for v in check_model(model, target="generic").violations if v.is_int64]


def test_int64_inside_if_branch() -> None:
    then_g = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["t"], name="cast_then", to=INT64)],
        "then", [], [_vi("t", INT64)],
    )
    else_g = helper.make_graph(
        [helper.make_node("Constant", [], ["e"], name="const_else",
                          value=helper.make_tensor("ev", INT64, [3, 4], [0] * 12))],
        "else", [], [_vi("e", INT64)],
    )
    node = helper.make_node("If", ["c"], ["y"], name="if0", then_branch=then_g,
                            else_branch=else_g)
    model = _model([node], [_vi("c", BOOL, []), _vi("x")], [_vi("y", INT64)])
    result = check_model(model, target=NO_INT64)
    # (onnx.helper sorts attributes by name: else_branch comes first)
    assert [(v.where, v.op_type, v.detail) for v in result.violations] == [
        ("graph/If 'if0'.else_branch", "Constant", "'e' (value of Constant 'const_else')"),
        ("graph/If 'if0'.then_branch", "Cast", "'t' (output of Cast 'cast_then', to=INT64)"),
        ("graph", "If", "'y' (graph output)"),
    ]


def test_int64_in_value_info_loop_body_and_spec_outputs() -> None:
    keep = helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep")
    add = helper.make_node("Add", ["v_in", "v_in"], ["v_out"], name="add_body")
    body = helper.make_graph(
        [keep, add], "body",
        [_vi("iter", INT64, []), _vi("cond_in", BOOL, []), _vi("v_in")],
        [_vi("cond_out", BOOL, []), _vi("v_out")],
    )
    nodes = [
        helper.make_node("ArgMax", ["x"], ["am"], name="argmax0", axis=1),
        helper.make_node("Loop", ["", "cond", "x"], ["v"], name="loop0", body=body),
        helper.make_node("Identity", ["am"], ["am2"], name="id0"),
        helper.make_node("Cast", ["am2"], ["y"], name="cast0", to=FLOAT),
    ]
    model = _model(nodes, [_vi("x"), _vi("cond", BOOL, [])], [_vi("v"), _vi("y", shape=[3, 1])],
                   value_info=[_vi("am2", INT64, [3, 1])], validate=False)
    result = check_model(model, target=NO_INT64)
    assert [(v.where, v.detail) for v in result.violations] == [
        ("graph", "'am' (output 0 of ArgMax 'argmax0', int64 by the ONNX spec)"),
        ("graph/Loop 'loop0'.body", "'iter' (subgraph input)"),
        ("graph", "'am2' (value_info)"),
    ]
    assert result.violations[2].op_type == "Identity"  # the producer of the value


def test_int64_in_local_function_and_attribute_tensors() -> None:
    foo = helper.make_function(
        "pkg", "Foo", ["a"], ["b"],
        [helper.make_node("Cast", ["a"], ["b"], name="cast_fn", to=INT64)],
        [helper.make_opsetid("", OPSET)],
    )
    nodes = [
        helper.make_node("Foo", ["x"], ["f"], name="call", domain="pkg"),
        helper.make_node("ConstantOfShape", ["shp"], ["c"], name="cos0",
                         value=helper.make_tensor("cv", INT64, [1], [7])),
        helper.make_node("Custom", ["x"], ["q"], name="custom0", domain="acme",
                         table=helper.make_tensor("tv", INT64, [2], [1, 2])),
    ]
    model = _model(nodes, [_vi("x")], [_vi("f", INT64), _vi("c", INT64, [2])],
                   initializers=[_const("shp", [2])], functions=[foo], validate=False)
    result = check_model(model, target=NO_INT64)
    assert [(v.where, v.op_type, v.detail) for v in result.violations] == [
        ("graph", "ConstantOfShape", "'c' (attribute 'value' of ConstantOfShape 'cos0')"),
        ("graph", "Custom", "(attribute 'table' of Custom 'custom0')"),
        ("graph", "Foo", "'f' (graph output)"),
        ("function 'pkg::Foo'", "Cast", "'b' (output of Cast 'cast_fn', to=INT64)"),
    ]
    assert result.violations[1].domain == "acme"


def test_int64_sparse_initializer_and_nested_types() -> None:
    model = _model(
        [helper.make_node("Identity", ["s"], ["o"], name="id0")],
        [helper.make_tensor_sequence_value_info("s", INT64, [2])],
        [helper.make_tensor_sequence_value_info("o", FLOAT, [2])],
        validate=False,
    )
    values = helper.make_tensor("sp", INT64, [1], [5])
    indices = helper.make_tensor("sp_idx", INT64, [1], [0])
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [4]))
    model.graph.value_info.append(
        helper.make_value_info("m", helper.make_map_type_proto(INT64, helper.make_tensor_type_proto(FLOAT, [1])))
    )
    result = check_model(model, target=NO_INT64)
    assert [v.detail for v in result.violations] == [
        "'s' (graph input)", "'sp' (sparse initializer)", "'m' (value_info)"
    ]


def test_each_int64_tensor_is_reported_once() -> None:
    nodes = [helper.make_node("Cast", ["x"], ["y"], name="cast0", to=INT64)]
    model = _model(nodes, [_vi("x")], [_vi("y", INT64)], value_info=[_vi("y", INT64)],
                   validate=False)
    result = check_model(model, target=NO_INT64)
    assert [v.detail for v in result.violations] == ["'y' (output of Cast 'cast0', to=INT64)"]


def test_int64_in_a_real_export() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    from fxlower.api import onnx_export

    class Pick(torch.nn.Module):
        def forward(self, x: Any, idx: Any) -> Any:
            return torch.gather(x, 1, idx).reshape(-1)

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "pick.onnx"
        onnx_export(Pick().eval(), (torch.randn(2, 4), torch.tensor([[0, 1], [2, 3]])), path)
        result = check_file(path, target="ethos-u55")
    ops = [v.op_type for v in result.violations if not v.is_int64]
    assert "GatherElements" in ops
    names = _int64_names(result)
    assert "idx" in names
    assert all("(initializer)" not in v.detail for v in result.violations if v.is_int64), (
        "the reshape's shape initializer is shape data"
    )


def test_deeply_nested_type_is_an_error_not_a_miss() -> None:
    # built in place: protobuf's decoder (depth limit 100) refuses to copy such a type, so a
    # file cannot hold one; an in-memory model can
    model = _bag(["Identity"])
    tp = model.graph.input.add(name="deep").type
    for _ in range(70):
        tp = tp.sequence_type.elem_type
    tp.tensor_type.elem_type = INT64
    with pytest.raises(OnnxCheckError, match="types nested deeper than 64 levels"):
        check_model(model, target=NO_INT64)
    assert check_model(model).ok  # targets with int64 never look at types


# ---------------------------------------------------------------------------------------------
# fuzz: mutated bytes never escape as anything but OnnxCheckError, with every check on


def _fuzz_base() -> bytes:
    then_g = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["t"], name="cast_then", to=INT64)],
        "then", [], [_vi("t", INT64)],
    )
    else_g = helper.make_graph(
        [helper.make_node("Constant", [], ["e"], name="const_else", value_ints=[1, 2])],
        "else", [], [_vi("e", INT64, [2])],
    )
    foo = helper.make_function(
        "pkg", "Foo", ["a"], ["b"],
        [helper.make_node("ArgMax", ["a"], ["b"], name="am_fn")], [helper.make_opsetid("", OPSET)],
    )
    nodes = [
        helper.make_node("If", ["c"], ["y"], name="if0", then_branch=then_g, else_branch=else_g),
        helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape0"),
        helper.make_node("Foo", ["r"], ["f"], name="call", domain="pkg"),
    ]
    model = _model(nodes, [_vi("c", BOOL, []), _vi("x")], [_vi("y", INT64), _vi("f", INT64)],
                   initializers=[_const("shape", [12])], functions=[foo], validate=False)
    return model.SerializeToString()


_FUZZ_BYTES = _fuzz_base()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(_FUZZ_BYTES) - 1), st.integers(0, 255)), min_size=1,
        max_size=8,
    ),
    cut=st.integers(0, len(_FUZZ_BYTES)),
    name=st.sampled_from(["ethos-u55", "rknn2@1.4.0", "kneron", "tidl"]),
)
def test_fuzz_mutated_model_against_targets(
    tmp_path_factory: pytest.TempPathFactory, edits: list[tuple[int, int]], cut: int, name: str
) -> None:
    data = bytearray(_FUZZ_BYTES)
    for pos, value in edits:
        data[pos] = value
    path = tmp_path_factory.mktemp("fuzz") / "mutated.onnx"
    path.write_bytes(bytes(data[: max(cut, 1)]))
    try:
        result = check_file(path, target=name)
    except OnnxCheckError as e:
        assert str(path) in str(e)
    else:
        text = result.format()
        assert len(text.splitlines()) == (1 if result.ok else len(result.violations) + 1)


# ---------------------------------------------------------------------------------------------
# conditions (issue 15): checked per node in `check`, enforced in `lower`


def _gather_model(indices_shape: list[int], const_indices: bool = False) -> ModelProto:
    table = onnx.numpy_helper.from_array(np.zeros((30, 16), np.float16), "w")
    inits, inputs = [table], []
    if const_indices:
        inits.append(onnx.numpy_helper.from_array(np.zeros(indices_shape, np.int64), "i"))
    else:
        inputs.append(helper.make_tensor_value_info("i", INT64, indices_shape))
    g = helper.make_graph([helper.make_node("Gather", ["w", "i"], ["y"], axis=0, name="emb")],
                          "g", inputs, [helper.make_tensor_value_info("y", FLOAT16, None)],
                          initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])


def test_conditions_index_count_and_rank_are_checked_per_node() -> None:
    r = check_model(_gather_model([3, 40]), target="kneron")
    (v,) = r.violations
    assert v.reason == REASON_CONDITION and v.node_name == "emb"
    assert v.format() == ("op Gather (node 'emb') in graph breaks a condition: Gather with a "
                          "single index only (indices numel: 120)")
    assert check_model(_gather_model([1]), target="kneron").ok
    assert check_model(_gather_model([]), target="kneron-520").ok
    assert not check_model(_gather_model([2, 2], const_indices=True), target="kneron").ok
    (v,) = check_model(_gather_model([3, 40]), target="tidl").violations
    assert "one-dimensional" in v.detail and "indices rank: 2" in v.detail
    assert check_model(_gather_model([5]), target="tidl").ok
    assert check_model(_gather_model([3, 40]), target="rknn2@2.x").ok  # no condition there


def test_conditions_on_constness_are_checked_per_node_on_both_sides() -> None:
    """TIDL's table states constant indices on non-constant data; the kinds indices_const and
    data_const, each met and broken on a real file (the table is an initializer: constant)."""
    conds = {"Gather": (Condition("indices_const", True, "constant indices only"),
                        Condition("data_const", False, "non-constant data only"))}
    t = fxlower.Target(name="constness", forbid=set(), conditions=conds)
    runtime_ids = check_model(_gather_model([5]), target=t)  # a node reports its first broken one
    assert [v.detail for v in runtime_ids.violations] == [
        "constant indices only (indices const: False)"]
    const_ids = check_model(_gather_model([5], const_indices=True), target=t)
    assert [v.detail for v in const_ids.violations] == ["non-constant data only (data const: True)"]
    only_ids = fxlower.Target(name="ids", forbid=set(), conditions={"Gather": conds["Gather"][:1]})
    assert check_model(_gather_model([5], const_indices=True), target=only_ids).ok


def test_conditions_unknown_where_nothing_is_known_are_not_met() -> None:
    c = Condition("indices_max_elems", 1, "single index")
    assert c.broken(Facts()) == "single index (not known here: indices numel)"
    assert c.broken(Facts(indices_numel=1)) == ""
    assert Condition("data_const", False, "run-time data").broken(Facts(data_const=True))
    assert Condition("indices_const", True, "constant indices").broken(
        Facts(indices_const=False))
    with pytest.raises(ValueError, match="unknown condition kind"):
        Condition("indices_colour", 1, "?")


def test_conditions_decide_what_lower_keeps() -> None:
    class Embed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(3000, 16).half()

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.emb(ids)

    one = fxlower.lower(Embed().eval(), (torch.tensor([7]),), target="kneron")
    assert [s.reason for s in fxlower.report_of(one).skipped] == [
        "target 'kneron' runs Gather natively"]
    many = (torch.randint(0, 3000, (3, 40)),)
    # no longer kept as one Gather: lowered to 120 single-index Gathers (the chip's own op)
    model = Embed().eval()
    low = fxlower.lower(model, many, target="kneron")
    (a,) = fxlower.report_of(low).applied
    assert "120 piece(s) of at most 1 index" in a.detail
    assert torch.equal(low(*many), model(*many))
    host = fxlower.lower(Embed().eval(), many, target="kneron", embedding="host")
    report = fxlower.report_of(host)
    assert not report.remaining and report.host and report.host[0]["rows_shape"] == (3, 40, 16)
