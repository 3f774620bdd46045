"""Issue 6's promise on zoo models, as the README's per-target table states it: for every
profile, each small zoo model's cell (`fxlower.export(..., target=T)`, then `fxlower check
--target T` on the written file) is exactly the README's cell. The cell is computed by
`cell` of tools/target_table.py, the function `make targets-table` runs for each cell, and
the README's table is read back by that tool's `read_tables`: a change of verdict, of
wording, or a README edited by hand fails here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import load_tool

import fxlower
from fxlower.check import check_file
from fxlower.targets import load_profiles

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

target_table = load_tool("target_table")

MODELS = ["mae", "bert_embedding", "topk_attention"]  # the small zoo models; the table has more
PROFILES = sorted(load_profiles())
README = target_table.read_tables((ROOT / "README.md").read_text(encoding="utf-8"), PROFILES)


def test_readme_has_a_per_target_row_of_every_profile_for_each_small_zoo_model() -> None:
    """`read_tables` finds only tables whose header is `model` and exactly the packaged
    profiles, in the order the tool writes them: a profile added, renamed or removed
    without re-running `make targets-table` leaves these rows missing."""
    missing = [n for n in MODELS if n not in README]
    assert not missing, f"README.md has no per-target row with columns {PROFILES} for {missing}"
    for name in MODELS:
        assert list(README[name]) == PROFILES


def test_read_tables_reads_back_what_table_lines_writes() -> None:
    results = {(n, t): f"{n} on {t}" for n in ("a", "b") for t in PROFILES}
    lines = target_table.table_lines(["a", "b"], PROFILES, results, {"b"})
    assert lines[2].startswith("| a | ") and lines[3].startswith(f"| b {target_table.MARK} | ")
    text = "\n".join(["intro", "", *lines, "", "after"])
    assert target_table.read_tables(text, PROFILES) == {
        n: {t: f"{n} on {t}" for t in PROFILES} for n in ("a", "b")}


@pytest.mark.parametrize("target", PROFILES)
@pytest.mark.parametrize("name", MODELS)
def test_zoo_model_on_target_gives_the_readme_per_target_cell(name: str, target: str,
                                                              tmp_path: Path) -> None:
    expected = README.get(name, {}).get(target)
    assert expected is not None, f"README.md's per-target table has no cell ({name}, {target})"
    got = target_table.cell(name, target, tmp_path)
    assert got == expected, f"({name}, {target}): the code gives\n  {got}\nREADME.md says\n  {expected}"
    if got == "ok":  # `cell` ran `fxlower check --target` in a fresh process; here in this one
        result = check_file(target_table.cell_path(tmp_path, name, target), target=target)
        assert result.ok, result.format()


def test_default_target_is_generic_and_forbids_both_gather_and_scatter_families() -> None:
    """The default profile (`target=None`) is `generic`, which forbids every op of the
    Gather and Scatter families; that the small zoo then exports free of them is the
    `generic` column above (all `ok`) and tests/test_zoo.py."""
    t = fxlower.get_target(None)
    assert t.name == "generic"
    for op in ("Gather", "GatherElements", "GatherND", "Scatter", "ScatterElements",
               "ScatterND"):
        assert not t.allows(op), op
