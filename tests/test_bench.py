"""`python benchmarks/bench.py --quick`: the smoke run of the benchmark suite (issue 7).

Asserts on the numbers the run produces (every workload has a row with numeric, positive
latencies and ratios consistent with them; the machine, the matmul peak, memory, the
lowering-time comparison and the target table are there), never on timing thresholds:
speed goals live in `make bench`, not in tests. The suite is a development tool beside the
package (benchmarks/): the repository root goes on sys.path.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import bench  # noqa: E402

pytestmark = pytest.mark.slow  # a minute of benchmark runs: `make test-slow` (CI runs it)

NUM = r"[0-9]+(?:\.[0-9]+)?"


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("bench") / "bench.md"
    res = subprocess.run([sys.executable, "benchmarks/bench.py", "--quick", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out.read_text(), json.loads(out.with_suffix(".json").read_text()), res


def table(md: str, heading: str) -> dict[str, list[str]]:
    """The rows of the markdown table under `## heading`, keyed by their first cell."""
    section = md.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


def ratio_cell(cell: str) -> float:
    """'1.234 [1.10–1.40]': the ratio of medians, then the per-round ratios' quartiles."""
    m = re.fullmatch(rf"({NUM}) \[({NUM})–({NUM})\]", cell)
    assert m, cell
    assert float(m.group(2)) <= float(m.group(3)), cell
    return float(m.group(1))


def test_quick_has_every_workload_with_numeric_ratios(quick) -> None:
    md, data, _ = quick
    names = [w.name for w in bench.workloads(quick=True)]
    assert len(names) >= 10
    rows = table(md, "Latency: lowered vs original")
    header = rows.pop("workload")
    col = {h: i for i, h in enumerate(header)}
    assert set(names) <= set(rows), f"missing rows: {set(names) - set(rows)}"
    for name in names:
        cells = rows[name]
        assert "FAILED" not in " ".join(cells), cells
        ort_o, ort_l = float(cells[col["ORT original ms"]]), float(cells[col["ORT lowered ms"]])
        th_o, th_l = float(cells[col["torch original ms"]]), float(cells[col["torch lowered ms"]])
        ort_r, th_r = ratio_cell(cells[col["ORT ratio"]]), ratio_cell(cells[col["torch ratio"]])
        for v in (ort_o, ort_l, ort_r, th_o, th_l, th_r):
            assert math.isfinite(v) and v > 0, (name, cells)
        # the printed ratio is lowered / original of the printed medians (to their rounding)
        assert ort_r == pytest.approx(ort_l / ort_o, rel=0.1, abs=2e-3), cells
        assert th_r == pytest.approx(th_l / th_o, rel=0.1, abs=2e-3), cells
        mem = re.fullmatch(rf"({NUM}) → ({NUM})", cells[col["ORT peak MB original → lowered"]])
        assert mem, cells
        assert re.fullmatch(r"\d+ → 0", cells[col["Gather-family ONNX ops"]]), cells
        assert float(cells[col["lower s"]]) >= 0


def test_quick_targets_verdicts_agree_with_the_numbers(quick) -> None:
    md, data, _ = quick
    rows = {r["name"]: r for r in data["rows"]}
    for w in bench.workloads(quick=True):
        r = rows[w.name]
        assert r["ort_ratio"] == pytest.approx(
            r["ort_ms"]["lowered"]["median"] / r["ort_ms"]["original"]["median"])
        if w.target is not None:
            line = table(md, "Latency: lowered vs original")[w.name]
            assert ("PASS" if r["ort_ratio"] <= w.target else "MISS") in line
    # the gather workloads really were rewritten, the conv chains really merged
    assert rows["mae_masking"]["mask_macs"] > 0
    assert rows["embedding"]["rewrites"].get("index_to_mask_matmul") == 1
    assert rows["so_conv_chain"]["rewrites"].get("merge_conv_chain") == 1
    assert rows["so_conv_chain"]["merge_only"]
    verdicts = table(md, "Targets").values()
    assert {c[-1] for c in verdicts} - {"PASS", "MISS", "n/a", ""} == set()


def test_quick_machine_peak_memory_and_lowering_time(quick) -> None:
    md, data, _ = quick
    m = re.search(rf"onnxruntime \*\*({NUM}) GFLOP/s\*\*.*torch \*\*({NUM}) GFLOP/s\*\*", md)
    assert m and float(m.group(1)) > 0 and float(m.group(2)) > 0
    assert "CPU: " in md and f"torch {torch.__version__}" in md and "onnxruntime " in md
    assert re.search(r"cores: \S+ physical, \d+ logical", md)
    lowering = re.search(rf"ratio \*\*({NUM})×\*\* \(target ≤ 2×: (PASS|MISS)\)", md)
    assert lowering and float(lowering.group(1)) > 0
    assert "## Lowering in fresh processes" in md
    assert re.search(rf"Without verification \(`verify=False`, a second run\): {NUM} s", md)
    # memory: each ONNX session in its own process; a session costs something
    for r in data["rows"]:
        assert all(v is not None and v >= 0 for v in r["ort_peak_mb"].values()), r["name"]
    assert any(v > 0 for r in data["rows"] for v in r["ort_peak_mb"].values())
    # every mask workload got a kernel measurement or says why not
    mm = table(md, "Mask-matmul throughput")
    header = mm.pop("workload")
    emb = dict(zip(header, mm["embedding"], strict=True))
    for key in ("kernel GFLOP/s", "same-shape dense GFLOP/s", "intensity flop/B"):
        assert re.fullmatch(NUM, emb[key]), (key, emb)
    assert "## Method" in md and "clear_refs" in md


def test_quick_lowering_in_fresh_processes(quick) -> None:
    """Lowering against torch.export and lowering's peak memory, each in its own process:
    numbers for both models, and their targets in the table."""
    md, data, _ = quick
    models = data["lowering"]["models"]
    assert set(models) == set(bench.LOWERING_MODELS)
    for name, m in models.items():
        assert "error" not in m, (name, m)
        assert m["lower_s"] > 0 and m["export_s"] > 0, m
        assert m["ratio"] == pytest.approx(m["lower_s"] / m["export_s"])
        assert m["param_mib"] > 0 and m["lower_peak_x"] is not None and m["lower_peak_x"] >= 0, m
        for run in m["runs"]["lower"] + m["runs"]["export"]:
            assert run["peak_sampled_mb"] is not None, run  # the sampling thread ran
    whats = [t["what"] for t in data["targets"]]
    assert whats.count("peak memory during lower / parameter bytes") == 2
    assert any(w.startswith("fxlower.lower / torch.export time") for w in whats)
    rows = table(md, "Lowering in fresh processes")
    assert len([k for k in rows if k != "model"]) == 2, rows


def test_mask_matmul_nodes_found_in_lowered_onnx(tmp_path: Path) -> None:
    import fxlower
    from fxlower.api import onnx_export

    model, inputs = bench.build_embedding(quick=True)
    lowered = fxlower.lower(model, inputs)
    onnx_export(lowered, inputs, tmp_path / "e.onnx")
    onnx_export(model, inputs, tmp_path / "o.onnx")
    found = bench.mask_matmuls(tmp_path / "e.onnx")
    assert len(found) == 1
    macs = fxlower.report_of(lowered).applied[0].macs
    assert found[0]["flops"] == 2 * macs  # 16 tokens x 1000 rows x 64
    assert bench.mask_matmuls(tmp_path / "o.onnx") == []


def test_only_rejects_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--quick", "--only", "no_such_workload"]) == 2
    assert "unknown workloads" in capsys.readouterr().err
