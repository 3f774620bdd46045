"""Graph utilities every stage shares: shape annotation, constant evaluation, and the
`Builder` that lets a pass write its replacement as plain torch code.

Shapes: `annotate(gm, inputs)` stores a `TensorSpec` (shape, dtype) pytree in
`node.meta["fxl_val"]`, for both capture paths, so passes read shapes the same way whichever
tracer produced the graph: from torch.export's FakeTensors, on the meta device for nodes a
rewrite added, and by running the graph once only where meta tensors cannot go.

Constants: a node is *constant* when its value cannot depend on the model's inputs
(parameters, buffers, literals, and deterministic ops on them). `const_value` evaluates it.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.fx as fx
from torch.fx.proxy import GraphAppendingTracer, Proxy

from .kernels import Tensor  # a torch.Tensor or an fx Proxy: torch's stubs know no Proxy

VAL = "fxl_val"


@dataclass(frozen=True)
class TensorSpec:
    """Static shape and dtype of a tensor-valued node, read from a real run."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def rank(self) -> int:
        return len(self.shape)


def _spec_of(v: Any) -> Any:
    """TensorSpec for tensors, the value for plain Python scalars, recursively in tuples."""
    if isinstance(v, torch.Tensor):
        return TensorSpec(tuple(int(s) for s in v.shape), v.dtype)
    if isinstance(v, (int, float, bool, str, type(None), torch.dtype, torch.device)):
        return v
    if isinstance(v, (tuple, list)):
        return tuple(_spec_of(x) for x in v)
    return None


class _Annotator(fx.Interpreter):
    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        n.meta[VAL] = _spec_of(out)
        return out


def writes_parameters(module: torch.nn.Module) -> bool:
    """Whether running the module can write its own parameters: an embedding with max_norm
    (it renormalises its table in place), or an in-place op on a parameter or buffer in a
    graph. A training flag alone does not: a training-mode forward writes buffers
    (BatchNorm statistics), which `preserved_state` always saves, not parameters; saving
    the parameters of every training-mode model on each run cost a copy of the weights."""
    if isinstance(module, fx.GraphModule):  # only what its graph runs: the modules it calls
        for n in module.graph.nodes:
            if n.op == "call_module" and _renormalises(module.get_submodule(str(n.target))):
                return True
            if _mutates(n) and any(a.op == "get_attr" for a in n.all_input_nodes):
                return True
        return False
    return _renormalises(module)


def _renormalises(module: torch.nn.Module) -> bool:
    """A (sub)module that writes its own parameters when run: embeddings with max_norm."""
    return any(isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag))
               and m.max_norm is not None for m in module.modules())


def snapshot(model: torch.nn.Module) -> torch.nn.Module:
    """The module tree of `model` copied (modules, Python attributes, hooks) with every
    parameter a new Parameter object over the *same storage*, and buffers cloned: what
    lowering works on instead of a deep copy. Parameters are the bulk of a model and nothing
    fxlower does writes into them (capture traces, passes build new tensors, runs go
    through `preserved_state`), so sharing them costs no memory and no time; a module that
    writes its own parameters when run (an embedding with max_norm) gets them cloned. The
    snapshot's parameters keep their own `requires_grad` and `.grad`, and `.double()` on the
    snapshot (the float64 twin of verification) replaces its Parameter objects' data, never
    the user's. The returned lowered module shares parameter storage with the model the way
    `torch.export`'s `ExportedProgram.module()` does."""
    memo: dict[int, Any] = {}
    writers = {id(p) for m in model.modules() if _renormalises(m)
               for p in m.parameters(recurse=False)}
    for p in model.parameters():
        if id(p) not in memo:
            data = p.detach().clone() if id(p) in writers else p.detach()
            memo[id(p)] = torch.nn.Parameter(data, requires_grad=p.requires_grad)
    for b in model.buffers():
        if id(b) not in memo:
            memo[id(b)] = b.detach().clone()
    with warnings.catch_warnings():  # (torch's pytree specs warn when copied)
        warnings.simplefilter("ignore", FutureWarning)
        return copy.deepcopy(model, memo)


class preserved_state:
    """Restore a module's buffers, and its parameters when running it could change them
    (see `writes_parameters`), after the block: in place, same tensor objects. Buffers are
    always saved (cheap, and a forward may write a cache buffer in any mode); parameters,
    large, only for modules that write them."""

    def __init__(self, *modules: torch.nn.Module) -> None:
        self.saved: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        for m in modules:
            tensors = list(m.buffers())
            if writes_parameters(m):
                tensors += list(m.parameters())
            self.saved.append([(t, t.detach().clone()) for t in tensors])

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        with torch.no_grad():
            for pairs in self.saved:
                for now, v in pairs:
                    unchanged = now.shape == v.shape and bool(
                        ((now == v) | (now.isnan() & v.isnan()) if now.is_floating_point()
                         else (now == v)).all()
                    )
                    if not unchanged:  # (an expanded, never-written buffer cannot take copy_)
                        now.copy_(v)


def annotate(gm: fx.GraphModule, inputs: tuple[Any, ...]) -> None:
    """Record every node's TensorSpec. Nodes that have one keep it (a rewrite replaces a
    node by one of the same shape and dtype; torch.export's FakeTensors give the captured
    graph its specs, `from_export`); the others are computed on the meta device from their
    inputs' specs, without running anything. Only when some node cannot run on meta
    tensors (a module call, a data-dependent op) is the graph run on `inputs`, once,
    leaving its state as it was."""
    if not _annotate_on_meta(gm):
        with torch.no_grad(), preserved_state(gm):
            _Annotator(gm).run(*inputs)


def from_export(gm: fx.GraphModule) -> None:
    """Specs from the FakeTensors torch.export left in `node.meta["val"]`, where every size
    is a plain int (a data-dependent size is left to a real run)."""
    def static(v: Any) -> bool:
        if isinstance(v, torch.Tensor):
            return all(type(d) is int for d in v.shape)
        if isinstance(v, (tuple, list)):
            return all(static(x) for x in v)
        return isinstance(v, (int, float, bool, str, type(None), torch.dtype, torch.device))

    for n in gm.graph.nodes:
        if VAL not in n.meta and "val" in n.meta and static(n.meta["val"]):
            n.meta[VAL] = _spec_of(n.meta["val"])


class _NoMeta(Exception):
    """A node that cannot be evaluated on meta tensors."""


def _on_meta(v: Any) -> Any:
    """A spec as a meta value: tensors as meta tensors, Python values as they are."""
    if isinstance(v, TensorSpec):
        return torch.empty(v.shape, dtype=v.dtype, device="meta")
    if isinstance(v, tuple):
        return tuple(_on_meta(x) for x in v)
    return v


def _annotate_on_meta(gm: fx.GraphModule) -> bool:
    """Specs for the nodes without one, on the meta device. False when a node cannot be
    evaluated there (the caller then runs the graph)."""
    if all(VAL in n.meta or n.op == "output" or n.op == "call_module" and not n.users
           for n in gm.graph.nodes):
        return True
    env: dict[fx.Node, Any] = {}

    def value(a: Any) -> Any:
        if isinstance(a, fx.Node):
            return env[a]
        return a

    try:
        for n in gm.graph.nodes:
            if n.op == "output":
                continue
            if VAL in n.meta:
                if n.meta[VAL] is None and n.users:
                    raise _NoMeta(n.name)  # a value no spec describes (an object)
                env[n] = _on_meta(n.meta[VAL])
                continue
            if n.op == "call_module" and not n.users:  # (torch.export's `_guards_fn`)
                continue
            args, kwargs = fx.node.map_aggregate((n.args, n.kwargs), value)
            if n.op == "get_attr":
                out = get_attr(gm, str(n.target))
                out = torch.empty_like(out, device="meta") if isinstance(out, torch.Tensor) \
                    else out
            elif n.op == "call_function":
                out = n.target(*args, **kwargs)
            elif n.op == "call_method":
                out = getattr(args[0], str(n.target))(*args[1:], **kwargs)
            else:  # placeholders without a spec, module calls: run the graph
                raise _NoMeta(n.name)
            n.meta[VAL] = _spec_of(out)
            env[n] = out
    except Exception:  # noqa: BLE001 - anything meta tensors cannot do: run for real
        return False
    return True


def spec(node: Any) -> TensorSpec | None:
    """The TensorSpec of a tensor-valued node, or None when unknown or not a tensor."""
    if not isinstance(node, fx.Node):
        return None
    v = node.meta.get(VAL)
    return v if isinstance(v, TensorSpec) else None


# Ops that draw random numbers or allocate uninitialised memory: never constant.
_NONDETERMINISTIC_NAMES = (
    "rand", "normal", "bernoulli", "multinomial", "dropout", "uniform", "empty", "poisson",
    "exponential", "geometric", "cauchy", "log_normal",
)


def arg(node: fx.Node, pos: int, name: str, default: Any = None) -> Any:
    """A call's argument, positional at `pos` or keyword `name`."""
    if len(node.args) > pos:
        return node.args[pos]
    return node.kwargs.get(name, default)


def calls(node: fx.Node, spellings: Collection[object]) -> bool:
    """Whether a call_function / call_method node calls one of `spellings` (functions, ATen
    overloads, and method names as strings)."""
    if node.op == "call_function":
        return node.target in spellings
    return node.op == "call_method" and str(node.target) in spellings


def op_name(node: fx.Node) -> str:
    """The op a node calls, by name: a method's name, an ATen op's packet name
    (`aten.embedding.default` -> "embedding"), a function's __name__."""
    t = node.target
    if isinstance(t, str):
        return t
    if isinstance(t, torch._ops.OpOverload):
        packet: str = t.overloadpacket.__name__
        return packet
    return getattr(t, "__name__", str(t))


def _target_name(node: fx.Node) -> str:
    t = node.target
    if isinstance(t, str):
        return t
    return getattr(t, "__name__", str(t))


def is_deterministic(node: fx.Node) -> bool:
    t = node.target
    if isinstance(t, torch._ops.OpOverload) and torch.Tag.nondeterministic_seeded in t.tags:
        return False
    name = _target_name(node).lower()
    return not any(k in name for k in _NONDETERMINISTIC_NAMES)


def is_const(node: Any, _memo: dict[fx.Node, bool] | None = None) -> bool:
    """True when the node's value cannot depend on the model inputs."""
    if not isinstance(node, fx.Node):
        return True
    memo = {} if _memo is None else _memo
    if node in memo:
        return memo[node]
    if node.op == "get_attr":
        result = True
    elif node.op in ("call_function", "call_method") and is_deterministic(node):
        result = all(is_const(a, memo) for a in node.all_input_nodes)
    else:
        result = False
    memo[node] = result
    return result


def get_attr(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def const_value(gm: fx.GraphModule, node: Any, _memo: dict[fx.Node, Any] | None = None) -> Any:
    """Evaluate a constant node (see `is_const`) to its value."""
    if not isinstance(node, fx.Node):
        return node
    memo = {} if _memo is None else _memo
    if node in memo:
        return memo[node]

    def ev(a: Any) -> Any:
        return fx.node.map_arg(a, lambda n: const_value(gm, n, memo))

    if node.op == "get_attr":
        v = get_attr(gm, str(node.target))
    elif node.op == "call_function":
        with torch.no_grad():
            fn = cast(Callable[..., Any], node.target)  # call_function: a callable target
            v = fn(*ev(node.args), **ev(node.kwargs))
    elif node.op == "call_method":
        self_obj, *rest = ev(node.args)
        with torch.no_grad():
            v = getattr(self_obj, str(node.target))(*rest, **ev(node.kwargs))
    else:
        raise ValueError(f"node {node.name} is not constant")
    memo[node] = v
    return v


def is_param_or_buffer(gm: fx.GraphModule, node: Any) -> bool:
    return isinstance(node, fx.Node) and node.op == "get_attr" and isinstance(
        get_attr(gm, str(node.target)), torch.Tensor
    )


class Builder:
    """Writes replacement code into a graph, before an anchor node.

    Inside `with Builder(gm, anchor) as b:`, `b.proxy(node)` wraps an existing node and
    every torch operation on the proxies appends a node to the graph; `b.const(t, hint)`
    stores a tensor as a non-persistent buffer of the GraphModule (deduplicated by
    content) and returns a proxy of its `get_attr` node. Replacements are thus plain torch
    functions, also callable eagerly on real tensors (see `EagerBuilder`).
    """

    def __init__(self, gm: fx.GraphModule, anchor: fx.Node) -> None:
        self.gm = gm
        self.graph = gm.graph
        self.anchor = anchor
        self.tracer = GraphAppendingTracer(self.graph)
        self._insert: Any = None

    def __enter__(self) -> Builder:
        self._insert = self.graph.inserting_before(self.anchor)
        self._insert.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._insert.__exit__(*exc)

    def proxy(self, node: fx.Node) -> Tensor:
        return Proxy(node, self.tracer)

    def const(self, t: torch.Tensor, hint: str) -> Tensor:
        t = t.detach().contiguous()
        digest = hashlib.sha1(
            str((t.dtype, tuple(t.shape))).encode() + t.cpu().numpy().tobytes()
            if t.dtype != torch.bfloat16
            else str((t.dtype, tuple(t.shape))).encode() + t.float().numpy().tobytes()
        ).hexdigest()[:12]
        cache: dict[str, str] = self.gm.__dict__.setdefault("_fxl_consts", {})
        name = cache.get(digest)
        if name is None:
            base = "_fxl_" + "".join(c if c.isalnum() else "_" for c in hint)
            name, i = base, 1
            while hasattr(self.gm, name):
                name, i = f"{base}_{i}", i + 1
            self.gm.register_buffer(name, t, persistent=False)
            cache[digest] = name
        return Proxy(self.graph.get_attr(name), self.tracer)


def node_of(p: Tensor) -> fx.Node:
    """The node a proxy written by `Builder` code stands for (torch ops on proxies are typed
    as returning tensors)."""
    node: fx.Node = p.node
    return node


class EagerBuilder:
    """The eager twin of `Builder`: constants are returned as tensors. Used by tests to run
    the same replacement functions on real tensors."""

    def const(self, t: torch.Tensor, hint: str) -> torch.Tensor:
        return t


def replace_node(old: fx.Node, new: fx.Node) -> None:
    """Point every user of `old` at `new` and erase `old`."""
    old.replace_all_uses_with(new)
    new.meta.setdefault("fxl_origin", old.meta.get("fxl_origin"))
    if VAL in old.meta:  # same value by construction: later candidates in this pass read it
        new.meta[VAL] = old.meta[VAL]
    old.graph.erase_node(old)


def _mutates(n: fx.Node) -> bool:
    """In-place updates (`x.mul_(2)`, `aten.add_`, `operator.setitem`, F.embedding with
    max_norm) have effects without users: never dead."""
    t = n.target
    if isinstance(t, str):
        return t.endswith("_") and not t.endswith("__")
    if isinstance(t, torch._ops.OpOverload):
        return t._schema.is_mutable
    if t is torch.nn.functional.embedding:  # max_norm renormalises the table in place
        return arg(n, 3, "max_norm") is not None
    name = getattr(t, "__name__", "")
    return name.endswith("_") and not name.endswith("__") or name == "setitem"


def erase_dead(gm: fx.GraphModule) -> None:
    """Remove pure nodes without users (keeps placeholders, outputs and impure calls)."""
    changed = True
    while changed:
        changed = False
        for n in reversed(list(gm.graph.nodes)):
            if n.op in ("placeholder", "output") or n.users:
                continue
            if n.op == "call_module" or _mutates(n) or (
                n.op in ("call_function", "call_method") and n.is_impure()
            ):
                continue
            gm.graph.erase_node(n)
            changed = True
    # drop fxlower's own buffers that are no longer referenced
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name in [b for b in gm._buffers if b.startswith("_fxl_") and b not in used]:
        delattr(gm, name)
    cache: dict[str, str] = gm.__dict__.get("_fxl_consts", {})
    for digest, name in list(cache.items()):
        if name not in used:
            del cache[digest]


def _key_of(a: Any) -> Any:
    if isinstance(a, fx.Node):
        return ("node", a.name)
    if isinstance(a, (list, tuple)):
        return (type(a).__name__, tuple(_key_of(x) for x in a))
    if isinstance(a, dict):
        return ("dict", tuple(sorted((k, _key_of(v)) for k, v in a.items())))
    if isinstance(a, float):
        return ("float", repr(a))  # tells -0.0 from 0.0, and NaN equals NaN
    if isinstance(a, (int, bool, str, type(None), torch.dtype, torch.device, slice)):
        return (type(a).__name__, repr(a))
    return ("id", id(a))  # anything else is only equal to itself


def cse(gm: fx.GraphModule, candidates: set[fx.Node]) -> int:
    """Merge duplicate deterministic nodes among `candidates` (nodes fxlower created; the
    user's own nodes are left as they are). Returns how many were removed."""
    seen: dict[Any, fx.Node] = {}
    removed = 0
    for n in list(gm.graph.nodes):
        if n not in candidates or n.op not in ("call_function", "call_method", "get_attr"):
            continue
        if n.op != "get_attr" and (n.is_impure() or _mutates(n) or not is_deterministic(n)):
            continue
        key = (n.op, str(n.target), _key_of(n.args), _key_of(n.kwargs))
        first = seen.get(key)
        if first is None:
            seen[key] = n
            continue
        n.replace_all_uses_with(first)
        gm.graph.erase_node(n)
        removed += 1
    return removed
