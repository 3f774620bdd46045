"""Check an ONNX model for forbidden ops (by default the gather family).

The checker walks every node an ONNX runtime could execute:

* the main graph,
* every subgraph held in a node attribute (``If`` branches, ``Loop``/``Scan`` bodies, any
  attribute of type GRAPH or GRAPHS, arbitrarily nested up to :data:`MAX_SUBGRAPH_DEPTH`),
* every local function in ``model.functions`` (and the subgraphs inside their nodes),
* the graphs of ``model.training_info`` (``initialization`` and ``algorithm``).

It never runs ``onnx.checker``, shape inference or the model, and :func:`check_file` never
resolves external data: a tensor stored in an external file is never opened, whatever its
``location`` says.

Op names given to ``forbid``/``allow`` are matched as follows (see :func:`parse_op_name`):

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
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import onnx
from google.protobuf.message import Error as ProtobufError
from onnx import AttributeProto, GraphProto, ModelProto, NodeProto

from fxlower.errors import OnnxCheckError

__all__ = [
    "DEFAULT_FORBIDDEN",
    "MAX_SUBGRAPH_DEPTH",
    "CheckResult",
    "Violation",
    "check_file",
    "check_model",
    "parse_op_list",
    "parse_op_name",
]

DEFAULT_FORBIDDEN: frozenset[str] = frozenset({"Gather", "GatherElements", "GatherND"})
"""Op types :func:`check_model` forbids when ``forbid`` is not given."""

MAX_SUBGRAPH_DEPTH = 64
"""Subgraphs nested deeper than this make :func:`check_model` raise :class:`OnnxCheckError`."""

_DEFAULT_DOMAINS = frozenset({"", "ai.onnx"})

REASON_FORBIDDEN = "forbidden"
REASON_NOT_ALLOWED = "not in allow list"


@dataclass(frozen=True)
class Violation:
    """One node whose op is forbidden (or, in allow-list mode, not allowed).

    ``where`` is a readable path to the graph holding the node, e.g. ``"graph"``,
    ``"graph/If 'node_x'.then_branch"``, ``"graph/Loop 'l'.body/If #0.else_branch"`` (an unnamed
    node is shown by its op type and index) or ``"function 'pkg.mod::Foo'"``.  Names read from
    the file are made printable: invalid UTF-8 and control characters appear as escapes.
    """

    op_type: str
    domain: str
    node_name: str
    where: str
    reason: str = REASON_FORBIDDEN

    @property
    def qualified_op(self) -> str:
        """``"Gather"`` for an op of the default ONNX domain, else ``"domain::Op"``."""
        return _qualified(self.domain, self.op_type)

    def format(self) -> str:
        """One line: op, node name, location and why it is a violation."""
        node = f"node '{self.node_name}'" if self.node_name else "unnamed node"
        if self.reason == REASON_FORBIDDEN:
            return f"forbidden op {self.qualified_op} ({node}) in {self.where}"
        return f"op {self.qualified_op} ({node}) in {self.where} is {self.reason}"


@dataclass
class CheckResult:
    """What :func:`check_model` / :func:`check_file` found.

    ``op_counts`` counts every node walked by qualified op name (``"Gather"``,
    ``"com.microsoft::FusedMatMul"``, ``"pkg::MyFunc"``); ``n_nodes`` is their total.
    """

    path: str | None
    violations: list[Violation] = field(default_factory=list)
    op_counts: dict[str, int] = field(default_factory=dict)
    n_nodes: int = 0

    @property
    def ok(self) -> bool:
        """True when no node is a violation."""
        return not self.violations

    def format(self) -> str:
        """A report: one line per violation, then a summary line; each line starts with the path."""
        label = self.path if self.path is not None else "<model>"
        nodes = f"{self.n_nodes} node{'' if self.n_nodes == 1 else 's'}"
        if self.ok:
            return f"{label}: ok ({nodes} checked, no forbidden ops)"
        lines = [f"{label}: {v.format()}" for v in self.violations]
        per_op = Counter(v.qualified_op for v in self.violations)
        summary = ", ".join(f"{op} x{n}" for op, n in sorted(per_op.items()))
        n = len(self.violations)
        lines.append(
            f"{label}: FAILED: {n} violation{'' if n == 1 else 's'} ({summary}) in {nodes}"
        )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# op-name parsing and matching


def parse_op_name(name: str) -> tuple[str | None, str]:
    """Parse ``"Op"`` into ``(None, "Op")`` and ``"domain::Op"`` into ``(domain, "Op")``.

    Blanks around the name and its parts are stripped; ``"ai.onnx"`` becomes ``""``.  Raises
    ``ValueError`` for an empty name or an empty op part (``"com.microsoft::"``).
    """
    text = name.strip()
    if not text:
        raise ValueError("empty op name")
    if "::" not in text:
        return None, text
    domain, _, op_type = text.rpartition("::")
    domain, op_type = domain.strip(), op_type.strip()
    if not op_type:
        raise ValueError(f"empty op type in op name {name!r}")
    return _norm_domain(domain), op_type


def parse_op_list(text: str) -> frozenset[str]:
    """Parse a CLI value like ``"Gather, GatherND,com.microsoft::GatherBlockQuantized"``.

    Returns the names, stripped of blanks (``domain::Op`` names are kept as written apart from
    the blanks).  Raises ``ValueError`` if any name is empty (``"Gather,,GatherND"``, ``""``).
    """
    names = []
    for part in text.split(","):
        domain, op_type = parse_op_name(part)  # raises ValueError on an empty name
        names.append(op_type if domain is None else f"{domain}::{op_type}")
    return frozenset(names)


@dataclass(frozen=True)
class _Matcher:
    plain: frozenset[str]
    qualified: frozenset[tuple[str, str]]

    @classmethod
    def build(cls, names: Iterable[str] | str) -> _Matcher:
        if isinstance(names, str):
            names = parse_op_list(names)
        plain: set[str] = set()
        qualified: set[tuple[str, str]] = set()
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"op names must be str, got {type(name).__name__}: {name!r}")
            domain, op_type = parse_op_name(name)
            if domain is None:
                plain.add(op_type)
            else:
                qualified.add((domain, op_type))
        return cls(frozenset(plain), frozenset(qualified))

    def matches(self, domain: str, op_type: str, *, calls_function: bool) -> bool:
        if (_norm_domain(domain), op_type) in self.qualified:
            return True
        return not calls_function and op_type in self.plain


# ---------------------------------------------------------------------------------------------
# the walk


def check_model(
    model: ModelProto,
    *,
    forbid: Iterable[str] | str | None = None,
    allow: Iterable[str] | str | None = None,
) -> CheckResult:
    """Find every node of ``model`` whose op is forbidden, or not allowed.

    ``forbid``: op names (default :data:`DEFAULT_FORBIDDEN`; pass ``()`` to forbid nothing).
    A node matching one of them is a violation.

    ``allow``: if given, allow-list mode: a node matching none of these names is a violation
    too (``forbid`` still applies, so allow-list an op *and* forbid it and it is a violation).
    A node calling a local function is not itself checked against ``allow``; the function's
    body is.

    See the module docstring for how names match domains.  A comma-separated string is accepted
    for either list.  Each node gives at most one violation; violations come in walk order
    (main graph, depth first, then training graphs, then local functions).

    Raises :class:`OnnxCheckError` if subgraphs are nested deeper than
    :data:`MAX_SUBGRAPH_DEPTH` levels, ``TypeError`` if ``model`` is not a ``ModelProto`` and
    ``ValueError`` for an empty op name.
    """
    if not isinstance(model, ModelProto):
        raise TypeError(f"check_model expects an onnx.ModelProto, got {type(model).__name__}")
    forbidden = _Matcher.build(DEFAULT_FORBIDDEN if forbid is None else forbid)
    allowed = None if allow is None else _Matcher.build(allow)

    functions = {
        (_norm_domain(_text(f.domain)), _text(f.name), _text(getattr(f, "overload", "")))
        for f in model.functions
    }
    counts: Counter[str] = Counter()
    violations: list[Violation] = []
    n_nodes = 0

    for node, where in _iter_model_nodes(model):
        n_nodes += 1
        domain, op_type = _text(node.domain), _text(node.op_type)
        counts[_qualified(domain, op_type)] += 1
        calls_function = _norm_domain(domain) != "" and (
            (_norm_domain(domain), op_type, _text(getattr(node, "overload", ""))) in functions
        )
        if forbidden.matches(domain, op_type, calls_function=calls_function):
            reason = REASON_FORBIDDEN
        elif (
            allowed is not None
            and not calls_function
            and not allowed.matches(domain, op_type, calls_function=False)
        ):
            reason = REASON_NOT_ALLOWED
        else:
            continue
        violations.append(Violation(op_type, domain, _text(node.name), where, reason))

    return CheckResult(path=None, violations=violations, op_counts=dict(counts), n_nodes=n_nodes)


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
# helpers


def _norm_domain(domain: str) -> str:
    return "" if domain in _DEFAULT_DOMAINS else domain


def _qualified(domain: str, op_type: str, *, keep_default: bool = False) -> str:
    if not keep_default and domain in _DEFAULT_DOMAINS:
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
) -> CheckResult:
    """Read the ONNX file at ``path`` and :func:`check_model` it.

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
    try:
        result = check_model(model, forbid=forbid, allow=allow)
    except OnnxCheckError as e:
        raise OnnxCheckError(f"{shown}: {e}") from e
    result.path = shown
    return result


def _decode_cause(error: ProtobufError) -> str:
    message = str(error)
    if "MaxDepth" in message:
        return "messages nested too deeply for the protobuf decoder (depth limit 100)"
    if "Wire format was corrupt" in message or "Error parsing message" in message:
        return "protobuf decoding failed (not an ONNX file, corrupt, or truncated)"
    return f"protobuf decoding failed: {message}"
