"""The exact formulations, plain torch code over tensors or fx proxies, side by side:

- `gather`: one-hot selection and the class codes that carry NaN/±inf/-0.0 through it;
- `scatter`: the scatter family's views, writer masks and ordered sums;
- `linear`: the algebra of merging chains of linear layers (conv, linear, BatchNorm).

Passes call them through `graph.Builder`; tests call them eagerly (`graph.EagerBuilder`).
"""

from __future__ import annotations

from .gather import Tensor

__all__ = ["Tensor"]
