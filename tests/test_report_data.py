"""Reports as data (issue 18): `Report.to_dict()` / `fxlower report --format json` /
`fxlower lower --report-json FILE` follow the packaged, versioned schema
(report.schema.json, `fxlower-report/1`), and the text form is rendered from that data.
Progress goes to stderr on a terminal only, never into the report."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from pathlib import Path

import jsonschema
import pytest
import torch
import torch.nn as nn

import fxlower
from fxlower import progress
from fxlower.cli import main
from fxlower.onnx_lower import render as render_onnx
from fxlower.report import SCHEMA_ID, render, schema

ROOT = Path(__file__).resolve().parents[1]


class Lookups(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(12, 4)

    def forward(self, ids, x):
        return self.emb(ids).sum(-1) + torch.gather(x, 1, ids.clamp(0, 4))


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 12, (2, 5), generator=g), torch.randn(2, 5, generator=g)


def _validate(d: dict) -> None:
    jsonschema.validate(d, schema(), cls=jsonschema.Draft202012Validator)


def test_the_schema_is_a_valid_draft_2020_12_schema_with_its_version() -> None:
    s = schema()
    jsonschema.Draft202012Validator.check_schema(s)
    assert s["title"] == SCHEMA_ID == "fxlower-report/1"


def test_report_data_validates_and_the_text_is_rendered_from_it(tmp_path: Path) -> None:
    report = fxlower.export(Lookups().eval(), _inputs(), tmp_path / "m.onnx")
    d = report.to_dict()
    _validate(d)
    assert d["schema"] == "fxlower-report/1" and d["input"] == "torch"
    # the embedding (index_to_mask_matmul) and the torch.gather (gather_to_mask_matmul)
    assert sorted(a["pass"] for a in d["applied"]) == ["gather_to_mask_matmul",
                                                       "index_to_mask_matmul"]
    assert all(a["macs"] > 0 for a in d["applied"])
    assert all(a["rewrite_id"] == f"{a['pass']}:{a['node']}" for a in d["applied"])
    assert d["remaining"] == [] and d["onnx"]["forbidden"] == 0
    assert {"capture", "normalise", "rewrite", "verify", "export", "check",
            "onnxruntime"} <= set(d["seconds"])
    # the data survives JSON and the text comes from the data alone
    assert render(json.loads(json.dumps(d, allow_nan=False))) == report.format()


def test_the_schema_refuses_data_that_breaks_it() -> None:
    """Not a vacuous schema: a rewrite without its cost, an unknown version, a skipped
    entry without a reason are each refused."""
    low = fxlower.lower(Lookups().eval(), _inputs())
    d = fxlower.report_of(low).to_dict()
    _validate(d)
    for broken in (
        {**d, "schema": "fxlower-report/2"},
        {**d, "applied": [{k: v for k, v in d["applied"][0].items() if k != "macs"}]},
        {**d, "skipped": [{"pass": "p", "node": "n", "op": "o"}]},
        {**d, "input": "onnx"},  # torch data under the onnx form
    ):
        with pytest.raises(jsonschema.ValidationError):
            _validate(broken)


def test_non_finite_figures_become_null_not_invalid_json() -> None:
    low = fxlower.lower(Lookups().eval(), _inputs())
    r = fxlower.report_of(low)
    r.onnx = {"path": "x.onnx", "nodes": 1, "forbidden": 0, "ort_max_abs_error": float("nan")}
    d = r.to_dict()
    assert d["onnx"]["ort_max_abs_error"] is None
    json.dumps(d, allow_nan=False)
    _validate(d)
    assert "onnxruntime max abs error nan" in r.format()


def test_cli_report_format_json_validates(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(ROOT / "models" / "bert_embedding.py") + ":build",
                 "--format", "json"]) == 0
    out = capsys.readouterr().out
    d = json.loads(out)  # stdout is the JSON and nothing else
    _validate(d)
    assert d["applied"] and d["remaining"] == []


def test_cli_lower_writes_report_json_and_onnx_input_validates(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]
                                                                ) -> None:
    src = tmp_path / "fac.py"
    src.write_text("import sys\n"
                   f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                   "from test_report_data import Lookups, _inputs\n"
                   "def make():\n    return Lookups().eval(), _inputs()\n")
    out, rep = tmp_path / "m.onnx", tmp_path / "m.report.json"
    assert main(["lower", f"{src}:make", "-o", str(out), "--report-json", str(rep)]) == 0
    d = json.loads(rep.read_text())
    _validate(d)
    assert d["onnx"]["path"] == str(out) and d["onnx"]["forbidden"] == 0
    capsys.readouterr()

    # the ONNX form: the plain export of the same model, lowered from the file alone
    plain = tmp_path / "plain.onnx"
    fxlower.api.onnx_export(Lookups().eval(), _inputs(), plain)
    assert main(["report", str(plain), "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    _validate(d)
    assert d["input"] == "onnx" and {n["status"] for n in d["nodes"]} == {"lowered"}
    assert d["verification"]["matched"] is True and "lower" in d["seconds"]
    rep2 = tmp_path / "plain.report.json"
    assert main(["lower", str(plain), "-o", str(tmp_path / "low.onnx"),
                 "--report-json", str(rep2)]) == 0
    d2 = json.loads(rep2.read_text())
    _validate(d2)
    assert render_onnx(d2) in capsys.readouterr().out


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def fast_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "SHOW_AFTER", 0.05)
    monkeypatch.setattr(progress, "_TICK", 0.02)


def _slow_stage(stream: io.StringIO, verbose: bool | None) -> None:
    with progress.session(verbose, stream=stream):
        with progress.stage("capture") as st:
            progress.step("pass 1/2 embedding_to_matmul")
            time.sleep(0.3)
            st.summary = "torch.export"
        with progress.stage("normalise"):
            pass  # fast: never shown


def test_a_long_stage_shows_on_a_terminal_with_its_time(fast_progress: None) -> None:
    tty = _Tty()
    _slow_stage(tty, None)
    text = tty.getvalue()
    assert "fxlower: capture pass 1/2 embedding_to_matmul ... 0 s" in text  # while it runs
    assert "fxlower: capture: torch.export, 0.3 s\n" in text  # kept when it ends
    assert "normalise" not in text


def test_progress_is_silent_in_a_pipe_and_with_verbose_false(fast_progress: None) -> None:
    pipe = io.StringIO()
    _slow_stage(pipe, None)
    assert pipe.getvalue() == ""
    tty = _Tty()
    _slow_stage(tty, False)
    assert tty.getvalue() == ""
    forced = io.StringIO()  # verbose=True in a pipe: one line per long stage, no redraws
    _slow_stage(forced, True)
    assert forced.getvalue() == "fxlower: capture: torch.export, 0.3 s\n"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_stage_inside_another_gives_the_line_back_to_it(fast_progress: None) -> None:
    """lower_onnx's `lower` stage runs `lower` per node, whose stages nest in it: the
    outer stage's final line keeps its name and its own time (found in review)."""
    tty = _Tty()
    with progress.session(None, stream=tty):
        with progress.stage("lower"):
            with progress.stage("capture"):
                pass
            time.sleep(0.3)
    last = tty.getvalue().replace("\r", "\n").strip().split("\n")[-1]
    assert last.endswith("fxlower: lower: 0.3 s")


def test_stages_are_logged_at_info_for_library_use() -> None:
    log, handler = logging.getLogger("fxlower"), _Records()
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        fxlower.lower(Lookups().eval(), _inputs(), verbose=False)
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    stages = [r.getMessage().split(":")[0] for r in handler.records]
    assert stages == ["capture", "normalise", "rewrite", "verify"]
    assert all(r.levelno == logging.INFO for r in handler.records)


def test_lower_shows_each_of_its_stages_on_a_terminal(fast_progress: None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The real lowering on a (fake) terminal, every stage counted as long: each stage's
    final line, in order, and the report's data holds none of it."""
    monkeypatch.setattr(progress, "SHOW_AFTER", 0.0)
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    low = fxlower.lower(Lookups().eval(), _inputs())
    finals = [line.split(":")[1].strip() for line in tty.getvalue().replace("\r", "\n")
              .split("\n") if line.startswith("\x1b[2Kfxlower: ") and line.count(":") >= 2]
    assert finals == ["capture", "normalise", "rewrite", "verify"]
    assert "fxlower: " not in json.dumps(fxlower.report_of(low).to_dict())


def test_lower_in_a_pipe_prints_nothing_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    fxlower.lower(Lookups().eval(), _inputs())
    assert capsys.readouterr().err == ""


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
