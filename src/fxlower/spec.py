"""Factory specs, the models the command line lowers: ``path/to/file.py:factory`` or
``package.module:factory``. A factory takes no arguments and returns (model, example_inputs)
or (model, example_inputs, example_kwargs) (keyword inputs, as `fxlower.lower` takes them).

Used by ``fxlower lower``/``report`` (:mod:`fxlower.cli`) and by the demo (:mod:`fxlower.demo`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import FxlowerError

__all__ = ["load_spec"]


def load_spec(spec: str) -> tuple[Any, tuple[Any, ...], dict[str, Any] | None]:
    """Call the factory named by `path/to/file.py:name` or `package.module:name`: (model,
    example_inputs, example_kwargs or None)."""
    if ":" not in spec:
        raise FxlowerError(f"'{spec}' is not a factory spec: use path/to/file.py:factory "
                           "or package.module:factory")
    where, name = spec.rsplit(":", 1)
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise FxlowerError(f"{where}: no such file")
        root = str(path.resolve().parent)
        # let a file inside a package (models/mae.py) import its siblings
        for p in (root, str(path.resolve().parent.parent)):
            if p not in sys.path:
                sys.path.insert(0, p)
        modname = "_fxlower_spec_" + "".join(c if c.isalnum() else "_" for c in str(path))
        s = importlib.util.spec_from_file_location(modname, path)
        if s is None or s.loader is None:
            raise FxlowerError(f"{where}: cannot be imported")
        module = importlib.util.module_from_spec(s)
        sys.modules[modname] = module
        s.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        module = importlib.import_module(where)
    factory = getattr(module, name, None)
    if not callable(factory):
        raise FxlowerError(f"{spec}: '{name}' is not a function in {where}")
    out = factory()
    if not (isinstance(out, tuple) and len(out) in (2, 3)):
        raise FxlowerError(f"{spec}: the factory must return (model, example_inputs) or "
                           "(model, example_inputs, example_kwargs)")
    model, inputs = out[:2]
    kwargs = out[2] if len(out) == 3 else None
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise FxlowerError(f"{spec}: the factory's third value (example_kwargs) must be a "
                           f"dict of keyword inputs, not {type(kwargs).__name__}")
    # a single input (a tensor, a list, a dict) is the one positional input, as it always was
    return (model, inputs if isinstance(inputs, tuple) else (inputs,),
            None if kwargs is None else dict(kwargs))
