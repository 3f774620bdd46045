"""A bounded run of the differential fuzzer (the long one is `make fuzz`, 10,000 cases):
random models of every pass family lowered with random tracers, targets and options, each
compared with the original in eager PyTorch (bit-exact for the gather and scatter families,
within a first-order rounding bound of a float64 run for the merges, and the merges' algebra
in float64), some through onnxruntime. Every case must end as "rewritten and equal" or
"refused with a reason"; every registered pass must be applied at least once.

The fuzzer is a development tool in tools/fuzz/ (not installed): the repository root goes
on sys.path. Bugs it found that are not fixed yet are listed in tools.fuzz.fuzz.KNOWN_BUGS, each
with its strict-xfail regression test in tests/regressions/: a failure matching one of them
is counted as that bug, any other fails the test. When a bug is fixed its regression test
starts passing (strict xfail: the suite fails) and its entry goes with the xfail mark.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fxlower.passes import PASSES  # noqa: E402

from tools.fuzz import fuzz, oracle  # noqa: E402

CASES = 400
SEED = 2024
BUDGET_SECONDS = 90


def test_bounded_fuzz_run_is_rewritten_and_equal_or_refused() -> None:
    t0 = time.perf_counter()
    stats = fuzz.run(cases=CASES, seed=SEED, onnx_every=75, jobs=1, shrink_seconds=0)
    seconds = time.perf_counter() - t0
    summary = fuzz.format_summary(stats)
    totals = fuzz.totals(stats)
    assert totals["cases"] >= CASES, summary  # draws PyTorch rejects are redrawn, not counted
    assert totals["harness"] == 0, summary
    new = stats["failures"]  # failures matching fuzz.KNOWN_BUGS are counted in stats["known"]
    assert new == [], "\n".join(f"{f['kind']}/{f['onnx']}: {f['message']}\n  {f['case']}\n\n"
                                f"{f['source']}" for f in new) + "\n" + summary
    never = [p.name for p in PASSES if stats["passes"].get(p.name, {}).get("equal", 0) == 0]
    assert never == [], f"passes never applied: {never}\n{summary}"
    assert seconds < BUDGET_SECONDS * 3, f"took {seconds:.0f}s\n{summary}"  # generous on a loaded CI box


def test_every_known_bug_has_its_regression_test() -> None:
    folder = Path(__file__).parent / "regressions"
    for *_, test in fuzz.KNOWN_BUGS:
        assert "xfail(strict=True" in (folder / test).read_text(), test


def test_every_registered_pass_has_a_generator() -> None:
    aimed = {p for _, passes, _ in fuzz.FAMILIES.values() for p in passes}
    assert {p.name for p in PASSES} <= aimed, {p.name for p in PASSES} - aimed


def test_a_failure_is_shrunk_and_written_as_a_standalone_test(tmp_path, monkeypatch) -> None:
    """The harness itself: a planted bug (every float gather of more than one element comes
    out "different") is found, shrunk, and written as a standalone pytest file that fails
    while the bug is there."""
    import pytest

    real = fuzz.evaluate

    def planted(build, inputs, fresh, **kw):
        out = real(build, inputs, fresh, **kw)
        if out.kind == "equal" and "gather_to_mask_matmul" in out.applied and any(
                t.is_floating_point() and t.numel() > 1 for t in inputs):
            out.kind, out.message = "different", "planted: output 0: 1 of 2 elements differ"
        return out

    monkeypatch.setattr(fuzz, "evaluate", planted)  # what the fuzzer calls
    monkeypatch.setattr(oracle, "evaluate", planted)  # what the written test imports
    part = fuzz.run_chunk("gather", 40, seed=3, shrink_seconds=60)
    (f,) = [f for f in part["failures"] if f["message"].startswith("planted")]
    assert f["kind"] == "different"
    assert f["size"] <= f["drawn_size"], (f["drawn"], f["case"])
    path = tmp_path / "test_planted.py"
    path.write_text(f["source"])
    ns: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), ns)  # noqa: S102 - imports `planted`
    with pytest.raises(AssertionError, match="planted"):
        ns[f"test_fuzz_gather_{f['fingerprint']}"]()
