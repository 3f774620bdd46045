"""Target profiles: which ONNX ops (and tensor types) an edge chip's toolchain supports.

A profile is data: one JSON file per target in the ``fxlower/profiles`` package folder, each
encoding one published support list with its source (repository, path, commit), the date it
was read, an ``allow`` list (``null``: every op not forbidden), a ``forbid`` list, whether the
target has int64 tensors, and per-op notes for conditional support ("Gather: single index").

    >>> from fxlower.targets import get_target
    >>> t = get_target("rknn2@1.4.0")
    >>> t.allows("Gather"), t.allows("TopK")
    (True, False)

The same :class:`Target` drives ``fxlower.check`` (``check_model(..., target=...)``,
``fxlower check --target NAME``): its ``forbid``/``allow`` lists go through the checker's one
op-name matcher, so ``"Gather"`` matches a node of op type ``Gather`` in any domain and
``"domain::Op"`` only that domain (see :mod:`fxlower.opnames`).

Notes are not checked: they record the conditions under which the source supports an op
(an allowed ``Gather`` may still be limited to single indices).

Versions: a toolchain whose support list changed between releases has one profile per
table, named ``<target>@<version>`` (``rknn2@1.4.0``, ``rknn2@2.x``); the bare name means the
newest packaged version, and says so in its remarks.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from fxlower.errors import LoweringError
from fxlower.opnames import DEFAULT_FORBIDDEN, Matcher, parse_op_list, parse_op_name

__all__ = [
    "DEFAULT_TARGET",
    "GENERIC_FORBIDDEN",
    "Target",
    "get_target",
    "load_profiles",
]

GENERIC_FORBIDDEN: frozenset[str] = DEFAULT_FORBIDDEN
"""What the ``generic`` profile forbids: the Gather family and the Scatter family
(``Gather, GatherElements, GatherND, Scatter, ScatterElements, ScatterND``)."""

DEFAULT_TARGET = "generic"
"""The profile used when no target is given."""

_PROFILE_FOLDER = "profiles"  # package data of fxlower (no __init__.py: data, not code)
_PROFILE_KEYS = frozenset(
    {"name", "title", "source", "version", "date", "allow", "forbid", "int64", "notes", "remarks",
     "conditions"}
)


@dataclass(frozen=True)
class Facts:
    """What is known of a gather/scatter node's operands where a condition is judged (an
    ONNX node in `fxlower check`, a graph node in `lower`); None: not known."""

    indices_numel: int | None = None
    indices_rank: int | None = None
    indices_const: bool | None = None
    data_const: bool | None = None


# kind -> (the fact it reads, the test on it); every kind reads one fact
_KINDS: dict[str, tuple[str, Any]] = {
    "indices_max_elems": ("indices_numel", lambda fact, v: fact <= v),
    "indices_max_rank": ("indices_rank", lambda fact, v: fact <= v),
    "indices_const": ("indices_const", lambda fact, v: fact == v),
    "data_const": ("data_const", lambda fact, v: fact == v),
}


@dataclass(frozen=True)
class Condition:
    """One condition under which a target supports an op: `kind` (indices_max_elems,
    indices_max_rank, indices_const, data_const), its `value`, the condition's text and the
    source's own line (`quote`)."""

    kind: str
    value: Any
    text: str
    quote: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown condition kind {self.kind!r} (known: {sorted(_KINDS)})")

    def broken(self, facts: Facts) -> str:
        """Why `facts` break (or cannot be shown to meet) this condition; "" when met."""
        name, test = _KINDS[self.kind]
        fact = getattr(facts, name)
        if fact is None:
            return f"{self.text} (not known here: {name.replace('_', ' ')})"
        return "" if test(fact, self.value) else f"{self.text} ({name.replace('_', ' ')}: {fact})"


def _op_names(names: Iterable[str] | str, what: str) -> frozenset[str]:
    """Normalise op names as :func:`fxlower.opnames.parse_op_list` does
    (``ai.onnx::X`` -> ``::X``)."""
    if isinstance(names, str):
        return parse_op_list(names)
    out = []
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"Target {what}: op names must be str, got {type(name).__name__}")
        domain, op_type = parse_op_name(name)  # ValueError on an empty name
        out.append(op_type if domain is None else f"{domain}::{op_type}")
    return frozenset(out)


@dataclass(frozen=True)
class Target:
    """What a target chip supports, as the checker and the lowering see it.

    ``allow``: ``None`` (every op not forbidden is fine) or the op types the target has; an op
    outside it is a violation.  ``forbid``: op types the target lacks; a forbidden op is a
    violation even if it is also allowed.  Both accept any iterable of names (plain sets too)
    or a comma-separated string and are stored as frozensets.  ``int64``: ``False`` makes the
    checker report every int64 tensor of a model.

    ``title``, ``source`` (a URL or a description), ``version``, ``date`` (when the list was
    read from its source), ``notes`` (op type -> condition under which the source supports, or
    why it forbids, that op) and ``remarks`` (general notes) describe the profile; they do not
    change what is checked.
    """

    name: str = "custom"
    allow: frozenset[str] | None = None
    forbid: frozenset[str] = frozenset()
    int64: bool = True
    title: str = ""
    source: str = ""
    version: str = ""
    date: str = ""
    notes: Mapping[str, str] = field(default_factory=dict, hash=False, repr=False)
    remarks: tuple[str, ...] = field(default=(), repr=False)
    conditions: Mapping[str, tuple[Condition, ...]] = field(default_factory=dict, hash=False,
                                                            repr=False)
    if TYPE_CHECKING:  # set in __post_init__; declared for the type checker only (not fields)
        _forbid_matcher: Matcher = field(init=False, repr=False, compare=False)
        _allow_matcher: Matcher | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("Target name must be a non-empty string")
        if self.allow is not None:
            object.__setattr__(self, "allow", _op_names(self.allow, "allow"))
        object.__setattr__(self, "forbid", _op_names(self.forbid, "forbid"))
        if not isinstance(self.int64, bool):
            raise TypeError(f"Target int64 must be a bool, got {type(self.int64).__name__}")
        object.__setattr__(self, "notes", MappingProxyType(dict(self.notes)))
        object.__setattr__(self, "remarks", tuple(self.remarks))
        object.__setattr__(self, "conditions", MappingProxyType(
            {op: tuple(cs) for op, cs in self.conditions.items()}))
        object.__setattr__(self, "_forbid_matcher", Matcher.build(self.forbid))
        object.__setattr__(
            self, "_allow_matcher", None if self.allow is None else Matcher.build(self.allow)
        )

    # -- matching (the checker's matcher; see fxlower.opnames) -------------------------------

    def forbids(self, op_type: str, domain: str = "") -> bool:
        """True when the op is on the forbid list (``op_type`` may be ``"domain::Op"``)."""
        domain, op_type = _split(op_type, domain)
        return self._forbid_matcher.matches(domain, op_type, calls_function=False)

    def allows(self, op_type: str, domain: str = "") -> bool:
        """True when a node of this op passes the target: not forbidden, and allowed when the
        target has an allow list.  ``op_type`` may be ``"domain::Op"``."""
        domain, op_type = _split(op_type, domain)
        if self._forbid_matcher.matches(domain, op_type, calls_function=False):
            return False
        allowed = self._allow_matcher
        return allowed is None or allowed.matches(domain, op_type, calls_function=False)

    def broken_condition(self, op_type: str, facts: Facts) -> str:
        """The first condition on `op_type` that `facts` break (its text and the fact), or ""
        when the op is unconditional or every condition holds."""
        for c in self.conditions.get(op_type, ()):
            why = c.broken(facts)
            if why:
                return why
        return ""

    def forbidden_in(self, op_types: Iterable[str]) -> set[str]:
        """The op types among ``op_types`` this target does not allow (see :meth:`allows`)."""
        return {op for op in op_types if not self.allows(op)}

    def note(self, op_type: str) -> str:
        """The profile's note on an op (its support condition), or ``""``."""
        return self.notes.get(op_type, "")

    # -- derived targets ---------------------------------------------------------------------

    def adjusted(
        self,
        *,
        allow: Iterable[str] | str | None = None,
        forbid: Iterable[str] | str | None = None,
    ) -> Target:
        """This target with explicit ops on top (what ``--allow``/``--forbid`` do with ``--target``).

        ``forbid`` ops are added to the forbid list.  ``allow`` ops are taken off the forbid
        list and, if the target has an allow list, added to it.  An op named in both is
        forbidden.
        """
        extra_allow = _op_names(allow, "allow") if allow is not None else frozenset()
        extra_forbid = _op_names(forbid, "forbid") if forbid is not None else frozenset()
        if not extra_allow and not extra_forbid:
            return self
        new_allow = None if self.allow is None else self.allow | extra_allow
        new_forbid = (self.forbid - extra_allow) | extra_forbid
        parts = [f"+allow {','.join(sorted(extra_allow))}"] if extra_allow else []
        parts += [f"+forbid {','.join(sorted(extra_forbid))}"] if extra_forbid else []
        return Target(
            name=self.name, allow=new_allow, forbid=new_forbid, int64=self.int64,
            title=f"{self.title} ({'; '.join(parts)})" if self.title else "; ".join(parts),
            source=self.source, version=self.version, date=self.date, notes=self.notes,
            remarks=self.remarks, conditions=self.conditions,
        )

    def describe(self, width: int = 100) -> str:
        """A few lines for ``fxlower targets``: name, title, source, date, int64, what it allows
        and forbids (long op lists wrapped at ``width`` columns)."""

        def item(label: str, text: str) -> str:
            return textwrap.fill(
                text, width=width, initial_indent=f"  {label:<9}", subsequent_indent=" " * 11,
                break_long_words=False, break_on_hyphens=False,
            )

        lines = [f"{self.name}: {self.title}" if self.title else self.name]
        if self.source:
            lines.append(f"  {'source:':<9}{self.source}")  # a URL: never wrapped
        if self.version:
            lines.append(item("version:", self.version))
        if self.date:
            lines.append(item("read on:", self.date))
        lines.append(item("int64:", "yes" if self.int64 else "no (int64 tensors are violations)"))
        if self.allow is None:
            lines.append(item("allows:", "every op not forbidden"))
        else:
            ops = ", ".join(sorted(self.allow))
            lines.append(item("allows:", f"only these {len(self.allow)} ops: {ops}"))
        if self.forbid:
            lines.append(item("forbids:", f"{len(self.forbid)} ops: {', '.join(sorted(self.forbid))}"))
        elif self.allow is not None:
            lines.append(item("forbids:", "no op by name (every op outside the allow list)"))
        else:
            lines.append(item("forbids:", "nothing"))
        return "\n".join(lines)


def _split(op_type: str, domain: str) -> tuple[str, str]:
    if "::" in op_type:
        parsed_domain, op = parse_op_name(op_type)
        return parsed_domain or "", op
    return domain, op_type


# ---------------------------------------------------------------------------------------------
# the packaged profiles


def _target_from_json(data: Any, filename: str) -> Target:
    if not isinstance(data, dict):
        raise ValueError(f"profile {filename}: expected a JSON object")
    unknown = set(data) - _PROFILE_KEYS
    missing = {"name", "allow", "forbid", "int64", "source", "date"} - set(data)
    if unknown or missing:
        raise ValueError(
            f"profile {filename}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}"
        )
    source = data["source"]
    if isinstance(source, dict):
        source = source.get("url") or " ".join(
            str(source[k]) for k in ("repo", "path", "commit") if source.get(k)
        )
    return Target(
        name=data["name"],
        allow=None if data["allow"] is None else frozenset(data["allow"]),
        forbid=frozenset(data["forbid"]),
        int64=data["int64"],
        title=data.get("title", ""),
        source=str(source),
        version=data.get("version", ""),
        date=data["date"],
        notes=data.get("notes", {}),
        remarks=tuple(data.get("remarks", ())),
        conditions={op: tuple(Condition(**c) for c in cs)
                    for op, cs in data.get("conditions", {}).items()},
    )


def load_profiles() -> dict[str, Target]:
    """Every packaged profile, by name (read from ``fxlower/profiles/*.json``)."""
    out: dict[str, Target] = {}
    folder = resources.files("fxlower").joinpath(_PROFILE_FOLDER)
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        target = _target_from_json(json.loads(entry.read_text(encoding="utf-8")), entry.name)
        if target.name != entry.name[: -len(".json")]:
            raise ValueError(f"profile {entry.name}: name {target.name!r} does not match the file")
        out[target.name] = target
    return out


def get_target(name_or_target: str | Target | None) -> Target:
    """A :class:`Target` as given, a packaged profile by name, or ``generic`` for ``None``.

    Raises :class:`fxlower.errors.LoweringError` naming the known profiles for an unknown name.
    """
    if name_or_target is None:
        name_or_target = DEFAULT_TARGET
    if isinstance(name_or_target, Target):
        return name_or_target
    if not isinstance(name_or_target, str):
        raise TypeError(
            f"target must be a profile name or a fxlower.Target, got {type(name_or_target).__name__}"
        )
    profiles = load_profiles()
    key = name_or_target.strip().lower()
    if key in profiles:
        return profiles[key]
    versions = sorted((n for n in profiles if n.split("@", 1)[0] == key and "@" in n),
                      key=_version_key)
    if not versions:
        raise LoweringError(
            f"unknown target {name_or_target!r}; known targets: "
            f"{', '.join(sorted(set(profiles) | set(aliases(profiles))))}"
        )
    newest = profiles[versions[-1]]
    return replace(newest, remarks=newest.remarks + (
        f"'{key}' means the newest packaged version, {newest.name}; pin one of "
        f"{', '.join(versions)} to keep a build's verdict stable",))


def aliases(profiles: Mapping[str, Target]) -> dict[str, str]:
    """The bare names of versioned profiles and the newest version each means."""
    out: dict[str, str] = {}
    for n in sorted(profiles, key=_version_key):
        if "@" in n:
            out[n.split("@", 1)[0]] = n
    return out


def _version_key(name: str) -> tuple[Any, ...]:
    """`rknn2@2.x` after `rknn2@1.4.0`: numeric parts compared as numbers, `x` as any."""
    base, _, version = name.partition("@")
    parts = tuple((10**9 if p == "x" else int(p)) if p == "x" or p.isdigit() else 0
                  for p in version.split("."))
    return (base, parts)
