"""Check an ONNX model for forbidden ops (by default the Gather and Scatter families), against a
target profile (:mod:`fxlower.targets`) if one is given.

The checker walks every node an ONNX runtime could execute:

* the main graph,
* every subgraph held in a node attribute (``If`` branches, ``Loop``/``Scan`` bodies, any
  attribute of type GRAPH or GRAPHS, arbitrarily nested up to :data:`MAX_SUBGRAPH_DEPTH`),
* every local function in ``model.functions`` (and the subgraphs inside their nodes),
* the graphs of ``model.training_info`` (``initialization`` and ``algorithm``).

It never runs ``onnx.checker``, shape inference or the model, and :func:`check_file` never
resolves external data: a tensor stored in an external file is never opened, whatever its
``location`` says.

Op names given to ``forbid``/``allow`` are matched as follows (the grammar and the matcher are in
:mod:`fxlower.opnames`; :func:`parse_op_name` and :func:`parse_op_list` are re-exported here):

* ``"Gather"`` (a plain name) matches a node of op_type ``Gather`` in *any* domain
  (``""``, ``"ai.onnx"``, ``"com.microsoft"``, ...), so a custom-domain copy of a forbidden op
  cannot slip through.  The one exception is a node that calls a local function of the model
  (its ``(domain, op_type, overload)`` names an entry of ``model.functions``): such a call is not
  the op itself, and the function's body is checked instead.  A local function declared in the
  default ONNX domain gets no such exception: a node ``Gather`` in domain ``""`` is always
  treated as the standard op.
* ``"domain::Op"`` matches only nodes of that domain, function calls included.  ``"::Op"`` and
  ``"ai.onnx::Op"`` both mean the default ONNX domain (``""`` and ``"ai.onnx"`` are the same
  domain).

A target (``target="rknn2"`` or a :class:`fxlower.targets.Target`) supplies the forbid and allow
lists, matched exactly as above.  A target without int64 (``Target.int64`` false) also makes every
int64 tensor type the walk can find a violation: graph and subgraph inputs, outputs, initializers
(dense and sparse), value_info, Constant values, tensor attributes (ConstantOfShape ``value``,
function attribute defaults), ``to``/``dtype`` attributes (Cast, EyeLike, Random*, Multinomial,
Bernoulli) and the outputs that are int64 by the ONNX spec (ArgMax, ArgMin, Shape, Size, NonZero,
TopK indices, NonMaxSuppression, Unique indices, MaxPool indices), in the main graph, subgraphs,
training graphs and local functions.  One exception: a constant (an initializer that is not a
graph input, or a Constant node's output) whose every use is an input the ONNX spec types as
int64 shape data (Reshape ``shape``, Slice ``starts``/``ends``/``axes``/``steps``, Squeeze and
Unsqueeze ``axes``, the Reduce ops' ``axes``, Expand ``shape``, Tile ``repeats``, Pad ``pads``,
TopK ``K``, ... see :data:`INT64_SHAPE_INPUTS`) is not reported: every exported model has them,
the ONNX spec types them int64 (some also int32), and a compiler folds them.  The same tensor
computed at run time (a Cast to int64 feeding a Reshape) is reported.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import onnx
from google.protobuf.message import Error as ProtobufError
from google.protobuf.message import Message
from onnx import AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto

from fxlower.errors import OnnxCheckError
from fxlower.opnames import (
    DEFAULT_DOMAINS,
    DEFAULT_FORBIDDEN,
    Matcher,
    norm_domain,
    parse_op_list,
    parse_op_name,
)
from fxlower.targets import Facts, Target, get_target

__all__ = [
    "DEFAULT_FORBIDDEN",
    "INT64_SHAPE_INPUTS",
    "MAX_SUBGRAPH_DEPTH",
    "CheckResult",
    "Violation",
    "check_file",
    "check_model",
    "parse_op_list",
    "parse_op_name",
]

MAX_SUBGRAPH_DEPTH = 64
"""Subgraphs nested deeper than this make :func:`check_model` raise :class:`OnnxCheckError`."""

REASON_FORBIDDEN = "forbidden"
REASON_NOT_ALLOWED = "not in allow list"
REASON_INT64 = "int64 tensor (target has no int64)"
REASON_CONDITION = "outside the target's condition"

INT64_SHAPE_INPUTS: dict[str, frozenset[int]] = {
    op: frozenset(positions)
    for op, positions in {
        "Reshape": (1,), "Slice": (1, 2, 3, 4), "Squeeze": (1,), "Unsqueeze": (1,),
        "Expand": (1,), "Tile": (1,), "Pad": (1, 3), "ConstantOfShape": (0,), "Resize": (3,),
        "Split": (1,), "TopK": (1,), "CumSum": (1,), "Trilu": (1,), "OneHot": (1,),
        "CenterCropPad": (1,), "Col2Im": (1, 2), "MaxUnpool": (2,), "NonMaxSuppression": (2,),
        "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,), "ReduceMin": (1,),
        "ReduceProd": (1,), "ReduceL1": (1,), "ReduceL2": (1,), "ReduceLogSum": (1,),
        "ReduceLogSumExp": (1,), "ReduceSumSquare": (1,),
    }.items()
}
"""Inputs (by position) of default-domain ops that hold int64 shape data (shapes, axes, pads,
repeats, counts).  A constant used only at these positions is not reported for an int64-less
target (see the module docstring)."""

_INT64_OUTPUTS: dict[str, tuple[int, ...]] = {
    "ArgMax": (0,), "ArgMin": (0,), "Shape": (0,), "Size": (0,), "NonZero": (0,),
    "TopK": (1,), "NonMaxSuppression": (0,), "Unique": (1, 2, 3), "MaxPool": (1,),
}
"""Outputs (by position) of default-domain ops that are int64 whatever the inputs are."""

_DTYPE_ATTRS: dict[str, str] = {
    "Cast": "to", "EyeLike": "dtype", "RandomNormal": "dtype", "RandomUniform": "dtype",
    "RandomNormalLike": "dtype", "RandomUniformLike": "dtype", "Multinomial": "dtype",
    "Bernoulli": "dtype",
}
"""Default-domain ops whose attribute names the element type of their (first) output."""


@dataclass(frozen=True)
class Violation:
    """One node whose op is forbidden (or, in allow-list mode, not allowed), or one int64 tensor.

    ``where`` is a readable path to the graph holding the node, e.g. ``"graph"``,
    ``"graph/If 'node_x'.then_branch"``, ``"graph/Loop 'l'.body/If #0.else_branch"`` (an unnamed
    node is shown by its op type and index) or ``"function 'pkg.mod::Foo'"``.  Names read from
    the file are made printable: invalid UTF-8 and control characters appear as escapes.

    For an int64 tensor (``reason`` :data:`REASON_INT64`) ``op_type``/``domain``/``node_name``
    name the node that produces it in that graph (``op_type`` ``"tensor"`` and no node name for
    an input, initializer or a value no node of that graph produces) and ``detail`` says which
    tensor and how it was found, e.g. ``"'idx' (graph input)"``.
    """

    op_type: str
    domain: str
    node_name: str
    where: str
    reason: str = REASON_FORBIDDEN
    detail: str = ""

    @property
    def qualified_op(self) -> str:
        """``"Gather"`` for an op of the default ONNX domain, else ``"domain::Op"``."""
        return _qualified(self.domain, self.op_type)

    @property
    def is_int64(self) -> bool:
        """True for an int64 tensor (reported for a target without int64), not an op."""
        return self.reason == REASON_INT64

    def format(self) -> str:
        """One line: op, node name, location and why it is a violation."""
        if self.is_int64:
            return f"int64 tensor {self.detail} in {self.where} (target has no int64)"
        node = f"node '{self.node_name}'" if self.node_name else "unnamed node"
        if self.reason == REASON_FORBIDDEN:
            return f"forbidden op {self.qualified_op} ({node}) in {self.where}"
        if self.reason == REASON_CONDITION:
            return f"op {self.qualified_op} ({node}) in {self.where} breaks a condition: {self.detail}"
        return f"op {self.qualified_op} ({node}) in {self.where} is {self.reason}"


@dataclass
class CheckResult:
    """What :func:`check_model` / :func:`check_file` found.

    ``op_counts`` counts every node walked by qualified op name (``"Gather"``,
    ``"com.microsoft::FusedMatMul"``, ``"pkg::MyFunc"``); ``n_nodes`` is their total.
    ``target`` is the name of the target profile the model was checked against, when one was
    given (``None`` for the default).
    """

    path: str | None
    violations: list[Violation] = field(default_factory=list)
    op_counts: dict[str, int] = field(default_factory=dict)
    n_nodes: int = 0
    target: str | None = None

    @property
    def ok(self) -> bool:
        """True when no node is a violation."""
        return not self.violations

    def to_dict(self) -> dict[str, object]:
        """The verdict as data (`fxlower check --format json`): file, target, ok, node count,
        op counts and each violation's op, domain, node, where (subgraph path), reason and
        detail (the condition it breaks, or the int64 tensor)."""
        return {
            "file": self.path, "target": self.target, "ok": self.ok, "nodes": self.n_nodes,
            "op_counts": dict(self.op_counts),
            "violations": [{"op": v.qualified_op, "domain": v.domain, "node": v.node_name,
                            "where": v.where, "reason": v.reason, "detail": v.detail,
                            "message": v.format()} for v in self.violations],
        }

    def format(self) -> str:
        """A report: one line per violation, then a summary line; each line starts with the path."""
        label = self.path if self.path is not None else "<model>"
        nodes = f"{self.n_nodes} node{'' if self.n_nodes == 1 else 's'}"
        against = f", target {self.target}" if self.target is not None else ""
        if self.ok:
            return f"{label}: ok ({nodes} checked, no forbidden ops{against})"
        lines = [f"{label}: {v.format()}" for v in self.violations]
        per_op = Counter(
            "int64 tensor" if v.is_int64 else v.qualified_op for v in self.violations
        )
        summary = ", ".join(f"{op} x{n}" for op, n in sorted(per_op.items()))
        n = len(self.violations)
        lines.append(
            f"{label}: FAILED: {n} violation{'' if n == 1 else 's'} ({summary}) in {nodes}"
            f"{against}"
        )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the walk


def check_model(
    model: ModelProto,
    *,
    forbid: Iterable[str] | str | None = None,
    allow: Iterable[str] | str | None = None,
    target: str | Target | None = None,
) -> CheckResult:
    """Find every node of ``model`` whose op is forbidden, or not allowed.

    ``target``: a profile name (``"rknn2"``, ``"kneron"``, ``"ethos-u55"``, ``"tidl"``,
    ``"generic"``; ``fxlower targets`` lists them) or a :class:`fxlower.targets.Target`.  Its
    forbid and allow lists are checked as below, and a target without int64 makes every int64
    tensor a violation too (see the module docstring).  Without ``target``, ``forbid`` and
    ``allow`` the ``generic`` profile applies: the Gather and Scatter families are forbidden.

    ``forbid``: op names.  A node matching one of them is a violation.  Without ``target`` this
    replaces the default (:data:`DEFAULT_FORBIDDEN`; pass ``()`` to forbid nothing); with a
    target the names are forbidden on top of the target's.

    ``allow``: without ``target``, allow-list mode: a node matching none of these names is a
    violation too (``forbid`` still applies, so allow-list an op *and* forbid it and it is a
    violation).  With a target, the names are taken off the target's forbid list and added to
    its allow list (if it has one): they override the profile.  A node calling a local function
    is not itself checked against the allow list; the function's body is.

    See the module docstring for how names match domains.  A comma-separated string is accepted
    for either list.  Each node gives at most one violation; violations come in walk order
    (main graph, depth first, then training graphs, then local functions), then the int64
    tensors (in the same order of graphs).

    Raises :class:`OnnxCheckError` if subgraphs are nested deeper than
    :data:`MAX_SUBGRAPH_DEPTH` levels, ``TypeError`` if ``model`` is not a ``ModelProto``,
    ``ValueError`` for an empty op name and :class:`fxlower.errors.LoweringError` for an
    unknown target name.
    """
    if not isinstance(model, ModelProto):
        raise TypeError(f"check_model expects an onnx.ModelProto, got {type(model).__name__}")
    resolved = _resolve_target(target, forbid=forbid, allow=allow)
    forbidden: Matcher = resolved._forbid_matcher
    allowed: Matcher | None = resolved._allow_matcher

    functions = {
        (norm_domain(_text(f.domain)), _text(f.name), _text(getattr(f, "overload", "")))
        for f in model.functions
    }
    counts: Counter[str] = Counter()
    violations: list[Violation] = []
    n_nodes = 0
    facts: NodeFacts | None = None

    for node, where in _iter_model_nodes(model):
        n_nodes += 1
        domain, op_type = _text(node.domain), _text(node.op_type)
        counts[_qualified(domain, op_type)] += 1
        calls_function = norm_domain(domain) != "" and (
            (norm_domain(domain), op_type, _text(getattr(node, "overload", ""))) in functions
        )
        if forbidden.matches(domain, op_type, calls_function=calls_function):
            reason = REASON_FORBIDDEN
        elif (
            allowed is not None
            and not calls_function
            and not allowed.matches(domain, op_type, calls_function=False)
        ):
            reason = REASON_NOT_ALLOWED
        elif norm_domain(domain) == "" and op_type in resolved.conditions:
            if facts is None:
                facts = NodeFacts(model)
            why = resolved.broken_condition(op_type, facts.of(node, where))
            if why:
                violations.append(Violation(op_type, domain, _text(node.name), where,
                                            REASON_CONDITION, why))
            continue
        else:
            continue
        violations.append(Violation(op_type, domain, _text(node.name), where, reason))

    if not resolved.int64:
        violations.extend(_int64_violations(model))

    return CheckResult(
        path=None, violations=violations, op_counts=dict(counts), n_nodes=n_nodes,
        target=None if target is None else resolved.name,
    )


class NodeFacts:
    """What conditions read of a gather/scatter node (input 0 the data, input 1 the
    indices): static shapes from ONNX shape inference, run once on a copy that declares the
    initializers as typed inputs (small ones stay, for shape arithmetic; nothing external
    is read), and constness (an initializer or a Constant node's output). Nodes inside
    subgraphs and functions are judged from what is not known there: nothing."""

    def __init__(self, model: ModelProto) -> None:
        import math

        from onnx.external_data_helper import uses_external_data

        g = model.graph
        light = light_copy(model, lambda t: t if math.prod(t.dims) <= 1024
                           and not uses_external_data(t) else None)
        self.ranks: dict[str, list[int | None]] = {}
        try:
            inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False).graph
            for vi in list(inferred.input) + list(inferred.value_info) + list(inferred.output):
                tt = vi.type.tensor_type
                if vi.type.HasField("tensor_type") and tt.HasField("shape"):
                    self.ranks[vi.name] = [d.dim_value if d.HasField("dim_value") else None
                                           for d in tt.shape.dim]
        except Exception:  # noqa: BLE001 - without inference, shapes stay unknown
            pass
        for t in g.initializer:
            self.ranks[t.name] = list(t.dims)
        self.const = {t.name for t in g.initializer} | {
            o for n in g.node if n.op_type == "Constant" for o in n.output}

    def of(self, node: NodeProto, where: str) -> Facts:
        if where != "graph" or len(node.input) < 2:
            return Facts()
        data, idx = node.input[0], node.input[1]
        dims = self.ranks.get(idx)
        numel = None
        if dims is not None and all(d is not None for d in dims):
            numel = 1
            for d in dims:
                numel *= d or 0
        return Facts(indices_numel=numel, indices_rank=None if dims is None else len(dims),
                     indices_const=idx in self.const, data_const=data in self.const)


def _resolve_target(
    target: str | Target | None,
    *,
    forbid: Iterable[str] | str | None,
    allow: Iterable[str] | str | None,
) -> Target:
    """The one Target whose lists :func:`check_model` matches (see its docstring)."""
    if target is None:
        if forbid is None and allow is None:
            return get_target(None)
        return Target(
            name="custom",
            allow=allow,  # type: ignore[arg-type]  # Target normalises iterables and strings
            forbid=DEFAULT_FORBIDDEN if forbid is None else forbid,  # type: ignore[arg-type]
        )
    return get_target(target).adjusted(allow=allow, forbid=forbid)


def _iter_model_nodes(model: ModelProto) -> Iterator[tuple[NodeProto, str]]:
    """Yield ``(node, where)`` for every node of the model, subgraphs and functions included."""
    if model.HasField("graph"):
        yield from _iter_graph(model.graph, "graph", 0)
    for i, info in enumerate(model.training_info):
        for part in ("initialization", "algorithm"):
            if info.HasField(part):
                yield from _iter_graph(getattr(info, part), f"training_info[{i}].{part}", 0)
    for function in model.functions:
        name = _qualified(_text(function.domain), _text(function.name), keep_default=True)
        overload = _text(getattr(function, "overload", ""))
        where = f"function '{name}{':' + overload if overload else ''}'"
        yield from _iter_nodes(function.node, where, 0)


def _iter_graph(graph: GraphProto, where: str, depth: int) -> Iterator[tuple[NodeProto, str]]:
    yield from _iter_nodes(graph.node, where, depth)


def _iter_nodes(
    nodes: Iterable[NodeProto], where: str, depth: int
) -> Iterator[tuple[NodeProto, str]]:
    if depth > MAX_SUBGRAPH_DEPTH:
        root = where.split("/", 1)[0]
        raise OnnxCheckError(
            f"subgraphs nested deeper than {MAX_SUBGRAPH_DEPTH} levels (in {root})"
        )
    for index, node in enumerate(nodes):
        yield node, where
        name = _text(node.name)
        label = f"{_text(node.op_type)} '{name}'" if name else f"{_text(node.op_type)} #{index}"
        for attr_name, subgraph in _subgraphs(node):
            yield from _iter_graph(subgraph, f"{where}/{label}.{attr_name}", depth + 1)


def _subgraphs(node: NodeProto) -> Iterator[tuple[str, GraphProto]]:
    """Every graph held by the node's attributes.

    Looks at the ``g``/``graphs`` fields whatever the attribute's declared ``type`` is, so a
    graph cannot be hidden behind a wrong or missing type tag.
    """
    for attr in node.attribute:
        name = _text(attr.name)
        if attr.type == AttributeProto.GRAPH or attr.HasField("g"):
            yield name, attr.g
        for i, graph in enumerate(attr.graphs):
            yield f"{name}[{i}]", graph


# ---------------------------------------------------------------------------------------------
# int64 tensors (for targets without int64)

_INT64 = TensorProto.INT64
_OUTPUT_USE = ("", "<graph output>", -1)


def _int64_violations(model: ModelProto) -> list[Violation]:
    """One violation per int64 tensor of the model (see the module docstring)."""
    uses = _tensor_uses(model)
    found: list[Violation] = []
    if model.HasField("graph"):
        _int64_in_graph(model.graph, "graph", 0, uses, found, main=True)
    for i, info in enumerate(model.training_info):
        for part in ("initialization", "algorithm"):
            if info.HasField(part):
                where = f"training_info[{i}].{part}"
                _int64_in_graph(getattr(info, part), where, 0, uses, found, main=False)
    for function in model.functions:
        name = _qualified(_text(function.domain), _text(function.name), keep_default=True)
        overload = _text(getattr(function, "overload", ""))
        where = f"function '{name}{':' + overload if overload else ''}'"
        scope = _Int64Scope(where, uses, found, constants=set())
        for attr in function.attribute_proto:  # default values of the function's attributes
            scope.attribute(attr, f"default of attribute '{_text(attr.name)}'", "tensor", "", "")
        scope.nodes(function.node, 0)
        for vi in function.value_info:
            scope.typed(vi, "value_info")
    return found


def _tensor_uses(model: ModelProto) -> dict[str, list[tuple[str, str, int]]]:
    """For every tensor name: each ``(domain, op_type, input position)`` that reads it.

    Graph outputs count as a use (``"<graph output>"``).  Names are collected over the whole
    model, so a name reused in another scope only makes its uses look more varied (and an
    exemption less likely), never less.
    """
    uses: dict[str, list[tuple[str, str, int]]] = {}
    for node, _ in _iter_model_nodes(model):
        domain, op_type = norm_domain(_text(node.domain)), _text(node.op_type)
        for i, name in enumerate(node.input):
            if name:
                uses.setdefault(_text(name), []).append((domain, op_type, i))
        for _, sub in _subgraphs(node):
            for out in sub.output:
                uses.setdefault(_text(out.name), []).append(_OUTPUT_USE)
    graphs = [model.graph] if model.HasField("graph") else []
    graphs += [getattr(t, p) for t in model.training_info for p in ("initialization", "algorithm")]
    for graph in graphs:
        for out in graph.output:
            uses.setdefault(_text(out.name), []).append(_OUTPUT_USE)
    for function in model.functions:
        for out in function.output:
            uses.setdefault(_text(out), []).append(_OUTPUT_USE)
    return uses


def _shape_data_only(name: str, uses: dict[str, list[tuple[str, str, int]]]) -> bool:
    """True when every use of ``name`` is an int64 shape-data input (:data:`INT64_SHAPE_INPUTS`)."""
    found = uses.get(name)
    return found is not None and bool(found) and all(
        domain == "" and position in INT64_SHAPE_INPUTS.get(op_type, ())
        for domain, op_type, position in found
    )


def _int64_in_graph(
    graph: GraphProto,
    where: str,
    depth: int,
    uses: dict[str, list[tuple[str, str, int]]],
    found: list[Violation],
    *,
    main: bool,
) -> None:
    if depth > MAX_SUBGRAPH_DEPTH:
        root = where.split("/", 1)[0]
        raise OnnxCheckError(
            f"subgraphs nested deeper than {MAX_SUBGRAPH_DEPTH} levels (in {root})"
        )
    inputs = {_text(vi.name) for vi in graph.input}
    constants = {_text(t.name) for t in graph.initializer} - inputs
    constants |= {
        _text(n.output[0]) for n in graph.node
        if norm_domain(_text(n.domain)) == "" and _text(n.op_type) == "Constant" and n.output
    }
    scope = _Int64Scope(where, uses, found, constants=constants)
    kind = "graph" if main else "subgraph"
    for vi in graph.input:
        scope.typed(vi, f"{kind} input")
    for tensor in graph.initializer:
        if tensor.data_type == _INT64:
            scope.report(_text(tensor.name), "initializer", "tensor", "", "", constant=True)
    for sparse in graph.sparse_initializer:
        if sparse.values.data_type == _INT64:
            scope.report(_text(sparse.values.name), "sparse initializer", "tensor", "", "",
                         constant=True)
    scope.nodes(graph.node, depth)
    for vi in graph.value_info:
        scope.typed(vi, "value_info")
    for vi in graph.output:
        scope.typed(vi, f"{kind} output")


class _Int64Scope:
    """The int64 findings of one graph or function body (each tensor reported once)."""

    def __init__(
        self,
        where: str,
        uses: dict[str, list[tuple[str, str, int]]],
        found: list[Violation],
        *,
        constants: set[str],
    ) -> None:
        self.where = where
        self.uses = uses
        self.found = found
        self.constants = constants
        self.reported: set[str] = set()
        self.producers: dict[str, tuple[str, str, str]] = {}

    def report(
        self, name: str, how: str, op_type: str, domain: str, node_name: str,
        *, constant: bool = False,
    ) -> None:
        if name in self.reported:
            return
        self.reported.add(name)
        if (constant or name in self.constants) and _shape_data_only(name, self.uses):
            return  # int64 shape data the ONNX spec requires (see the module docstring)
        shown = f"'{name}' ({how})" if name else f"({how})"
        self.found.append(Violation(op_type, domain, node_name, self.where, REASON_INT64, shown))

    def typed(self, vi: onnx.ValueInfoProto, how: str) -> None:
        name = _text(vi.name)
        if name not in self.reported and _type_has_int64(vi.type):
            op_type, domain, node_name = self.producers.get(name, ("tensor", "", ""))
            self.report(name, how, op_type, domain, node_name)

    def nodes(self, nodes: Iterable[NodeProto], depth: int) -> None:
        for index, node in enumerate(nodes):
            domain, op_type, name = _text(node.domain), _text(node.op_type), _text(node.name)
            label = f"{op_type} '{name}'" if name else f"{op_type} #{index}"
            outputs = [_text(o) for o in node.output]
            for out in outputs:
                if out:
                    self.producers[out] = (op_type, domain, name)
            first = outputs[0] if outputs else ""
            standard = norm_domain(domain) == ""
            for attr in node.attribute:
                attr_name = _text(attr.name)
                if standard and attr_name == _DTYPE_ATTRS.get(op_type) and attr.i == _INT64:
                    self.report(first, f"output of {label}, {attr_name}=INT64", op_type, domain,
                                name)
                elif standard and op_type == "Constant" and attr_name in ("value_int", "value_ints"):
                    self.report(first, f"value of {label}", op_type, domain, name, constant=True)
                else:
                    how = (f"value of {label}" if standard and op_type == "Constant"
                           else f"attribute '{attr_name}' of {label}")
                    self.attribute(attr, how, op_type, domain, name, output=first)
            if standard:
                for position in _INT64_OUTPUTS.get(op_type, ()):
                    if position < len(outputs) and outputs[position]:
                        self.report(
                            outputs[position],
                            f"output {position} of {label}, int64 by the ONNX spec",
                            op_type, domain, name,
                        )
            for attr_name, subgraph in _subgraphs(node):
                _int64_in_graph(subgraph, f"{self.where}/{label}.{attr_name}", depth + 1,
                                self.uses, self.found, main=False)

    def attribute(
        self, attr: AttributeProto, how: str, op_type: str, domain: str, node_name: str,
        *, output: str = "",
    ) -> None:
        """Tensor, sparse-tensor and type attributes holding int64 (any op, any domain)."""
        tensors = ([attr.t] if attr.HasField("t") else []) + list(attr.tensors)
        sparse = ([attr.sparse_tensor] if attr.HasField("sparse_tensor") else [])
        sparse += list(attr.sparse_tensors)
        types = ([attr.tp] if attr.HasField("tp") else []) + list(attr.type_protos)
        if not (
            any(t.data_type == _INT64 for t in tensors)
            or any(t.values.data_type == _INT64 for t in sparse)
            or any(_type_has_int64(t) for t in types)
        ):
            return
        standard = norm_domain(domain) == ""
        if standard and op_type in ("Constant", "ConstantOfShape") and output:
            # the value is the output tensor's; a Constant's output is a constant
            self.report(output, how, op_type, domain, node_name, constant=op_type == "Constant")
        elif how not in self.reported:  # any other attribute is reported as itself
            self.reported.add(how)
            self.found.append(
                Violation(op_type, domain, node_name, self.where, REASON_INT64, f"({how})")
            )


def _type_has_int64(tp: onnx.TypeProto, depth: int = 0) -> bool:
    """True when the type is, or contains (sequence, map, optional), an int64 tensor."""
    if depth > MAX_SUBGRAPH_DEPTH:  # never let a deep type hide what it holds
        raise OnnxCheckError(f"types nested deeper than {MAX_SUBGRAPH_DEPTH} levels")
    which = tp.WhichOneof("value")
    if which == "tensor_type":
        return tp.tensor_type.elem_type == _INT64
    if which == "sparse_tensor_type":
        return tp.sparse_tensor_type.elem_type == _INT64
    if which == "sequence_type":
        return _type_has_int64(tp.sequence_type.elem_type, depth + 1)
    if which == "optional_type":
        return _type_has_int64(tp.optional_type.elem_type, depth + 1)
    if which == "map_type":
        return tp.map_type.key_type == _INT64 or _type_has_int64(
            tp.map_type.value_type, depth + 1
        )
    return False


# ---------------------------------------------------------------------------------------------
# helpers


def _qualified(domain: str, op_type: str, *, keep_default: bool = False) -> str:
    if not keep_default and domain in DEFAULT_DOMAINS:
        return op_type
    return f"{domain}::{op_type}"


def _text(value: str | bytes) -> str:
    """A printable, single-line rendering of a string field read from a (possibly hostile) file.

    protobuf (upb, proto2 syntax) hands back ``bytes`` instead of ``str`` for a string field that
    is not valid UTF-8; those bytes are decoded with backslash escapes.  Control characters
    (newlines, ANSI escapes, ...) are escaped so a report line cannot be forged or hidden.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="backslashreplace")
    if value.isprintable():
        return value
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in value
    )


# ---------------------------------------------------------------------------------------------
# files


def check_file(
    path: str | os.PathLike[str],
    *,
    forbid: Iterable[str] | str | None = None,
    allow: Iterable[str] | str | None = None,
    target: str | Target | None = None,
) -> CheckResult:
    """Read the ONNX file at ``path`` and :func:`check_model` it (same ``forbid``, ``allow``
    and ``target``).

    The file is always decoded as binary protobuf (whatever its extension: onnx would otherwise
    pick a JSON or text parser for ``.json``/``.textproto``/``.onnxtxt``) with
    ``load_external_data=False``, so no external-data file is ever opened.  Only regular files
    are read (a FIFO or device such as ``/dev/zero`` would block or never end).

    Every failure to read or decode the file raises :class:`OnnxCheckError` naming the path and
    the cause: missing file, directory, unreadable, empty, not protobuf, truncated, nested too
    deeply for the protobuf decoder, or a protobuf message that is not an ONNX model (no graph).
    """
    shown = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        raise OnnxCheckError(f"{shown}: no such file") from e
    except OSError as e:
        raise OnnxCheckError(f"{shown}: cannot read file: {e.strerror or e}") from e
    if stat.S_ISDIR(st.st_mode):
        raise OnnxCheckError(f"{shown}: is a directory, not an ONNX file")
    if not stat.S_ISREG(st.st_mode):
        raise OnnxCheckError(f"{shown}: not a regular file")
    if st.st_size == 0:
        raise OnnxCheckError(f"{shown}: file is empty, not an ONNX model")

    try:
        model = onnx.load(path, format="protobuf", load_external_data=False)
    except OSError as e:
        raise OnnxCheckError(f"{shown}: cannot read file: {e.strerror or e}") from e
    except ProtobufError as e:
        raise OnnxCheckError(f"{shown}: not a valid ONNX model: {_decode_cause(e)}") from e
    except Exception as e:  # hostile input must never escape as anything but OnnxCheckError
        raise OnnxCheckError(f"{shown}: not a valid ONNX model: {type(e).__name__}: {e}") from e

    if not model.HasField("graph"):
        raise OnnxCheckError(
            f"{shown}: not an ONNX model: the file decodes as protobuf but holds no graph"
        )
    validate(model, os.path.dirname(os.path.abspath(path)), shown)
    try:
        result = check_model(model, forbid=forbid, allow=allow, target=target)
    except OnnxCheckError as e:
        raise OnnxCheckError(f"{shown}: {e}") from e
    result.path = shown
    return result


_MAX_ELEMS = 2**62  # no tensor a file can mean holds more elements


def validate(model: ModelProto, folder: str, shown: str) -> None:
    """Judge only a valid file: raise OnnxCheckError naming the first problem of a model
    onnx's own checker rejects, of an external-data reference (absolute, leaving `folder`,
    missing, or shorter than the tensor it declares: the file is only stat'ed, never read),
    or of a tensor declaring more elements than any file could hold. The checker runs on a
    copy whose external initializers are declared inputs instead (it would otherwise look for
    their files relative to the working directory)."""
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    base = os.path.realpath(folder)
    external: set[str] = set()
    for t in _get_all_tensors(model):
        numel = 1
        for d in t.dims:
            if d < 0:
                raise OnnxCheckError(f"{shown}: tensor '{t.name}' declares a negative dim {d}")
            numel *= d
        if numel > _MAX_ELEMS:
            raise OnnxCheckError(f"{shown}: tensor '{t.name}' declares {numel:,} elements "
                                 f"(dims {list(t.dims)}), more than any file can hold")
        if not uses_external_data(t):
            continue
        external.add(t.name)
        info = ExternalDataInfo(t)
        loc = info.location
        real = os.path.realpath(os.path.join(base, loc))
        if not loc or os.path.isabs(loc) or os.path.commonpath([base, real]) != base:
            raise OnnxCheckError(f"{shown}: tensor '{t.name}' keeps its data at '{loc}', "
                                 "outside the model's folder")
        try:
            size = os.stat(real).st_size
        except OSError as e:
            raise OnnxCheckError(f"{shown}: tensor '{t.name}': external data file '{loc}' "
                                 "is missing") from e
        itemsize = _ITEMSIZE.get(t.data_type)
        need = numel * itemsize if itemsize else None
        length = info.length if info.length else need
        if need is not None and length is not None and length != need:
            raise OnnxCheckError(f"{shown}: tensor '{t.name}' declares {need:,} bytes of data "
                                 f"(dims {list(t.dims)}) but its external data has {length:,}")
        if length is not None and (info.offset or 0) + length > size:
            raise OnnxCheckError(f"{shown}: tensor '{t.name}': external data file '{loc}' holds "
                                 f"{size:,} bytes, the tensor needs bytes up to "
                                 f"{(info.offset or 0) + length:,}")
    light = light_copy(model, lambda t: None if t.name in external else t)
    try:
        onnx.checker.check_model(light)
    except Exception as e:  # noqa: BLE001 - the checker's own words, first line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise OnnxCheckError(f"{shown}: not a valid ONNX model (onnx.checker): {first}") from e


def light_copy(model: ModelProto, inline: Callable[[TensorProto], TensorProto | None], *,
               nodes: Iterable[NodeProto] | None = None,
               extra: Iterable[TensorProto] = ()) -> ModelProto:
    """`model` without its bulk, for onnx's checker and shape inference: every field as it
    is but the main graph's nodes (`nodes`, default the graph's own) and initializers. An
    initializer stays as `inline(t)` returns it, or, when that is None, is declared as a
    typed graph input instead (once: files of old IR versions list initializers as inputs
    already); `extra` initializers are added (values a caller knows)."""
    light = ModelProto()
    _copy_fields(model, light, skip=("graph",))
    g = light.graph
    _copy_fields(model.graph, g, skip=("node", "initializer"))
    g.node.extend(model.graph.node if nodes is None else nodes)
    declared = {i.name for i in g.input}
    for t in model.graph.initializer:
        kept = inline(t)
        if kept is not None:
            g.initializer.append(kept)
        elif t.name not in declared:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
            declared.add(t.name)
    g.initializer.extend(extra)
    return light


def _copy_fields(src: Message, dst: Message, skip: tuple[str, ...]) -> None:
    for f, value in src.ListFields():
        if f.name in skip:
            continue
        if isinstance(value, Message):
            getattr(dst, f.name).CopyFrom(value)
        elif isinstance(value, (str, bytes, int, float)):
            setattr(dst, f.name, value)
        else:  # a repeated field
            getattr(dst, f.name).extend(value)


_ITEMSIZE: dict[int, int] = {TensorProto.FLOAT: 4, TensorProto.DOUBLE: 8, TensorProto.FLOAT16: 2,
             TensorProto.BFLOAT16: 2, TensorProto.INT8: 1, TensorProto.UINT8: 1,
             TensorProto.INT16: 2, TensorProto.UINT16: 2, TensorProto.INT32: 4,
             TensorProto.UINT32: 4, TensorProto.INT64: 8, TensorProto.UINT64: 8,
             TensorProto.BOOL: 1, TensorProto.COMPLEX64: 8, TensorProto.COMPLEX128: 16}


def _decode_cause(error: ProtobufError) -> str:
    message = str(error)
    if "MaxDepth" in message:
        return "messages nested too deeply for the protobuf decoder (depth limit 100)"
    if "Wire format was corrupt" in message or "Error parsing message" in message:
        return "protobuf decoding failed (not an ONNX file, corrupt, or truncated)"
    return f"protobuf decoding failed: {message}"
