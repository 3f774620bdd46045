"""The "host" embedding strategy: split table lookups off the device graph.

A one-hot product costs 2·V·D FLOPs per looked-up row of a V×D table (BERT-base's word
embedding: 47 MFLOP per token), all to copy D numbers. Deployers of LLMs on NPUs run the
lookup on the host instead and feed the rows to the chip. `split` does that on a normalised
graph:

- a *host lookup* is `aten.index.Tensor(table, [idx])`: rows of a stored table (a
  parameter or buffer, reached by get_attr) selected along dim 0 by a run-time index whose
  computation from the model's inputs does no arithmetic beyond index bookkeeping
  (`_HOST_OPS`: reshapes, casts, offsets, comparisons); an index the network computes stays
  on the device (as a mask product) with its reason in the report;
- the *host graph* takes the model's flattened inputs and returns the device graph's
  inputs: the inputs the device still uses, then one tensor of rows per lookup;
- the *device graph* is the model's graph with every lookup replaced by a new input.

`Split` runs host then device, so it computes exactly what the model does (the rows are
copied, not computed) and is what `lower` verifies; `Split.device` is what goes to the chip
and `Split.host` is the small lookup to run before it.
"""

from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch.utils import _pytree as pytree

from . import graph as g

aten = torch.ops.aten
INDEX = aten.index.Tensor

# index bookkeeping a host may run: no MACs, no data from the network's activations
_HOST_OPS = frozenset({
    "reshape", "view", "flatten", "unsqueeze", "squeeze", "expand", "expand_as", "to",
    "_to_copy", "type", "type_as", "long", "int", "clone", "contiguous", "alias", "detach",
    "slice", "select", "add", "sub", "mul", "remainder", "fmod", "where", "lt", "le", "gt",
    "ge", "eq", "ne", "neg", "permute", "transpose", "t", "getitem", "clamp", "_assert_tensor_metadata",
})


_COMPOSED = "HostSplit"  # the class name of what `split` returns
_INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8)


@dataclass(frozen=True)
class HostLookup:
    """One lookup moved to the host: for the report."""

    op: str  # the user-facing op, e.g. "nn.Embedding 'embeddings.word_embeddings'"
    table: str  # the table's attribute name
    table_shape: tuple[int, ...]
    rows_input: str  # the device graph's new input
    rows_shape: tuple[int, ...]
    device_flops_saved: int  # what the "matmul" strategy would spend: 2*V per output value


def _ancestors(node: fx.Node) -> list[fx.Node]:
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack.extend(n.all_input_nodes)
    return [n for n in node.graph.nodes if n in seen]  # graph order


# not a host lookup, and nothing to report: index_to_mask_matmul turns it into constant rows
CONSTANT_INDEX = "the index is a constant (lowered to constant rows on the device)"


def host_problem(node: fx.Node) -> str | None:
    """Why this lookup cannot move to the host, or None. `node` is an aten.index.Tensor."""
    table, indices = node.args[0], node.args[1]
    if not (isinstance(table, fx.Node) and table.op == "get_attr"):
        return ("the table is computed in the graph (e.g. an embedding's padding_idx "
                "gradient guard in training mode), not a stored parameter or buffer")
    if not isinstance(indices, (list, tuple)) or len(indices) != 1 or not isinstance(indices[0], fx.Node):
        return "not a lookup of whole rows along dim 0"
    idx = indices[0]
    si = g.spec(idx)
    if si is None or si.dtype not in _INDEX_DTYPES:
        return ("the index is not an integer tensor (a boolean mask selects a data-dependent "
                "number of rows)")
    if g.is_const(idx):
        return CONSTANT_INDEX
    ancestors = _ancestors(idx)
    for a in ancestors:
        if a.op in ("placeholder", "get_attr"):
            continue
        if a.op == "call_module" or g.op_name(a) not in _HOST_OPS:
            return (f"the index is computed by the model ('{a.name}': {g.op_name(a)}), so the "
                    "lookup stays on the device")
    if not any(a.op == "placeholder" for a in ancestors):
        return "the index depends on no model input"
    return None


def candidates(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes
            if n.op == "call_function" and n.target is INDEX and g.spec(n) is not None]


def split(gm: fx.GraphModule) -> tuple[fx.GraphModule, list[HostLookup], list[tuple[fx.Node, str]]]:
    """Move every eligible lookup of `gm` (annotated, normalised) to the host: `gm` becomes
    the device graph, in place. Returns the composed module (host then device, a
    "HostSplit"), the lookups moved and the lookups refused with their reasons. With nothing
    to move, returns `gm` as is."""
    moved: list[fx.Node] = []
    refused: list[tuple[fx.Node, str]] = []
    for n in candidates(gm):
        reason = host_problem(n)
        if reason is None:
            moved.append(n)
        elif reason != CONSTANT_INDEX:
            refused.append((n, reason))
    if not moved:
        return gm, [], refused
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    defaults = {p: p.args for p in placeholders}  # the model's own, for the composed module
    codegen = gm.graph._codegen
    out = next(n for n in gm.graph.nodes if n.op == "output")
    n_out = len(out.args[0]) if isinstance(codegen, fx.graph._PyTreeCodeGen) else None

    # the host graph: the model's flattened inputs -> the device's inputs
    hg = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for p in placeholders:
        env[p] = hg.placeholder(p.name, default_value=_default(defaults[p]))
        env[p].meta = dict(p.meta)
    need: set[fx.Node] = set()
    for n in moved:
        need.update(a for a in _ancestors(n) if a not in env)
    for a in gm.graph.nodes:
        if a in need:
            env[a] = hg.node_copy(a, lambda x: env[x])

    # the device graph: each lookup becomes an input
    lookups: list[HostLookup] = []
    last_ph = placeholders[-1] if placeholders else None
    taken = {p.name for p in placeholders}
    for n in moved:
        table = n.args[0]
        assert isinstance(table, fx.Node)
        t = g.get_attr(gm, str(table.target))
        s = g.spec(n)
        assert s is not None
        where = last_ph.next if last_ph is not None else next(iter(gm.graph.nodes))
        name = base = str(table.target).replace(".", "_") + "_rows"
        i = 1
        while name in taken:  # a table looked up twice (tied embeddings): one input each
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        with gm.graph.inserting_before(where):
            ph = gm.graph.placeholder(name)
        ph.meta[g.VAL] = s
        last_ph = ph
        n.replace_all_uses_with(ph)
        lookups.append(HostLookup(
            op=str(n.meta.get("fxl_origin") or n.name), table=str(table.target),
            table_shape=tuple(t.shape), rows_input=ph.name, rows_shape=tuple(s.shape),
            device_flops_saved=2 * int(t.shape[0]) * s.numel))
    for n in moved:
        gm.graph.erase_node(n)
    for n in list(gm.graph.nodes):  # export's input guard reads inputs the device drops
        if n.op == "call_module" and str(n.target).startswith("_guards_fn"):
            gm.graph.erase_node(n)
    g.erase_dead(gm)
    kept = [p for p in placeholders if p.users]
    for p in placeholders:
        if not p.users:
            gm.graph.erase_node(p)
        else:
            p.args = ()  # the host passes every device input: no defaults (rows follow them)
    gm.graph._codegen = fx.graph.CodeGen()  # positional tensors in, the output node's value out
    for k, hook in list(gm._forward_pre_hooks.items()):  # torch.export's input-spec check
        if getattr(hook, "__name__", "") == "_check_input_constraints_pre_hook":
            del gm._forward_pre_hooks[k]
            gm._forward_pre_hooks_with_kwargs.pop(k, None)
    gm.graph.lint()
    gm.recompile()
    hg.output(tuple(env[p] for p in kept) + tuple(env[n] for n in moved))
    host = fx.GraphModule(gm, hg)

    # host then device, called as the model is
    root = torch.nn.Module()
    root.host, root.device = host, gm
    top = fx.Graph()
    phs = [top.placeholder(p.name, default_value=_default(defaults[p])) for p in placeholders]
    h = top.call_module("host", tuple(phs))
    d = top.call_module("device", tuple(
        top.call_function(operator.getitem, (h, i)) for i in range(len(kept) + len(moved))))
    if n_out is None:
        top.output(d)
    else:
        top.output(tuple(top.call_function(operator.getitem, (d, j)) for j in range(n_out)))
    top._codegen = codegen
    composed = fx.GraphModule(root, top, class_name=_COMPOSED)
    composed.training = gm.training
    return composed, lookups, refused


def _default(args: tuple[Any, ...]) -> Any:
    """A placeholder's default value (its only arg), or none."""
    return args[0] if args else inspect.Signature.empty


def parts(lowered: torch.nn.Module) -> tuple[fx.GraphModule, fx.GraphModule] | None:
    """(host, device) of a module `split` composed, else None (a model's own submodules
    named host and device are not mistaken for a split)."""
    if type(lowered).__name__ != _COMPOSED:
        return None
    host, device = lowered.get_submodule("host"), lowered.get_submodule("device")
    assert isinstance(host, fx.GraphModule) and isinstance(device, fx.GraphModule)
    return host, device


def host_inputs(composed: fx.GraphModule, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """What the host graph takes: the model's inputs, flattened on the export path."""
    if isinstance(composed.graph._codegen, fx.graph._PyTreeCodeGen):
        return tuple(pytree.tree_leaves(inputs))
    return inputs


def device_inputs(composed: fx.GraphModule, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """The device graph's inputs for the model's `inputs` (runs the host lookups)."""
    host = composed.get_submodule("host")
    with torch.no_grad():
        return tuple(host(*host_inputs(composed, inputs)))
