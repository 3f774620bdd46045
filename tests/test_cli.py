"""The command line, run as a user runs it: `fxlower check/lower/report`, exit codes and
messages, factory specs by path and by module, target profiles (`fxlower targets`,
`check --target`), and a non-editable `pip install .` that ships the passes and profiles."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FACTORY = textwrap.dedent(
    """
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 8)

        def forward(self, tok, x):
            h = self.emb(tok)
            return h[:, 0] + torch.gather(x, 1, tok % 4)

    def build():
        torch.manual_seed(0)
        return Net().eval(), (torch.randint(0, 20, (2, 8)), torch.randn(2, 4))
    """
)


def run(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fxlower", *args], capture_output=True, text=True,
        cwd=cwd, env=env, timeout=600,
    )


@pytest.fixture(scope="module")
def factory(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("spec")
    (d / "netfactory.py").write_text(FACTORY)
    return d / "netfactory.py"


@pytest.mark.slow  # a full CLI round trip in subprocesses (make test-slow, in CI)
def test_lower_check_report_round_trip(factory: Path, tmp_path: Path) -> None:
    out = tmp_path / "build" / "net.onnx"
    r = run("lower", f"{factory}:build", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert out.is_file()
    assert "index_to_mask_matmul" in r.stdout and "gather_to_mask_matmul" in r.stdout
    assert "forbidden 0" in r.stdout

    r = run("check", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok" in r.stdout

    r = run("report", f"{factory}:build")
    assert r.returncode == 0, r.stderr
    assert "applied (3)" in r.stdout
    assert "verification:" in r.stdout


@pytest.mark.slow  # a full CLI round trip in subprocesses (make test-slow, in CI)
def test_check_fails_the_unlowered_file_and_names_nodes(factory: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(factory.parent))
    try:
        import netfactory
    finally:
        sys.path.remove(str(factory.parent))
    from fxlower.api import onnx_export

    model, inputs = netfactory.build()
    path = tmp_path / "raw.onnx"
    onnx_export(model, inputs, path)
    r = run("check", str(path))
    assert r.returncode == 1
    assert "Gather" in r.stdout and "GatherElements" in r.stdout
    assert "FAILED" in r.stdout
    r = run("check", str(path), "--forbid", "MatMul")
    assert r.returncode == 0, r.stdout
    r = run("check", str(path), "--allow", "Gather,GatherElements")
    assert r.returncode == 1 and "not in allow list" in r.stdout


def test_module_spec_from_working_directory(tmp_path: Path) -> None:
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(FACTORY)
    r = run("report", "mypkg.nets:build", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "applied" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("check", "/nonexistent/model.onnx"), "model.onnx"),
        (("report", "no_colon_here"), "not a factory spec"),
        (("report", "/nonexistent/file.py:build"), "no such file"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(args: tuple[str, ...], message: str) -> None:
    r = run(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_check_rejects_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01 definitely not protobuf \xff" * 10)
    r = run("check", str(bad))
    assert r.returncode == 2
    assert "bad.onnx" in r.stderr and "Traceback" not in r.stderr


def test_lowering_failure_exits_1_naming_the_op(tmp_path: Path) -> None:
    f = tmp_path / "maskfactory.py"
    f.write_text(textwrap.dedent(
        """
        import torch, torch.nn as nn
        class M(nn.Module):
            def forward(self, x, m):
                return x[m]
        def build():
            return M(), (torch.randn(3, 4), torch.randn(3, 4) > 0)
        """
    ))
    r = run("lower", f"{f}:build", "-o", str(tmp_path / "m.onnx"))
    assert r.returncode == 1
    assert "boolean mask index" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow  # a full CLI round trip in subprocesses (make test-slow, in CI)
def test_on_forbidden_warn_writes_the_file_lists_what_remains_and_exits_1(tmp_path: Path
                                                                         ) -> None:
    f = tmp_path / "poolfactory.py"
    f.write_text(textwrap.dedent(
        """
        import torch, torch.nn as nn
        def build():  # windows of 7 -> 3 do not tile: GatherND, reported, not lowered
            return nn.AdaptiveAvgPool1d(3), (torch.randn(2, 4, 7),)
        """
    ))
    out = tmp_path / "m.onnx"
    r = run("lower", f"{f}:build", "-o", str(out))
    assert r.returncode == 1 and not out.exists()
    r = run("lower", f"{f}:build", "-o", str(out), "--on-forbidden", "warn")
    assert r.returncode == 1, r.stderr
    assert out.exists() and f"wrote {out}" in r.stdout
    assert "adaptive_avg_pool1d" in r.stdout and "GatherND" in r.stdout
    assert run("check", str(out)).returncode == 1


def _topk_model(path: Path) -> Path:
    """A small hand-built ONNX file: TopK, a Gather at its indices, Relu; an int64 input."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("TopK", ["x", "k"], ["v", "i"], name="topk0", axis=1),
        helper.make_node("Gather", ["x", "i"], ["g"], name="gather0", axis=1),
        helper.make_node("Relu", ["v"], ["y"], name="relu0"),
        helper.make_node("Add", ["n", "n"], ["n2"], name="add_n"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4]),
         helper.make_tensor_value_info("n", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2]),
         helper.make_tensor_value_info("g", TensorProto.FLOAT, [3, 3, 2]),
         helper.make_tensor_value_info("n2", TensorProto.INT64, [2])],
        [helper.make_tensor("k", TensorProto.INT64, [1], [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    path.write_bytes(model.SerializeToString())
    return path


def test_targets_lists_every_profile() -> None:
    r = run("targets")
    assert r.returncode == 0, r.stderr
    from fxlower.targets import load_profiles

    for name, target in load_profiles().items():
        assert f"\n{name}: " in "\n" + r.stdout, name
        assert target.source in r.stdout
        assert target.date in r.stdout
    assert "generic: " in r.stdout and "[default]" in r.stdout
    assert "rockchip-linux/rknn-toolkit2" in r.stdout
    assert "int64:   no" in r.stdout  # ethos-u55
    assert "forbids: 6 ops: Gather, GatherElements, GatherND, Scatter, ScatterElements, ScatterND" in r.stdout
    assert "only these 78 ops" in r.stdout  # rknn2's allow list


@pytest.mark.slow  # a full CLI round trip in subprocesses (make test-slow, in CI)
def test_check_against_a_target(tmp_path: Path) -> None:
    path = _topk_model(tmp_path / "topk.onnx")
    r = run("check", str(path))  # generic: the Gather is forbidden
    assert r.returncode == 1 and "forbidden op Gather (node 'gather0')" in r.stdout
    r = run("check", str(path), "--target", "rknn2@1.4.0")  # rknn2 has Gather, lacks TopK
    assert r.returncode == 1
    assert "forbidden op TopK (node 'topk0') in graph" in r.stdout
    assert "Gather" not in r.stdout
    assert "FAILED: 1 violation (TopK x1) in 4 nodes, target rknn2@1.4.0" in r.stdout
    # explicit flags on top of a profile: --allow lifts, --forbid adds
    r = run("check", str(path), "--target", "rknn2@1.4.0", "--allow", "TopK")
    assert r.returncode == 0, r.stdout
    assert "ok (4 nodes checked, no forbidden ops, target rknn2@1.4.0)" in r.stdout
    r = run("check", str(path), "--target", "rknn2@1.4.0", "--allow", "TopK", "--forbid", "Relu")
    assert r.returncode == 1 and "forbidden op Relu" in r.stdout and "TopK" not in r.stdout
    # a target without int64: the int64 input and the Add's output are reported
    r = run("check", str(path), "--target", "ethos-u55")
    assert r.returncode == 1
    assert "int64 tensor 'n' (graph input) in graph (target has no int64)" in r.stdout
    assert "int64 tensor 'n2' (graph output)" in r.stdout
    assert "'k'" not in r.stdout  # TopK's K is int64 shape data


def test_check_unknown_target_exits_2_naming_the_known_ones(tmp_path: Path) -> None:
    path = _topk_model(tmp_path / "topk.onnx")
    r = run("check", str(path), "--target", "rknn3")
    assert r.returncode == 2
    assert "unknown target 'rknn3'" in r.stderr
    for name in ("generic", "rknn2@1.4.0", "kneron", "ethos-u55", "tidl"):
        assert name in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_non_editable_install_ships_the_passes_and_console_script(tmp_path: Path) -> None:
    target = tmp_path / "site"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert (target / "fxlower" / "passes" / "gather_to_mask_matmul.py").is_file()
    assert (target / "fxlower" / "passes" / "__init__.py").is_file()
    # development tools live beside the package (tools/fuzz, benchmarks), not in it; a stale
    # build/lib from before they moved would still ship them: `make clean`
    for tool in ("fuzz.py", "bench.py"):
        assert not (target / "fxlower" / tool).exists(), tool
    for name in ("generic", "rknn2@1.4.0", "kneron", "ethos-u55", "tidl"):
        assert (target / "fxlower" / "profiles" / f"{name}.json").is_file(), name
    env = dict(os.environ, PYTHONPATH=str(target))
    probe = subprocess.run(
        [sys.executable, "-c",
         "import fxlower, fxlower.passes as p; print(fxlower.__file__); print(len(p.PASSES));"
         "from fxlower.targets import load_profiles, get_target; import fxlower.targets as t;"
         "print(t.__file__); print(sorted(load_profiles())); print(get_target('rknn2@1.4.0').source)"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.splitlines()
    assert str(target) in lines[0]
    assert str(target) in lines[2]  # the profiles are read from the installed package
    assert "'rknn2@1.4.0'" in lines[3] and "'generic'" in lines[3]
    assert "RKNNToolKit2_OP_Support-1.4.0.md" in lines[4]
    script = target / "bin" / "fxlower"
    assert script.is_file()
    r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and "check" in r.stdout


def test_demo_outside_a_checkout_is_a_usage_error(tmp_path: Path) -> None:
    """The demo lowers the repository's models/ zoo, which is not installed: elsewhere it
    says so, exit status 2, no traceback."""
    r = run("demo", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "fxlower demo: error:" in r.stderr and "checkout" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr


@pytest.mark.slow  # a full CLI round trip in subprocesses (make test-slow, in CI)
def test_zoo_spec_from_the_repository_root(tmp_path: Path) -> None:
    out = tmp_path / "mae.onnx"
    r = run("lower", "models/mae.py:build", "-o", str(out), cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert out.is_file() and "gather_to_mask_matmul" in r.stdout
    r = run("check", str(out), "--target", "generic")
    assert r.returncode == 0, r.stdout
