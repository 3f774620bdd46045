"""Packaging hygiene (issue 18), read from pyproject.toml without building anything: the
license is an SPDX expression (PEP 639), the PEP 561 marker src/fxlower/py.typed exists and is
shipped, and requires-python and the "Programming Language :: Python :: 3.x" classifiers state
the same range (the lowest version mypy and ruff check against included). .ci/run builds the
wheel and fails on any deprecation warning, which these checks cannot see."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Any

from packaging.licenses import InvalidLicenseExpression, canonicalize_license_expression
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT: dict[str, Any] = PYPROJECT["project"]
SETUPTOOLS: dict[str, Any] = PYPROJECT["tool"]["setuptools"]
VERSION_CLASSIFIER = re.compile(r"Programming Language :: Python :: 3\.(\d+)$")


def classified_minors() -> list[int]:
    """The minor versions named by "Programming Language :: Python :: 3.x" classifiers."""
    return sorted(int(m.group(1)) for c in PROJECT.get("classifiers", [])
                  if (m := VERSION_CLASSIFIER.match(c)))


def admits(spec: SpecifierSet, minor: int) -> bool:
    """Some release of Python 3.minor satisfies requires-python."""
    return any(spec.contains(f"3.{minor}.{patch}") for patch in range(100))


def test_license_is_an_spdx_expression_string() -> None:
    license_ = PROJECT["license"]
    assert isinstance(license_, str), "project.license must be an SPDX string, not a table"
    try:
        canonical = canonicalize_license_expression(license_)
    except InvalidLicenseExpression as exc:  # pragma: no cover - the failure message
        raise AssertionError(f"project.license {license_!r} is not an SPDX expression") from exc
    assert canonical == license_, f"write the SPDX expression as {canonical!r}"
    # an SPDX expression and "License ::" classifiers together are an error in setuptools
    assert not [c for c in PROJECT.get("classifiers", []) if c.startswith("License ::")]
    for path in PROJECT.get("license-files", []):
        assert list(ROOT.glob(path)), f"license-files names {path!r}, which matches no file"


def test_build_backend_reads_an_spdx_license() -> None:
    """setuptools reads project.license as a string from release 77 on (PEP 639)."""
    reqs = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    (setuptools,) = [r for r in reqs if r.name == "setuptools"]
    assert not setuptools.specifier.contains("76.99"), "raise the floor to setuptools>=77"


def test_py_typed_marker_is_shipped() -> None:
    assert (ROOT / "src" / "fxlower" / "py.typed").is_file()
    assert SETUPTOOLS["package-dir"]["fxlower"] == "src/fxlower"
    assert "fxlower" in SETUPTOOLS["packages"]
    patterns = SETUPTOOLS.get("package-data", {}).get("fxlower", [])
    assert any(fnmatch.fnmatch("py.typed", p) for p in patterns), (
        'add "py.typed" to [tool.setuptools.package-data] "fxlower"')
    assert "Typing :: Typed" in PROJECT["classifiers"]


def test_classifiers_state_the_requires_python_range() -> None:
    spec = SpecifierSet(PROJECT["requires-python"])
    minors = classified_minors()
    assert minors, "name each supported Python as a 'Programming Language :: Python :: 3.x' classifier"
    for minor in minors:
        assert admits(spec, minor), f"3.{minor} is classified but requires-python excludes it"
    assert minors == list(range(minors[0], minors[-1] + 1)), f"a gap in the classified {minors}"
    admitted = [m for m in range(0, 40) if admits(spec, m)]
    assert admitted[0] == minors[0], (
        f"requires-python admits 3.{admitted[0]}, the classifiers start at 3.{minors[0]}")
    if admitted[-1] < 39:  # an upper bound: its last version is listed too
        assert admitted[-1] == minors[-1], (
            f"requires-python ends at 3.{admitted[-1]}, the classifiers at 3.{minors[-1]}")


def test_linters_check_the_lowest_supported_python() -> None:
    lowest = classified_minors()[0]
    assert PYPROJECT["tool"]["mypy"]["python_version"] == f"3.{lowest}"
    assert PYPROJECT["tool"]["ruff"]["target-version"] == f"py3{lowest}"
