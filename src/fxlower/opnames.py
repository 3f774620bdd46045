"""ONNX op names as fxlower's users write them, and the one matcher that reads them.

Below both :mod:`fxlower.check` (which walks ONNX models) and :mod:`fxlower.targets` (whose
profiles are forbid and allow lists of these names); it imports neither.

* ``"Gather"`` (a plain name) matches a node of op_type ``Gather`` in *any* domain
  (``""``, ``"ai.onnx"``, ``"com.microsoft"``, ...), except a node that calls a local function
  of the model (the checker's ``calls_function``): such a call is not the op itself.
* ``"domain::Op"`` matches only nodes of that domain, function calls included.  ``"::Op"`` and
  ``"ai.onnx::Op"`` both mean the default ONNX domain (``""`` and ``"ai.onnx"`` are the same
  domain).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_DOMAINS",
    "DEFAULT_FORBIDDEN",
    "Matcher",
    "norm_domain",
    "parse_op_list",
    "parse_op_name",
]

DEFAULT_FORBIDDEN: frozenset[str] = frozenset(
    {"Gather", "GatherElements", "GatherND", "Scatter", "ScatterElements", "ScatterND"}
)
"""Op types :func:`fxlower.check.check_model` forbids when neither ``target`` nor ``forbid`` is
given: the Gather family and the Scatter family (what the ``generic`` target profile forbids)."""

DEFAULT_DOMAINS = frozenset({"", "ai.onnx"})
"""The two spellings of the default ONNX domain."""


def norm_domain(domain: str) -> str:
    """``""`` for the default ONNX domain (``""`` or ``"ai.onnx"``), else the domain."""
    return "" if domain in DEFAULT_DOMAINS else domain


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
    return norm_domain(domain), op_type


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
class Matcher:
    """A forbid or allow list, parsed: plain op types and ``(domain, op_type)`` pairs."""

    plain: frozenset[str]
    qualified: frozenset[tuple[str, str]]

    @classmethod
    def build(cls, names: Iterable[str] | str) -> Matcher:
        """From op names (see the module docstring) or a comma-separated string of them."""
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
        """True when a node of this domain and op type is on the list; a plain name never
        matches a node that calls a local function of the model (``calls_function``)."""
        if (norm_domain(domain), op_type) in self.qualified:
            return True
        return not calls_function and op_type in self.plain
