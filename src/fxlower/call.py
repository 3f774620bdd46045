"""Example inputs as the model is called: positional (`example_inputs`) and keyword
(`example_kwargs`) inputs.

Keyword inputs are bound once, at the API's door, to a positional call of a *view* of the
model (`keyword_view`): a snapshot of the model (parameters shared, buffers cloned; the
user's object is untouched) whose class is a subclass with one generated `forward` taking
exactly the inputs given, by their names, and calling the model's own forward with them as
given (`forward(self, input_ids, attention_mask)` calls
`Model.forward(self, input_ids=input_ids, attention_mask=attention_mask)`). Everything
after (capture by either tracer, verification, export, onnxruntime comparison) sees a
model with positional inputs; the names follow through: the captured graph's placeholders,
hence the lowered module's signature (`lowered(**kwargs)` works) and the exported ONNX
file's input names. Optional arguments the call skips stay at their defaults, without a
`None` placeholder for each.

An input that holds no tensor (`use_cache=False`, `return_dict=True`) is fixed in the view
as a constant, as torch.export fixes non-tensor inputs: the lowered module takes the tensor
inputs only.
"""

from __future__ import annotations

import inspect
import keyword
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils import _pytree as pytree

from .errors import LoweringError
from .graph import snapshot

__all__ = ["as_positional", "keyword_view", "bind_runs"]


def as_positional(example_inputs: Any) -> tuple[Any, ...] | None:
    """`example_inputs` as a tuple: a tensor becomes a 1-tuple, a list a tuple; None stays
    None (no example inputs). A dict is refused: keyword inputs go to `example_kwargs`."""
    if example_inputs is None:
        return None
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, list):
        return tuple(example_inputs)
    if isinstance(example_inputs, Mapping):
        keys = ", ".join(map(str, list(example_inputs)[:4]))
        raise LoweringError(
            f"example_inputs is a {type(example_inputs).__name__} ({keys}): pass keyword "
            f"inputs as example_kwargs=... (lower(model, example_kwargs=inputs)); "
            "example_inputs takes the positional ones (a model whose single positional "
            "input is a dict takes example_inputs=(inputs,))")
    if not isinstance(example_inputs, tuple):
        raise LoweringError(
            f"example_inputs must be a tensor or a tuple of positional inputs, not "
            f"{type(example_inputs).__name__}"
        )
    return example_inputs


def _has_tensor(v: Any) -> bool:
    return any(isinstance(t, torch.Tensor) for t in pytree.tree_leaves(v))


class _Binding:
    """How a call (args, kwargs) maps onto the view's positional parameters."""

    def __init__(self, model: torch.nn.Module, args: tuple[Any, ...],
                 kwargs: Mapping[str, Any]) -> None:
        cls = type(model)
        # a forward set on the instance (accelerate's hooks wrap it so) is what a call runs
        self.instance_forward = "forward" in vars(model)
        fwd = model.forward if self.instance_forward else cls.forward
        try:
            self.sig = inspect.signature(fwd)
        except (TypeError, ValueError) as e:
            raise LoweringError(f"{cls.__name__}.forward has no signature to bind keyword "
                                f"inputs to ({e}); pass the inputs positionally") from e
        try:
            bound = self.sig.bind(*(() if self.instance_forward else (None,)), *args, **kwargs)
        except TypeError as e:
            raise LoweringError(f"the example inputs do not fit {cls.__name__}.forward"
                                f"{str(self.sig).replace('(self, ', '(', 1)}: {e}") from e
        self.cls = cls
        self.example = (args, kwargs)
        # Each entry: (the view's parameter name or None for a constant, the keyword it is
        # passed as or None for positionally, where its value is: ("arg", i) / ("kw", key))
        self.entries: list[tuple[str | None, str | None, tuple[str, Any]]] = []
        params = list(self.sig.parameters.values())[0 if self.instance_forward else 1:]
        i = 0
        for p in params:
            if p.name not in bound.arguments:
                continue
            if p.kind is p.VAR_POSITIONAL:
                for k in range(len(bound.arguments[p.name])):
                    self._add(f"{p.name}_{k}", None, ("arg", i), args[i])
                    i += 1
            elif p.kind is p.VAR_KEYWORD:
                for key in bound.arguments[p.name]:
                    self._add(key, key, ("kw", key), kwargs[key])
            elif p.name in kwargs:
                self._add(p.name, p.name, ("kw", p.name), kwargs[p.name])
            else:
                self._add(p.name, None, ("arg", i), args[i])
                i += 1
        self.names = [n for n, _, _ in self.entries if n is not None]
        if len(set(self.names)) != len(self.names):
            raise LoweringError(f"the keyword view of {cls.__name__} would have two inputs of "
                                f"one name ({self.names}): pass these inputs positionally")

    def _add(self, name: str, how: str | None, where: tuple[str, Any], value: Any) -> None:
        if not _has_tensor(value):
            self.entries.append((None, how, where))
            return
        if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_fxl"):
            raise LoweringError(f"keyword input '{name}' is not usable as a parameter name")
        self.entries.append((name, how, where))

    def values(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
        """The view's positional inputs for a call with the example's keys and, where the
        view holds a constant, the example's value (or none)."""
        out = []
        for name, _, (kind, key) in self.entries:
            if name is None:
                mine = (args if kind == "arg" else kwargs)
                theirs = (self.example[0] if kind == "arg" else self.example[1])
                has = key < len(mine) if kind == "arg" else key in mine
                if has and not _same(mine[key], theirs[key]):
                    raise LoweringError(
                        f"a verify_inputs run gives {key!r} = {mine[key]!r}, the example "
                        f"{theirs[key]!r}: an input holding no tensor is fixed at capture")
                continue
            if kind == "arg":
                if key >= len(args):
                    raise LoweringError(f"a call has {len(args)} positional inputs, the "
                                        f"example has more")
                out.append(args[key])
            else:
                if key not in kwargs:
                    raise LoweringError(f"a call lacks the keyword input '{key}' the example has")
                out.append(kwargs[key])
        extra = set(kwargs) - {key for _, _, (kind, key) in self.entries if kind == "kw"}
        if extra:
            raise LoweringError(f"a call has keyword inputs the example has not: {sorted(extra)}")
        return tuple(out)


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(type(a) is type(b) and a == b)
    except Exception:  # noqa: BLE001 - values that do not compare are not the same
        return False


def keyword_view(model: torch.nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any]
                 ) -> tuple[torch.nn.Module, tuple[Any, ...], _Binding]:
    """The view of `model` that takes the call's tensor inputs positionally, by their names,
    and the inputs it takes (see the module's docstring)."""
    hooks = [d for d in ("_forward_pre_hooks", "_forward_hooks") if getattr(model, d, None)]
    if hooks:
        raise LoweringError(
            f"{type(model).__name__} has forward hooks on the model itself ({', '.join(hooks)}): "
            "with keyword example inputs fxlower calls the model through a positional view, "
            "whose hooks would see other arguments than your keyword call; remove them for "
            "lowering, or pass the inputs positionally")
    b = _Binding(model, args, kwargs)
    consts: list[Any] = []
    pos, kws = [], []
    for name, how, (kind, key) in b.entries:
        if name is None:
            consts.append(args[key] if kind == "arg" else kwargs[key])
            expr = f"_fxl_consts[{len(consts) - 1}]"
        else:
            expr = name
        if how is None:
            pos.append(expr)
        else:
            kws.append((how, expr))
    if kws:  # every keyword through one dict: any key, a Python keyword or not, is fine
        pos.append("**{" + ", ".join(f"{k!r}: {e}" for k, e in kws) + "}")
    src = (f"def forward(self, {', '.join(b.names)}):\n"
           f"    return _fxl_forward({', '.join(['self', *pos])})\n")
    namespace: dict[str, Any] = {"_fxl_consts": tuple(consts), "_fxl_forward": (
        _instance_forward if b.instance_forward else b.cls.forward)}
    try:
        exec(compile(src, f"<fxlower keyword view of {b.cls.__name__}>", "exec"), namespace)
        view_cls = type(b.cls.__name__, (b.cls,), {
            "forward": namespace["forward"], "__module__": b.cls.__module__,
            "__qualname__": b.cls.__qualname__})
    except Exception as e:  # noqa: BLE001 - a name the generated code cannot take, a class
        # whose __init_subclass__ refuses a subclass: named, with the way around it
        raise LoweringError(f"cannot make the keyword view of {b.cls.__name__} "
                            f"({type(e).__name__}: {e}); pass the inputs positionally") from e
    view = snapshot(model)
    if b.instance_forward:  # (the snapshot's copy, bound to the snapshot)
        vars(view)["_fxl_inner_forward"] = vars(view).pop("forward")
    view.__class__ = view_cls
    return view, b.values(args, kwargs), b


def _instance_forward(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
    return vars(self)["_fxl_inner_forward"](*args, **kwargs)


def bind_runs(binding: _Binding, runs: Any) -> list[tuple[Any, ...]] | None:
    """`verify_inputs` given with keyword example inputs: each run is a dict of keyword
    inputs or an (args, kwargs) pair, with the example's keys; mapped to the view's inputs."""
    if runs is None:
        return None
    out = []
    for r in runs:
        if isinstance(r, Mapping):
            out.append(binding.values((), r))
        elif isinstance(r, tuple) and len(r) == 2 and isinstance(r[1], Mapping):
            out.append(binding.values(tuple(r[0]), r[1]))
        else:
            raise LoweringError("with example_kwargs, each verify_inputs entry is a dict of "
                                "keyword inputs or an (args, kwargs) pair")
    return out
