"""The rewrite framework: a pass is `match` -> `check` -> `replace`, each typed.

- `match(node, ctx)` is cheap and structural: it returns the bindings it found (a small
  frozen dataclass of the pass: the node and the operands the pass reads, already taken
  apart), or None when the node is no candidate.
- `check(bindings, ctx)` decides legality (the conditions numbered in the pass's
  docstring) and returns the pass's typed plan (a frozen dataclass subclassing `Plan`:
  everything `replace` needs, plus the cost the rewrite adds) or a `Skip` carrying the
  reason a user will read.
- `replace(plan, b)` writes the replacement with a `graph.Builder` (whose `anchor` is the
  node being replaced) and returns the node that replaces it.
Nothing is stashed on the pass between the three. Passes are listed explicitly, in run
order, in `fxlower.passes.PASSES`; nothing registers itself on import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import torch
import torch.fx as fx

from . import census, progress
from . import graph as g
from .report import Applied, Report, Skipped

if TYPE_CHECKING:
    from .targets import Target


@dataclass(frozen=True)
class Options:
    """Lowering options that passes read."""

    assume_finite: bool = False  # the user promises float sources hold no NaN/inf/-0.0
    merge: str = "auto"  # "auto" | "always" | "never" (linear-chain merges)
    target: Target | None = None  # None for the generic target
    embedding: str = "matmul"  # "matmul" (one-hot product) | "host" (lookups split off: host.py)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What every plan reports; a pass subclasses it (frozen, kw_only) with the fields its
    `replace` reads."""

    detail: str  # what the rewrite does, for the report
    macs: int = 0  # multiply-adds it adds per call
    mask_elems: int = 0  # elements of the run-time masks it builds


@dataclass(frozen=True)
class Skip:
    reason: str


@dataclass
class Context:
    gm: fx.GraphModule
    options: Options
    has_shapes: bool

    def spec(self, node: Any) -> g.TensorSpec | None:
        return g.spec(node)

    def is_const(self, node: Any) -> bool:
        return g.is_const(node)

    def value(self, node: Any) -> Any:
        return g.const_value(self.gm, node)

    def origin(self, node: fx.Node) -> str:
        return str(node.meta.get("fxl_origin") or describe(node))


def describe(node: fx.Node) -> str:
    """A user-facing name of the op a node performs."""
    t = node.target
    if node.op == "call_module":
        return f"module '{t}'"
    if node.op == "call_method":
        return f"Tensor.{t} '{node.name}'"
    if isinstance(t, torch._ops.OpOverload):
        return f"aten.{t._schema.name.split('::')[-1]} '{node.name}'"
    return f"{getattr(t, '__name__', t)} '{node.name}'"


B = TypeVar("B")  # the bindings a pass's `match` returns
P = TypeVar("P", bound=Plan)  # the plan its `check` returns


class RewritePass(Generic[B, P]):
    """Base class of every rewrite in `passes/`. See the module docstring."""

    name: ClassVar[str] = ""

    def match(self, node: fx.Node, ctx: Context) -> B | None:
        raise NotImplementedError

    def check(self, m: B, ctx: Context) -> P | Skip:
        raise NotImplementedError

    def replace(self, plan: P, b: g.Builder) -> fx.Node:
        raise NotImplementedError


AnyPass = RewritePass[Any, Any]  # a pass of any bindings and plan, as lists of passes hold them


def run_passes(
    gm: fx.GraphModule,
    passes: Sequence[AnyPass],
    ctx: Context,
    report: Report,
    *,
    enabled: Callable[[str], bool] = lambda rid: True,
    reannotate: Callable[[], None] | None = None,
) -> None:
    """Run each pass over the graph once, in order, recording what it did in `report`.

    `enabled(rewrite_id)` lets the caller switch single rewrites off (culprit finding).
    `reannotate` refreshes shapes after a pass changed the graph. Duplicate nodes that
    passes wrote (e.g. the class codes of one source gathered twice) are merged.
    """
    created: set[fx.Node] = set()  # nodes the passes wrote, the only ones CSE may merge
    for k, p in enumerate(passes):
        progress.step(f"pass {k + 1}/{len(passes)} {p.name} ({len(report.applied)} rewrites "
                      "so far)")
        changed = False
        for node in list(gm.graph.nodes):
            if getattr(node, "_erased", False):
                continue
            bound = p.match(node, ctx)
            if bound is None:
                continue
            op = ctx.origin(node)
            native = census.native(node, ctx.gm, ctx.options.target)
            if native:
                report.skipped.append(Skipped(p.name, node.name, op, native))
                continue
            result = p.check(bound, ctx)
            if isinstance(result, Skip):
                report.skipped.append(Skipped(p.name, node.name, op, result.reason))
                continue
            rid = f"{p.name}:{node.name}"
            if not enabled(rid):
                report.skipped.append(Skipped(p.name, node.name, op, "switched off"))
                continue
            before = set(gm.graph.nodes)
            with g.Builder(gm, node) as b:
                new = p.replace(result, b)
            created.update(n for n in gm.graph.nodes if n not in before)
            if new is not node:
                g.replace_node(node, new)
            report.applied.append(
                Applied(rid, p.name, node.name, op, result.detail, result.macs, result.mask_elems)
            )
            changed = True
        if changed:
            g.cse(gm, created)
            g.erase_dead(gm)
            gm.graph.lint()
            gm.recompile()
            if reannotate is not None:
                reannotate()
