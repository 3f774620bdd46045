"""`make bench`: the benchmark suite (issue 7). Not a timed test: it measures and reports.

    python benchmarks/bench.py [--quick] [--only NAME ...] [--out build/bench.md]
    python benchmarks/bench.py --only lowering      # lowering time and memory alone

From the repository root (the zoo's models/ folder is imported from there). A development
tool beside the package, not part of it.

For every workload, in one run: build the original model and its example inputs,
`fxlower.lower` it (wall time), export both to ONNX (fxlower.api.onnx_export, the dynamo
exporter), and time both in onnxruntime and in eager torch, interleaved (the order
alternates every round), after warm-up, on fresh inputs drawn once up front (one draw per
round, fxlower.verify.draw_like), reporting medians and the ratio lowered / original. Next to
each ratio with a target: PASS or MISS. Results go to build/bench.md (and build/bench.json),
with a description of the machine and its own measured fp32 matmul peak.

Method notes (also written into the output):
- onnxruntime: CPUExecutionProvider, default graph optimisations and default thread count,
  but intra-op spinning off in every session. Two live sessions with spinning thread pools
  steal cores from each other when runs are interleaved (measured: BERT-base 525 ms with
  spinning vs 375 ms without, on 2 cores), which would bias the comparison.
- mask-matmul throughput, three figures:
  * implied: the rewrites' multiply-adds per call (report.applied[*].macs of the
    *_mask_matmul passes, including the non-finite class-code path) times 2, divided by
    (lowered - original) median time, i.e. as if the whole slowdown were the mask product;
  * kernel: the run-time mask MatMul nodes of the lowered ONNX (a MatMul operand that comes
    from an `Equal` through casts/reshapes only), their FLOPs from ONNX shape inference and
    their kernel time from onnxruntime's profiler (SessionOptions.enable_profiling), the
    original and lowered files profiled side by side with alternating runs;
  * same-shape: a dense one-node MatMul of the same shapes, timed in the same rounds, to
    tell a slow mask product from a shape onnxruntime runs slowly anyway.
  Against the machine's measured matmul peak (median GFLOP/s of a 2048^2, --quick 1024^2,
  fp32 MatMul with a constant, prepacked right operand in onnxruntime; torch.mm in torch),
  measured before and after the workloads and, in onnxruntime, also in every workload's
  profiled rounds; the highest figure is the machine's peak (load only lowers a sample).
  The >= 70 % verdict compares the kernel with the peak sampled in the same rounds (under
  the same load); the fraction of the run's highest peak is shown next to it.
  The >= 70 % target applies where the product is compute-bound: its arithmetic intensity
  (FLOPs / bytes of operands and result) above the machine balance (peak / measured copy
  bandwidth), and at least 1 ms of work at the peak (smaller products are decided by the
  per-call costs of dispatching to the thread pool, not by arithmetic). Kernel, same-shape
  and peak-sample times are all profiler kernel times, not wall clock.
- peak memory: each ONNX file is loaded and run (3 runs) in a fresh subprocess that imports
  only numpy and onnxruntime (three such processes per file, the median reported: session
  creation is not deterministic, the same file has been seen at 440 and 580 MB); reported
  is the peak RSS (VmHWM, reset through
  /proc/self/clear_refs just before the session is created) minus the RSS at that moment:
  the session's own memory (weights as loaded and prepacked, arena, activations). Where
  clear_refs is not writable, the ru_maxrss delta. Torch's eager memory is not
  measured: in-process high-water marks cannot separate the two models; the mask sizes the
  rewrites materialise are in the report (mask_elems).
- merges, "never slower": a workload whose rewrites are all merges (BN folds, conv and
  linear chains) passes when the lowered model did not lose in most rounds: the lower
  quartile of the per-round ratios lowered / original is at most 1.
- embedding="host": the lowered ONNX file is the device graph, fed the rows the host looked
  up; the host lookup's own time (eager torch) is listed apart.
- lowering, as a user runs it (the `lowering` entry of --only): every figure from its own
  fresh process (`python -c`, the model built there, then one call): `fxlower.lower(model,
  inputs)` (defaults: verification on) against `torch.export.export(model, inputs,
  strict=False)` alone, on BERT-base (models/hf_bert.py:build_full, seq 128) and a
  Llama-shaped decoder-only model (transformers LlamaForCausalLM, hidden 1024, 8 layers,
  intermediate 4096, vocab 32000, 16 heads, random weights, eval, 32 tokens; 762 MiB of
  parameters); wall time of the call (median over the processes, lower and export runs
  alternating) and the call's peak memory on top of what the process held right before it
  (VmHWM after resetting it through /proc/self/clear_refs, minus VmRSS before the call;
  also the highest VmRSS sampled every 5 ms in a thread, the only figure where clear_refs
  is not writable), as a multiple of the model's parameter bytes. Targets: lower <= 2x
  export, peak <= 1.0x the parameters.
- lowering time in one process (the BERT-base workload's breakdown): `fxlower.lower` wall
  time (capture + passes + verification) against `torch.export.export(strict=False)` alone
  on the same model, in the same process, after one untimed export (the warm figure).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import io
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils import _pytree as pytree

MASK_PASSES = ("index_to_mask_matmul", "gather_to_mask_matmul")
MERGE_PREFIXES = ("merge_", "fold_")
GATHER_FAMILY = ("Gather", "GatherElements", "GatherND")
MERGE_TARGET = 1.0  # "never slower because of a merge"

MASK_PEAK_TARGET = 0.70  # mask-matmuls at >= 70 % of the measured matmul peak
MIN_COMPUTE_S = 1e-3  # ... where compute-bound: >= 1 ms of work at the peak


def merge_not_slower(r: dict[str, Any]) -> bool:
    """"Never slower because of a merge", with the noise a 2-core machine has: slower means
    the lowered model lost in most rounds (the lower quartile of the per-round ratios is
    above 1), not a median a percent above 1 while the rounds straddle it."""
    return bool(r["ort_paired"]["p25"] <= MERGE_TARGET)


# --------------------------------------------------------------------------- workloads


class MaeMasking(nn.Module):
    """MAE random masking, the gather alone: argsort of the noise, keep the first `keep`."""

    def __init__(self, keep: int) -> None:
        super().__init__()
        self.keep = keep

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        ids_keep = torch.argsort(noise, dim=1)[:, : self.keep]
        return torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, x.shape[-1]))


class TopKGather(nn.Module):
    """gather(src, dim, topk(x, k, dim).indices); src is x itself unless a second input."""

    def __init__(self, k: int, dim: int = 2) -> None:
        super().__init__()
        self.k, self.dim = k, dim

    def forward(self, x: torch.Tensor, *src: torch.Tensor) -> torch.Tensor:
        idx = torch.topk(x, self.k, dim=self.dim).indices
        return torch.gather(src[0] if src else x, self.dim, idx)


def _seeded(fn: Callable[[], tuple[nn.Module, tuple[Any, ...]]]) -> tuple[nn.Module, tuple[Any, ...]]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return fn()


def build_mae(quick: bool) -> tuple[nn.Module, tuple[Any, ...]]:
    b, n, d, keep = (4, 16, 32, 4) if quick else (64, 196, 768, 49)
    return _seeded(lambda: (MaeMasking(keep).eval(), (torch.randn(b, n, d), torch.rand(b, n))))


def build_topk(quick: bool, other_source: bool = False) -> tuple[nn.Module, tuple[Any, ...]]:
    shape, k = ((1, 2, 8, 4, 4), 2) if quick else ((1, 8, 64, 32, 32), 8)

    def make() -> tuple[nn.Module, tuple[Any, ...]]:
        x = torch.randn(shape)
        return TopKGather(k).eval(), ((x, torch.randn(shape)) if other_source else (x,))

    return _seeded(make)


def build_embedding(quick: bool) -> tuple[nn.Module, tuple[Any, ...]]:
    vocab, dim, tokens = (1000, 64, 16) if quick else (30522, 768, 128)

    def make() -> tuple[nn.Module, tuple[Any, ...]]:
        emb = nn.Embedding(vocab, dim).eval()
        ids = torch.randint(0, vocab, (1, tokens))
        ids[0, 0], ids[0, 1] = 0, vocab - 1  # fresh draws then span the whole table
        return emb, (ids,)

    return _seeded(make)


def build_so_chain(quick: bool) -> tuple[nn.Module, tuple[Any, ...]]:
    """Stack Overflow 58357815: conv(1->100, 3x3, pad 2) then conv(100->2, 5x5, pad 4), no bias."""
    side = 28 if quick else 224

    def make() -> tuple[nn.Module, tuple[Any, ...]]:
        m = nn.Sequential(nn.Conv2d(1, 100, 3, padding=2, bias=False),
                          nn.Conv2d(100, 2, 5, padding=4, bias=False)).eval()
        return m, (torch.randn(1, 1, side, side),)

    return _seeded(make)


def build_conv_bn_conv(quick: bool, out_ratio: float = 1.0) -> tuple[nn.Module, tuple[Any, ...]]:
    """conv3x3 -> BatchNorm (eval, non-trivial statistics) -> conv1x1 (c -> c -> c*out_ratio).
    Merged, the 3x3 conv maps c to c*out_ratio channels directly: 9*c*c*r MACs per pixel
    against 9*c*c + c*c*r, so the merge pays (r < 8/9) or is refused by the cost model."""
    c, side = (8, 16) if quick else (64, 56)
    co = max(1, int(c * out_ratio))

    def make() -> tuple[nn.Module, tuple[Any, ...]]:
        bn = nn.BatchNorm2d(c)
        assert bn.running_mean is not None and bn.running_var is not None
        with torch.no_grad():
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.normal_()
            bn.bias.normal_()
        m = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), bn, nn.Conv2d(c, co, 1)).eval()
        return m, (torch.randn(1, c, side, side),)

    return _seeded(make)


ROOT = Path(__file__).resolve().parents[1]  # the repository: benchmarks/ sits at its root


def _models() -> Any:
    root = ROOT
    for p in (str(Path.cwd()), str(root)):
        if p not in sys.path:
            sys.path.insert(0, p)
    import models  # the repository's zoo

    return models


def build_zoo(name: str, quick: bool) -> tuple[nn.Module, tuple[Any, ...]]:
    models = _models()
    size = "full" if name in models.FULL and not quick else "small"
    model, inputs = models.load(name, size)
    return model, tuple(inputs)


@dataclass
class Workload:
    name: str
    kind: str
    build: Callable[[bool], tuple[nn.Module, tuple[Any, ...]]]
    target: float | None = None  # ORT ratio lowered / original must be <= target
    target_note: str = ""
    lower_kwargs: dict[str, Any] = field(default_factory=dict)
    time_export: bool = False  # also time torch.export.export against fxlower.lower


# Zoo entries the quick run includes (embeddings, BN folding and merges are in the quick
# BERT and conv workloads already); the full run takes every SMALL entry.
QUICK_ZOO = ("mae",)


def workloads(quick: bool) -> list[Workload]:
    ws = [
        # exact (NaN/inf/-0.0 carried through): issue 16's target; assume_finite: issue 7's
        Workload("mae_masking", "(a) MAE masking gather", build_mae, 3.5, "MAE masking, exact"),
        Workload("mae_masking[assume_finite]", "(a) MAE masking gather, assume_finite=True",
                 build_mae, 2.0, "MAE masking", {"assume_finite": True}),
        Workload("topk_gather_5d", "(b) top-k gather, 5-D, gather at topk's own indices",
                 build_topk, 1.1, "top-k 5-D pattern"),
        Workload("topk_gather_5d[other_source]", "(b) top-k indices gathering a second tensor",
                 lambda q: build_topk(q, other_source=True), 1.5, "top-k second tensor, exact"),
        Workload("topk_gather_5d[other_source,assume_finite]",
                 "(b) top-k indices gathering a second tensor, assume_finite=True",
                 lambda q: build_topk(q, other_source=True), 1.1, "top-k 5-D pattern",
                 {"assume_finite": True}),
        Workload("embedding", "(c) nn.Embedding 30522x768, 128 tokens", build_embedding),
        Workload("so_conv_chain", "(d) SO 58357815 conv chain", build_so_chain, 0.1,
                 "SO conv chain"),
        Workload("conv_bn_conv1x1", "(d) conv3x3 -> BN -> conv1x1", build_conv_bn_conv, 0.7,
                 "conv-BN-1x1"),
        Workload("conv_bn_conv1x1[c/4 out]", "(d) conv3x3 -> BN -> conv1x1 reducing to c/4",
                 lambda q: build_conv_bn_conv(q, 0.25)),
        Workload("conv_bn_conv1x1[4c out]", "(d) conv3x3 -> BN -> conv1x1 expanding to 4c "
                 "(merge refused by the cost model)", lambda q: build_conv_bn_conv(q, 4.0)),
        Workload("hf_bert_base", "(e) BERT-base, seq 128", lambda q: build_zoo("hf_bert_base", q),
                 1.35, "BERT-base", time_export=True),
        Workload("hf_bert_base[host]", "(e) BERT-base, seq 128, embedding=\"host\"",
                 lambda q: build_zoo("hf_bert_base", q), 1.05, "BERT-base host",
                 {"embedding": "host"}),
        Workload("hf_vit_b16", "(e) ViT-B/16, 224", lambda q: build_zoo("hf_vit_b16", q),
                 1.05, "ViT-B/16"),
    ]
    models = _models()
    zoo = [n for n in models.SMALL if not quick or n in QUICK_ZOO]
    for n in zoo:
        ws.append(Workload(f"zoo/{n}", "(f) small zoo", _zoo_builder(n)))
    return ws


def _zoo_builder(name: str) -> Callable[[bool], tuple[nn.Module, tuple[Any, ...]]]:
    return lambda quick: build_zoo(name, quick)


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    import onnx
    import onnxruntime

    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(),
                            "logical_cores": os.cpu_count()}
    cores: set[tuple[str, str]] = set()
    phys = core = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key, val = key.strip(), val.strip()
                if key == "model name":
                    info["cpu"] = val
                elif key == "physical id":
                    phys = val
                elif key == "core id":
                    core = val
                    cores.add((phys, core))
                elif key == "flags":
                    info["virtualised"] = "hypervisor" in val.split()
    except OSError:
        pass
    info["physical_cores"] = len(cores) or None
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        info["memory_gb"] = round(kb / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
                "numpy": np.__version__}
    for mod in ("onnxscript", "transformers"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional
            pass
    import fxlower

    versions["fxlower"] = getattr(fxlower, "__version__", "?")
    info["versions"] = versions
    info["torch_threads"] = torch.get_num_threads()
    info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    info["os"] = f"{platform.system()} {platform.release()}"
    return info


def matmul_model(a: list[int], b: list[int], b_value: np.ndarray | None = None,
                 a_value: np.ndarray | None = None) -> bytes:
    """A one-node MatMul model; an operand given a value is a constant initializer (which
    onnxruntime prepacks, as it does model weights), otherwise an input."""
    from onnx import TensorProto, helper, numpy_helper

    inputs, inits = [], []
    for name, shape, value in (("a", a, a_value), ("b", b, b_value)):
        if value is None:
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        else:
            inits.append(numpy_helper.from_array(value.astype(np.float32), name))
    out = helper.make_tensor_value_info("c", TensorProto.FLOAT, None)
    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm", inputs, [out],
                          inits)
    data: bytes = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]
                                    ).SerializeToString()
    return data


def measure_peaks(quick: bool) -> dict[str, Any]:
    """fp32 square-matmul GFLOP/s in onnxruntime and torch, and copy bandwidth."""
    n, runs = (1024, 5) if quick else (2048, 20)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flops = 2.0 * n**3
    out: dict[str, Any] = {"n": n, "runs": runs}
    sess = ort_session(matmul_model([n, n], [n, n], b_value=b))
    ts = _repeat(lambda: sess.run(None, {"a": a}), runs, warmup=3)
    out["ort_gflops"] = flops / statistics.median(ts) / 1e9
    out["ort_gflops_best"] = flops / min(ts) / 1e9
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    ts = _repeat(lambda: torch.mm(ta, tb), runs, warmup=3)
    out["torch_gflops"] = flops / statistics.median(ts) / 1e9
    out["torch_gflops_best"] = flops / min(ts) / 1e9
    # stream-style copy of 256 MB (64 MB quick): bytes read + written per second
    src = np.ones((16 if quick else 64) * 2**20, dtype=np.float32)
    dst = np.empty_like(src)
    ts = _repeat(lambda: np.copyto(dst, src), 3 if quick else 7, warmup=1)
    out["copy_gb_s"] = 2 * src.nbytes / statistics.median(ts) / 1e9
    out["balance_flop_per_byte"] = out["ort_gflops"] / out["copy_gb_s"]
    return out


def _repeat(fn: Callable[[], Any], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


class LoadMeter:
    """CPU time other processes used while this one measured: (machine busy time from
    /proc/stat minus this process's own CPU time, children included) / (wall x cores).
    Timings taken while others compete for the cores are noisy; the figure says how much."""

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
        t = os.times()
        return time.perf_counter(), busy, t.user + t.system + t.children_user + t.children_system

    def other(self) -> float | None:
        end = self._sample()
        if self.start is None or end is None:
            return None
        wall = end[0] - self.start[0]
        others = (end[1] - self.start[1]) - (end[2] - self.start[2])
        return max(0.0, others / (wall * (os.cpu_count() or 1))) if wall > 0 else None


# --------------------------------------------------------------------------- onnxruntime


def _session_options(profile_prefix: str | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


def ort_session(model: str | bytes, profile_prefix: str | None = None) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(model, _session_options(profile_prefix),
                                providers=["CPUExecutionProvider"])


def ort_feed(sess: Any, inputs: tuple[Any, ...]) -> dict[str, np.ndarray]:
    """Positional tensors -> the session's inputs. The exporter keeps only inputs the graph
    uses; those keep the forward's order, so a dropped input is matched by shape."""
    tensors = [t for t in pytree.tree_leaves(inputs) if isinstance(t, torch.Tensor)]
    arrays = [(t.float() if t.dtype == torch.bfloat16 else t).numpy() for t in tensors]
    ins = sess.get_inputs()
    if len(ins) == len(arrays):
        return {i.name: a for i, a in zip(ins, arrays, strict=True)}
    feed: dict[str, np.ndarray] = {}
    j = 0
    for inp in ins:
        while j < len(arrays) and not _shape_fits(inp.shape, arrays[j].shape):
            j += 1
        if j == len(arrays):
            raise ValueError(f"no input tensor fits ONNX input {inp.name} {inp.shape}")
        feed[inp.name] = arrays[j]
        j += 1
    return feed


def _shape_fits(onnx_shape: list[Any], shape: tuple[int, ...]) -> bool:
    return len(onnx_shape) == len(shape) and all(
        not isinstance(d, int) or d == s for d, s in zip(onnx_shape, shape, strict=True))


_PASS_THROUGH = {"Cast", "Unsqueeze", "Reshape", "Squeeze", "Expand", "Transpose", "Identity"}


def mask_matmuls(path: Path) -> list[dict[str, Any]]:
    """The run-time mask MatMul nodes of an ONNX file (an operand produced by `Equal`
    through shape-only ops and casts), with FLOPs and operand/result bytes from shape
    inference (fp32 assumed for bytes)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    shapes: dict[str, list[int] | None] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    prod = {o: n for n in g.node for o in n.output}
    inits = {i.name for i in g.initializer}
    graph_inputs = {i.name for i in g.input} - inits

    def const(name: str, depth: int = 0) -> bool:
        if name in inits:
            return True
        n = prod.get(name)
        if name in graph_inputs or n is None or depth > 16:
            return False
        return n.op_type != "RandomNormal" and all(const(i, depth + 1) for i in n.input if i)

    def from_equal(name: str, depth: int = 0) -> bool:
        n = prod.get(name)
        if n is None or depth > 8:
            return False
        if n.op_type == "Equal":
            return True
        return n.op_type in _PASS_THROUGH and bool(n.input) and from_equal(n.input[0], depth + 1)

    out = []
    for n in g.node:
        if n.op_type != "MatMul" or not any(from_equal(i) for i in n.input[:2]):
            continue
        a, b = shapes.get(n.input[0]), shapes.get(n.input[1])
        row: dict[str, Any] = {"name": n.name, "a": a, "b": b, "flops": None, "bytes": None,
                               "a_const": const(n.input[0]), "b_const": const(n.input[1])}
        if a and b and len(a) >= 2 and len(b) >= 2 and min(a + b) > 0:
            ba, bb = a[:-2], b[:-2]
            rank = max(len(ba), len(bb))
            ba, bb = [1] * (rank - len(ba)) + ba, [1] * (rank - len(bb)) + bb
            batch = math.prod(max(x, y) for x, y in zip(ba, bb, strict=True))
            m, k, nn_ = a[-2], a[-1], b[-1]
            row["flops"] = 2 * batch * m * k * nn_
            row["bytes"] = 4 * (math.prod(a) + math.prod(b) + batch * m * nn_)
            row["shape"] = f"{batch}x[{m}x{k}]@[{k}x{nn_}]"
        out.append(row)
    return out


def ort_profiles(paths: list[Path], feeds: list[list[dict[str, np.ndarray]]], prefix: str,
                 references: list[tuple[bytes, dict[str, np.ndarray]]] | None = None
                 ) -> tuple[list[dict[str, Any]], list[float]]:
    """Per-node and per-op-type kernel time (ms per run) from onnxruntime's profiler, for
    several files profiled side by side: their runs alternate, so background load hits them
    alike. The first run of each is a warm-up and left out; each node's figure is its
    median over the other runs. `references` (model bytes, feed) are profiled in the same
    rounds: their kernel ms per run (all nodes) is the second result."""
    sessions = [ort_session(str(p), profile_prefix=f"{prefix}{i}_") for i, p in enumerate(paths)]
    refs = [(ort_session(m, profile_prefix=f"{prefix}ref{k}_"), f)
            for k, (m, f) in enumerate(references or [])]
    for r in range(max(len(f) for f in feeds)):
        order = list(range(len(sessions)))
        for i in order if r % 2 == 0 else order[::-1]:
            sessions[i].run(None, feeds[i][r % len(feeds[i])])
        for sess, feed in refs:
            sess.run(None, feed)
    out = []
    for sess in sessions + [s for s, _ in refs]:
        prof = Path(sess.end_profiling())
        events = json.loads(prof.read_text())
        prof.unlink(missing_ok=True)
        out.append(_profile_figures(events))
    return out[: len(sessions)], [sum(f["per_node_ms"].values()) for f in out[len(sessions):]]


def reference_model(mm: dict[str, Any]) -> tuple[bytes, dict[str, np.ndarray]] | None:
    """A dense MatMul of a mask MatMul's shapes, constant operands constant (prepacked),
    random values: what onnxruntime achieves at that shape."""
    a, b = mm.get("a"), mm.get("b")
    if not a or not b or min(a + b) <= 0:
        return None
    rng = np.random.default_rng(0)
    av = rng.standard_normal(a, dtype=np.float32)
    bv = rng.standard_normal(b, dtype=np.float32)
    model = matmul_model(a, b, bv if mm["b_const"] else None, av if mm["a_const"] else None)
    feed = {k: v for k, v, c in (("a", av, mm["a_const"]), ("b", bv, mm["b_const"])) if not c}
    return model, feed


def _profile_figures(events: list[dict[str, Any]]) -> dict[str, Any]:
    runs = sorted((e["ts"], e["dur"]) for e in events if e.get("name") == "model_run")
    starts = [t for t, _ in runs]
    measured = range(1, len(runs)) if len(runs) > 1 else range(len(runs))
    per_run: dict[str, list[float]] = {}
    op_of: dict[str, str] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        k = bisect.bisect_right(starts, e["ts"]) - 1
        if k not in measured:
            continue
        node = e["name"][: -len("_kernel_time")]
        op_of[node] = e.get("args", {}).get("op_name", "?")
        per_run.setdefault(node, [0.0] * len(runs))[k] += e["dur"] / 1e3
    per_node = {n: statistics.median(v[k] for k in measured) for n, v in per_run.items()}
    per_op: dict[str, float] = {}
    for n, ms in per_node.items():
        per_op[op_of[n]] = per_op.get(op_of[n], 0.0) + ms
    run_ms = statistics.median(runs[k][1] / 1e3 for k in measured) if runs else 0.0
    return {"per_node_ms": per_node, "per_op_ms": per_op, "run_ms": run_ms}


_RSS_CHILD = r"""
import json, resource, sys
import numpy as np
import onnxruntime as ort


def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])  # kB
    return None


d = np.load(sys.argv[2])
feed = {k: d[k] for k in d.files}
try:  # reset the high-water mark (VmHWM) to the current RSS (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    method = "VmHWM after clear_refs minus VmRSS before"
    base = status("VmRSS")
except OSError:
    method = "ru_maxrss delta"
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
so = ort.SessionOptions()
so.add_session_config_entry("session.intra_op.allow_spinning", "0")
so.log_severity_level = 3
s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
for _ in range(3):
    s.run(None, feed)
if method.startswith("VmHWM"):
    peak = status("VmHWM")
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_kb": base, "peak_kb": peak, "method": method}))
"""


def ort_peak_mb(files: dict[str, tuple[Path, dict[str, np.ndarray]]], tmp: Path
                ) -> dict[str, float | None]:
    """Peak RSS increase (MB) of a fresh process per file that creates the session and runs
    it. The processes run side by side (memory, not time, is measured)."""
    procs = {}
    for key, (path, feed) in files.items():
        npz = tmp / f"{path.stem}.{key}.feed.npz"
        np.savez(npz, **feed)  # type: ignore[arg-type]
        procs[key] = (npz, subprocess.Popen(
            [sys.executable, "-c", _RSS_CHILD, str(path), str(npz)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    out: dict[str, float | None] = {}
    for key, (npz, proc) in procs.items():
        try:
            stdout, _ = proc.communicate(timeout=600)
            d = json.loads(stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
        except (subprocess.SubprocessError, ValueError, IndexError):
            proc.kill()
            d = None
        npz.unlink(missing_ok=True)
        out[key] = None if d is None else (d["peak_kb"] - d["base_kb"]) / 1024  # kB -> MB
    return out


# --------------------------------------------------------------------------- timing


def interleave(run_a: Callable[[Any], Any], run_b: Callable[[Any], Any], feeds_a: list[Any],
               feeds_b: list[Any], warmup: int, lo: int, hi: int, budget_s: float
               ) -> tuple[list[float], list[float]]:
    """Warm up both, choose the number of rounds from the warm-up time (lo..hi, about
    budget_s in all), then time them interleaved, the order alternating every round; each
    round uses its own inputs (feeds_*[warmup + r])."""
    ta = tb = 0.0
    for i in range(warmup):
        t0 = time.perf_counter()
        run_a(feeds_a[i])
        ta = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_b(feeds_b[i])
        tb = time.perf_counter() - t0
    rounds = int(max(lo, min(hi, budget_s / max(ta + tb, 1e-6))))
    rounds = min(rounds, len(feeds_a) - warmup)
    out_a: list[float] = []
    out_b: list[float] = []
    for r in range(rounds):
        fa, fb = feeds_a[warmup + r], feeds_b[warmup + r]
        for which in ((0, 1) if r % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            if which == 0:
                run_a(fa)
                out_a.append(time.perf_counter() - t0)
            else:
                run_b(fb)
                out_b.append(time.perf_counter() - t0)
    return out_a, out_b


# --------------------------------------------------------------------------- one workload


@dataclass
class Settings:
    quick: bool
    warmup: int
    lo: int
    hi: int
    budget_s: float
    profile_runs: int
    peak_n: int  # side of the square matmul that measures the peak
    memory_repeats: int

    @classmethod
    def make(cls, quick: bool) -> Settings:
        if quick:
            return cls(True, warmup=2, lo=3, hi=5, budget_s=0.5, profile_runs=3, peak_n=1024,
                       memory_repeats=1)
        return cls(False, warmup=3, lo=10, hi=30, budget_s=8.0, profile_runs=6, peak_n=2048,
                   memory_repeats=3)


def _quiet() -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    return stack


def run_workload(w: Workload, s: Settings, tmp: Path) -> dict[str, Any]:
    import fxlower
    from fxlower import host
    from fxlower.api import onnx_export
    from fxlower.check import check_file
    from fxlower.verify import draw_like

    row: dict[str, Any] = {"name": w.name, "kind": w.kind, "target": w.target,
                           "lower_kwargs": w.lower_kwargs}
    phases: dict[str, float] = {}
    row["phase_s"] = phases
    mark = [time.perf_counter()]

    def phase(name: str) -> None:
        now = time.perf_counter()
        phases[name] = now - mark[0]
        mark[0] = now

    model, inputs = w.build(s.quick)
    phase("build")
    row["inputs"] = [list(t.shape) for t in pytree.tree_leaves(inputs) if isinstance(t, torch.Tensor)]

    if w.time_export:
        with _quiet():
            t0 = time.perf_counter()
            torch.export.export(model, inputs, strict=False)
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            torch.export.export(model, inputs, strict=False)
            warm = time.perf_counter() - t0
        row["export_s"] = {"cold": cold, "warm": warm}

    with _quiet():
        t0 = time.perf_counter()
        gm = fxlower.lower(model, inputs, **w.lower_kwargs)
        row["lower_s"] = time.perf_counter() - t0
    report = fxlower.report_of(gm)
    row["lower_breakdown_s"] = dict(report.seconds)
    if w.time_export:  # the same without verification: how much of the time verifying takes
        with _quiet():
            t0 = time.perf_counter()
            fxlower.lower(model, inputs, verify=False, **w.lower_kwargs)
            row["lower_noverify_s"] = time.perf_counter() - t0
    row["rewrites"] = report.counts()
    row["applied"] = [f"{a.pass_name}: {a.op}: {a.detail}" for a in report.applied]
    row["mask_macs"] = sum(a.macs for a in report.applied if a.pass_name in MASK_PASSES)
    row["mask_elems"] = max((a.mask_elems for a in report.applied), default=0)
    row["merge_only"] = bool(report.applied) and all(
        a.pass_name.startswith(MERGE_PREFIXES) for a in report.applied)

    paths = {"original": tmp / f"{_fname(w.name)}.original.onnx",
             "lowered": tmp / f"{_fname(w.name)}.lowered.onnx"}
    split = host.parts(gm)  # embedding="host": the device graph is what runs on the chip

    def lowered_inputs(args: tuple[Any, ...]) -> tuple[Any, ...]:
        return args if split is None else host.device_inputs(gm, args)

    if split is not None:
        row["host"] = report.host
    for key, mod in (("original", model), ("lowered", gm if split is None else split[1])):
        t0 = time.perf_counter()
        with _quiet():
            onnx_export(mod, inputs if key == "original" else lowered_inputs(inputs), paths[key])
        row[f"export_{key}_s"] = time.perf_counter() - t0
        res = check_file(paths[key])
        row[f"gathers_{key}"] = sum(res.op_counts.get(k, 0) for k in GATHER_FAMILY)
        row[f"nodes_{key}"] = res.n_nodes
        row[f"onnx_mb_{key}"] = paths[key].stat().st_size / 2**20

    phase("lower+export")
    draws = [draw_like(inputs, 1000 + i) for i in range(s.warmup + s.hi)]

    # onnxruntime, interleaved
    meter = LoadMeter()
    fo, fl, ta, tb = _time_ort(paths["original"], paths["lowered"], draws, s,
                               [lowered_inputs(d) for d in draws])
    if split is not None:  # the host's share: its lookups in eager torch, per call
        host_gm, host_in = split[0], host.host_inputs(gm, draws[0])
        with torch.no_grad():
            ts = _repeat(lambda: host_gm(*host_in), s.hi, s.warmup)
        row["host_lookup_ms"] = _ms(ts)
    row["ort_ms"] = {"original": _ms(ta), "lowered": _ms(tb), "rounds": len(ta)}
    row["ort_ratio"] = row["ort_ms"]["lowered"]["median"] / row["ort_ms"]["original"]["median"]
    row["ort_paired"] = _paired(ta, tb)

    # eager torch, interleaved
    def eager(m: nn.Module) -> Callable[[Any], Any]:
        def run(args: tuple[Any, ...]) -> Any:
            with torch.no_grad():
                return m(*args)
        return run

    with _quiet():
        ta, tb = interleave(eager(model), eager(gm), draws, draws, s.warmup, s.lo, s.hi,
                            s.budget_s)
    row["torch_ms"] = {"original": _ms(ta), "lowered": _ms(tb), "rounds": len(ta)}
    row["torch_ratio"] = row["torch_ms"]["lowered"]["median"] / row["torch_ms"]["original"]["median"]
    row["torch_paired"] = _paired(ta, tb)
    row["other_load"] = meter.other()
    phase("timing")

    # where the time goes: onnxruntime's profiler on both files
    mms = mask_matmuls(paths["lowered"]) if row["mask_macs"] else []
    refs = [reference_model(mm) for mm in mms]
    side = s.peak_n
    square = reference_model({"a": [side, side], "b": [side, side], "a_const": False,
                              "b_const": True})
    assert square is not None
    n = s.profile_runs + 1
    (prof_o, prof_l), ref_ms = ort_profiles(
        [paths["original"], paths["lowered"]], [fo[:n], fl[:n]], str(tmp / "prof"),
        [r for r in refs if r is not None] + [square])
    # the machine's matmul peak sampled in the same rounds (load varies during a run)
    row["peak_sample_gflops"] = 2 * side**3 / (ref_ms.pop() / 1e3) / 1e9
    ref_iter = iter(ref_ms)
    for mm, ref in zip(mms, refs, strict=True):
        mm["reference_ms"] = next(ref_iter) if ref is not None else None
    del refs, square
    row["profile_top_ops"] = {"original": _top(prof_o["per_op_ms"]),
                              "lowered": _top(prof_l["per_op_ms"])}
    row["profile_run_ms"] = {"original": prof_o["run_ms"], "lowered": prof_l["run_ms"]}
    phase("profile")

    # mask-matmul throughput
    if row["mask_macs"]:
        flops = 2 * row["mask_macs"]
        for be in ("ort", "torch"):
            d = row[f"{be}_ms"]["lowered"]["median"] - row[f"{be}_ms"]["original"]["median"]
            row[f"{be}_implied_gflops"] = flops / (d / 1e3) / 1e9 if d > 0 else None
        kt = rt = 0.0
        kf = kb = 0
        for mm in mms:
            mm["ms"] = sum(v for k, v in prof_l["per_node_ms"].items()
                           if k == mm["name"] or k.startswith(mm["name"] + "/"))
            kt += mm["ms"]
            kf += mm["flops"] or 0
            kb += mm["bytes"] or 0
            rt += mm["reference_ms"] or 0.0
        row["mask_matmul_nodes"] = mms
        if mms and kt > 0 and kf:
            row["kernel_gflops"] = kf / (kt / 1e3) / 1e9
            row["kernel_ms"] = kt
            row["kernel_flops"] = kf
            row["intensity"] = kf / kb if kb else None
            if rt > 0 and all(mm["reference_ms"] for mm in mms):
                row["reference_gflops"] = kf / (rt / 1e3) / 1e9

    # peak memory, fresh subprocess per file
    samples = [ort_peak_mb({"original": (paths["original"], fo[0]),
                            "lowered": (paths["lowered"], fl[0])}, tmp)
               for _ in range(s.memory_repeats)]
    row["ort_peak_mb_samples"] = samples
    row["ort_peak_mb"] = {k: _median_or_none([smp[k] for smp in samples])
                          for k in ("original", "lowered")}
    phase("memory")
    for p in paths.values():
        p.unlink(missing_ok=True)
    return row


def combine_peaks(start: dict[str, Any], end: dict[str, Any],
                  samples: list[float] | None = None) -> dict[str, Any]:
    """The peak is measured before and after the workloads, and onnxruntime's also sampled
    during every workload's profiled rounds; the highest figure counts (background load
    only ever lowers a sample)."""
    samples = [x for x in samples or [] if x]
    out = {"start": start, "end": end, "n": start["n"], "runs": start["runs"],
           "ort_samples": samples}
    for k in ("ort_gflops", "ort_gflops_best", "torch_gflops", "torch_gflops_best", "copy_gb_s"):
        out[k] = max(start[k], end[k])
    if samples:
        out["ort_gflops"] = max(out["ort_gflops"], max(samples))
    out["balance_flop_per_byte"] = out["ort_gflops"] / out["copy_gb_s"]
    return out


def apply_peaks(rows: list[dict[str, Any]], peaks: dict[str, Any]) -> None:
    """Fractions of the matmul peak, and whether each mask product is compute-bound."""
    for r in rows:
        for be in ("ort", "torch"):
            g = r.get(f"{be}_implied_gflops")
            r[f"{be}_implied_frac"] = g / peaks[f"{be}_gflops"] if g else None
        if r.get("kernel_gflops"):
            r["kernel_frac"] = r["kernel_gflops"] / peaks["ort_gflops"]
            if r.get("peak_sample_gflops"):
                r["kernel_frac_sample"] = r["kernel_gflops"] / r["peak_sample_gflops"]
            it = r.get("intensity")
            # compute-bound: intensity above the machine balance, and big enough that a
            # call's fixed costs (thread-pool dispatch, ~10-50 us) do not decide its time
            big = r["kernel_flops"] >= peaks["ort_gflops"] * 1e9 * MIN_COMPUTE_S
            r["compute_bound"] = None if it is None else (
                it >= peaks["balance_flop_per_byte"] and big)


def _time_ort(path_o: Path, path_l: Path, draws: list[Any], s: Settings,
              draws_l: list[Any] | None = None,
              ) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]], list[float],
                         list[float]]:
    """Both sessions live only here: feeds per draw and the interleaved times. `draws_l`:
    the lowered file's inputs when they differ (a host split's device graph)."""
    so, sl = ort_session(str(path_o)), ort_session(str(path_l))
    fo, fl = [ort_feed(so, d) for d in draws], [ort_feed(sl, d) for d in draws_l or draws]
    ta, tb = interleave(lambda f: so.run(None, f), lambda f: sl.run(None, f), fo, fl,
                        s.warmup, s.lo, s.hi, s.budget_s)
    return fo, fl, ta, tb


def _median_or_none(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def _fname(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _ms(ts: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
    return {"median": statistics.median(ts) * 1e3, "p25": q[0] * 1e3, "p75": q[2] * 1e3,
            "min": min(ts) * 1e3}


def _paired(ta: list[float], tb: list[float]) -> dict[str, float]:
    """Per-round ratios lowered / original (the two runs of a round are adjacent in time):
    their median and quartiles, a noise gauge for the ratio of medians."""
    rs = [b / a for a, b in zip(ta, tb, strict=True)]
    q = statistics.quantiles(rs, n=4) if len(rs) >= 2 else [rs[0]] * 3
    return {"median": statistics.median(rs), "p25": q[0], "p75": q[2]}


def _top(per_op: dict[str, float], n: int = 5) -> list[tuple[str, float]]:
    return sorted(per_op.items(), key=lambda kv: -kv[1])[:n]


# --------------------------------------------------------------------------- lowering

LOWERING_TARGET = 2.0  # fxlower.lower wall time <= 2x torch.export.export alone
MEMORY_TARGET = 1.0  # peak memory during lower <= 1.0x the model's parameter bytes
LOWERING_MODELS = ("hf_bert_base", "llama")
LOWERING_TITLES = {"hf_bert_base": "BERT-base, seq 128", "llama": "Llama-shaped decoder, 32 tokens"}
_RESULT = "fxlower-bench-result: "  # the line of a child's output that carries its figures

# decoder-only, Llama-shaped: 199.8M parameters (762 MiB in float32); the quick run's is tiny
LLAMA: dict[str, dict[str, Any]] = {
    "full": dict(vocab_size=32000, hidden_size=1024, intermediate_size=4096, num_hidden_layers=8,
                 num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=2048,
                 use_cache=False),
    "quick": dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                  use_cache=False),
}


def build_llama(quick: bool) -> tuple[nn.Module, tuple[Any, ...]]:
    """transformers LlamaForCausalLM from a config (random weights, eval), 32 tokens (16 quick)."""
    import transformers

    def make() -> tuple[nn.Module, tuple[Any, ...]]:
        cfg = transformers.LlamaConfig(**LLAMA["quick" if quick else "full"])
        model: nn.Module = transformers.LlamaForCausalLM(cfg)
        return model.eval(), (torch.randint(0, cfg.vocab_size, (1, 16 if quick else 32)),)

    return _seeded(make)


def build_lowering_model(name: str, quick: bool) -> tuple[nn.Module, tuple[Any, ...]]:
    if name == "llama":
        return build_llama(quick)
    return build_zoo(name, quick)  # hf_bert_base: models/hf_bert.py:build_full (small if quick)


def _proc_kb(key: str) -> int | None:
    """A line of /proc/self/status in kB (VmRSS, VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class RssSampler:
    """The highest resident set size seen by a thread that reads /proc/self/statm every 5 ms
    (torch releases the GIL in its kernels, so the thread keeps sampling during them)."""

    def __init__(self, interval_s: float = 0.005) -> None:
        import threading

        self.interval_s = interval_s
        self.page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        with open("/proc/self/statm") as f:
            kb = int(f.read().split()[1]) * self.page_kb
        self.peak_kb = max(self.peak_kb, kb)
        return kb

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def lowering_child(name: str, what: str, quick: bool) -> dict[str, Any]:
    """One fresh process's figures (run by `measure_lowering` in a child): build the model,
    then one call of fxlower.lower (what="lower") or torch.export.export (what="export"),
    its wall time and the peak memory it took on top of what the process held before it."""
    import gc

    import fxlower

    t0 = time.perf_counter()
    model, inputs = build_lowering_model(name, quick)
    build_s = time.perf_counter() - t0
    params = list(model.parameters())  # shared (tied) parameters once
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    gc.collect()
    try:  # reset the high-water mark VmHWM to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        hwm = True
    except OSError:
        hwm = False
    base_kb = _proc_kb("VmRSS")
    with _quiet(), RssSampler() as sampler:
        t0 = time.perf_counter()
        if what == "lower":
            result: Any = fxlower.lower(model, inputs)
        else:
            result = torch.export.export(model, inputs, strict=False)
        seconds = time.perf_counter() - t0
    peak_hwm = _proc_kb("VmHWM") if hwm else None
    out: dict[str, Any] = {
        "model": name, "what": what, "seconds": seconds, "build_s": build_s,
        "params": sum(p.numel() for p in params), "param_bytes": param_bytes, "base_mb": None if base_kb is None else base_kb / 1024,
        "peak_hwm_mb": None if peak_hwm is None or base_kb is None else (peak_hwm - base_kb) / 1024,
        "peak_sampled_mb": None if base_kb is None else (sampler.peak_kb - base_kb) / 1024,
        "method": "VmHWM after clear_refs" if peak_hwm is not None else "VmRSS sampled every 5 ms",
        "threads": torch.get_num_threads(),
    }
    out["peak_mb"] = out["peak_sampled_mb"] if out["peak_hwm_mb"] is None else out["peak_hwm_mb"]
    out["peak_x_params"] = (None if out["peak_mb"] is None or not param_bytes
                            else out["peak_mb"] * 2**20 / param_bytes)
    if what == "lower":
        out["breakdown_s"] = dict(fxlower.report_of(result).seconds)
    del result
    return out


def _run_child(name: str, what: str, quick: bool) -> dict[str, Any]:
    """`lowering_child` in a fresh interpreter started from the repository root."""
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); "
            "from benchmarks.bench import lowering_child; "
            f"print({_RESULT!r} + json.dumps(lowering_child({name!r}, {what!r}, {quick!r})))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=3600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_RESULT)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{what} of {name} in a fresh process failed "
                           f"(exit {proc.returncode}): {tail[:300]}")
    data: dict[str, Any] = json.loads(lines[-1][len(_RESULT):])
    return data


def measure_lowering(quick: bool, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Lowering against torch.export, and lowering's peak memory, each run in its own fresh
    process (see the method notes): per model the runs, their medians and the ratios."""
    repeats = {"hf_bert_base": 1 if quick else 3, "llama": 1}
    out: dict[str, Any] = {"quick": quick, "models": {}}
    for name in LOWERING_MODELS:
        runs: dict[str, list[dict[str, Any]]] = {"lower": [], "export": []}
        title = LOWERING_TITLES[name] + (" (quick: a small config)" if quick else "")
        m: dict[str, Any] = {"title": title, "runs": runs}
        out["models"][name] = m
        meter = LoadMeter()
        try:
            for _ in range(repeats[name]):
                for what in ("export", "lower"):  # alternating: load drifts hit both alike
                    r = _run_child(name, what, quick)
                    runs[what].append(r)
                    progress(f"  {name}: {what} {r['seconds']:.2f} s, peak "
                             f"+{_f(r['peak_mb'], '.0f')} MiB "
                             f"({_f(r['peak_x_params'], '.2f')}x parameters)")
        except Exception as e:  # noqa: BLE001 - one failing model must not hide the other
            m["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            progress(f"  {name}: FAILED: {m['error']}")
            continue
        m["other_load"] = meter.other()
        lower, export = runs["lower"], runs["export"]
        m["param_mib"] = lower[0]["param_bytes"] / 2**20
        m["params"] = lower[0]["params"]
        m["lower_s"] = statistics.median(r["seconds"] for r in lower)
        m["export_s"] = statistics.median(r["seconds"] for r in export)
        m["ratio"] = m["lower_s"] / m["export_s"]
        for what, runs_ in (("lower", lower), ("export", export)):  # the worst run counts
            peaks = [r["peak_mb"] for r in runs_ if r["peak_mb"] is not None]
            m[f"{what}_peak_mib"] = max(peaks) if peaks else None
            m[f"{what}_peak_x"] = (None if not peaks or not lower[0]["param_bytes"]
                                   else max(peaks) * 2**20 / lower[0]["param_bytes"])
        m["method"] = lower[0]["method"]
        m["breakdown_s"] = {k: statistics.median(r["breakdown_s"].get(k, 0.0) for r in lower)
                            for k in lower[0]["breakdown_s"]}
    return out


def lowering_targets(lowering: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The two lowering targets: time against torch.export (BERT-base), memory (both)."""
    out: list[dict[str, Any]] = []
    for name, m in (lowering or {}).get("models", {}).items():
        if "error" in m:
            continue
        if name == "hf_bert_base":
            out.append({"workload": m["title"], "what": "fxlower.lower / torch.export time "
                        "(fresh processes)", "target": f"<= {LOWERING_TARGET:g}",
                        "value": f"{m['ratio']:.2f} ({m['lower_s']:.2f} s / {m['export_s']:.2f} s)",
                        "ok": m["ratio"] <= LOWERING_TARGET})
        x = m.get("lower_peak_x")
        out.append({"workload": m["title"], "what": "peak memory during lower / parameter bytes",
                    "target": f"<= {MEMORY_TARGET:g}",
                    "value": "n/a" if x is None else
                    f"{x:.2f} ({_f(m['lower_peak_mib'], '.0f')} MiB over {m['param_mib']:.0f} MiB)",
                    "ok": None if x is None else x <= MEMORY_TARGET})
    return out


def format_lowering(lowering: dict[str, Any]) -> list[str]:
    """The markdown section of `measure_lowering`'s figures."""
    lines = ["## Lowering in fresh processes", "",
             "Each run in its own fresh process, as a user runs it: the model built, then one "
             "call. Time: median over the processes (export and lower alternating); peak: the "
             "call's peak memory on top of what the process held right before it, the worst "
             "run (MiB and × the model's parameter bytes). Other load: the CPU other processes "
             "used meanwhile, a share of the machine (torch's threads wait for each other when "
             "a core is taken: compute, such as verification, slows far more than tracing).", "",
             "| model | parameters | fxlower.lower s | torch.export s | ratio | target | | "
             "lower peak MiB | × parameters | target | | export peak MiB | × parameters | runs | "
             "other load |",
             "|" + "---|" * 15]
    for name, m in lowering["models"].items():
        if "error" in m:
            lines.append(f"| {m['title']} | FAILED: {m['error']} |" + " |" * 13)
            continue
        time_ok = m["ratio"] <= LOWERING_TARGET
        x = m.get("lower_peak_x")
        tcell = f"≤ {LOWERING_TARGET:g}×" if name == "hf_bert_base" else ""
        lines.append(
            f"| {m['title']} | {m['params'] / 1e6:.1f}M, {m['param_mib']:.0f} MiB | "
            f"{m['lower_s']:.2f} | {m['export_s']:.2f} | {m['ratio']:.2f} | {tcell} | "
            f"{_verdict(time_ok) if tcell else ''} | {_f(m['lower_peak_mib'], '.0f')} | "
            f"{_f(x, '.2f')} | ≤ {MEMORY_TARGET:g}× | "
            f"{_verdict(None if x is None else x <= MEMORY_TARGET)} | "
            f"{_f(m['export_peak_mib'], '.0f')} | {_f(m.get('export_peak_x'), '.2f')} | "
            f"{len(m['runs']['lower'])} | {_pct(m.get('other_load'))} |")
    bert = lowering["models"].get("hf_bert_base", {})
    if "ratio" in bert:
        b = bert["breakdown_s"]
        lines += ["", f"BERT-base: `fxlower.lower` **{bert['lower_s']:.2f} s** (capture "
                  f"{b.get('capture', 0):.2f}, passes {b.get('rewrite', 0):.2f}, verification "
                  f"{b.get('verify', 0):.2f}) against `torch.export.export` alone "
                  f"**{bert['export_s']:.2f} s**, both in fresh processes: ratio "
                  f"**{bert['ratio']:.2f}×** (target ≤ {LOWERING_TARGET:g}×: "
                  f"{_verdict(bert['ratio'] <= LOWERING_TARGET)})."]
    methods = {m["method"] for m in lowering["models"].values() if "method" in m}
    lines += ["", f"Peak memory: {', '.join(sorted(methods)) or 'n/a'}."]
    return lines


# --------------------------------------------------------------------------- report


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def targets(rows: list[dict[str, Any]], lowering: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every target with its measured value and PASS/MISS (`lowering`: `measure_lowering`'s
    figures, or None when it was not run)."""
    out = []
    for r in rows:
        if "error" in r:
            continue
        if r.get("target") is not None:
            out.append({"workload": r["name"], "what": "ORT lowered/original",
                        "target": f"<= {r['target']:g}", "value": f"{r['ort_ratio']:.3f}",
                        "ok": r["ort_ratio"] <= r["target"]})
        if r.get("merge_only"):
            out.append({"workload": r["name"], "what": "ORT lowered/original (merges only)",
                        "target": f"<= {MERGE_TARGET:g} (never slower)",
                        "value": f"{r['ort_ratio']:.3f} {_iqr(r['ort_paired'])}",
                        "ok": merge_not_slower(r)})
        if r.get("mask_macs"):
            frac = r.get("kernel_frac_sample", r.get("kernel_frac"))
            cb = r.get("compute_bound")
            ok = None if frac is None or not cb else frac >= MASK_PEAK_TARGET
            value = "no run-time mask MatMul" if frac is None else (
                f"{100 * frac:.0f}% of the peak sampled in the same rounds "
                f"({100 * r['kernel_frac']:.0f}% of the run's highest), "
                f"intensity {r['intensity']:.1f} flop/B"
                + ("" if cb else ", not compute-bound: target n/a"))
            out.append({"workload": r["name"], "what": "mask-matmul kernel vs ORT matmul peak",
                        "target": f">= {100 * MASK_PEAK_TARGET:.0f}% where compute-bound",
                        "value": value, "ok": ok})
    return out + lowering_targets(lowering)


def _f(x: Any, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _ms_cell(d: dict[str, float]) -> str:
    return f"{d['median']:{'.2f' if d['median'] >= 1 else '.3f'}}"


def format_markdown(info: dict[str, Any], peaks: dict[str, Any] | None,
                    rows: list[dict[str, Any]], quick: bool, wall_s: float,
                    lowering: dict[str, Any] | None = None, argv: str = "") -> str:
    v = info["versions"]
    lines = ["# fxlower benchmark" + (" (quick smoke run: small sizes, few rounds)" if quick else ""),
             "",
             f"Generated by `python benchmarks/bench.py{argv}` in {wall_s / 60:.1f} min.", "",
             "## Machine", "",
             f"- CPU: {info['cpu']}" + (" (virtual machine)" if info.get("virtualised") else ""),
             f"- cores: {info.get('physical_cores') or '?'} physical, {info['logical_cores']} logical;"
             f" memory {info.get('memory_gb', '?')} GB; {info['os']}",
             f"- torch {v['torch']} ({info['torch_cpu_capability']}, {info['torch_threads']} threads),"
             f" onnxruntime {v['onnxruntime']} (CPUExecutionProvider, default threads),"
             f" onnx {v['onnx']}, onnxscript {v.get('onnxscript', '?')},"
             f" transformers {v.get('transformers', '?')}, numpy {v['numpy']},"
             f" Python {v['python']}, fxlower {v['fxlower']}",
             f"- other processes' CPU use during the run: {_pct(info.get('other_load'))} of the"
             " machine (per workload in the table; timings taken under load are noisy)", ""]
    if peaks is not None:
        lines[-2:-2] = [
            f"- fp32 matmul peak ({peaks['n']}x{peaks['n']}, right operand constant; median of"
            f" {peaks['runs']} runs before and after the workloads, and of each workload's"
            f" profiled rounds; the highest counts): "
            f"onnxruntime **{peaks['ort_gflops']:.0f} GFLOP/s** (before "
            f"{peaks['start']['ort_gflops']:.0f}, after {peaks['end']['ort_gflops']:.0f}, during "
            f"{_span(peaks['ort_samples'])}), torch **{peaks['torch_gflops']:.0f} GFLOP/s** ("
            f"{peaks['start']['torch_gflops']:.0f} / {peaks['end']['torch_gflops']:.0f}; best "
            f"{peaks['torch_gflops_best']:.0f})",
            f"- copy bandwidth (numpy, one thread): {peaks['copy_gb_s']:.1f} GB/s; machine balance"
            f" {peaks['balance_flop_per_byte']:.1f} flop/byte (ORT peak / bandwidth)"]
    if lowering is not None:
        lines += [*format_lowering(lowering), ""]
    if not rows:  # --only lowering
        lines += _targets_section(targets(rows, lowering))
        lines += ["", "## Method", "", *_method(quick, lowering_only=True)]
        return "\n".join(lines) + "\n"

    lines += ["## Latency: lowered vs original", "",
              "Median ms per call; ratio = lowered / original of the medians, same run, "
              "interleaved; in brackets the quartiles of the per-round ratios (a noise gauge).",
              "",
              "| workload | ORT original ms | ORT lowered ms | ORT ratio | target | | "
              "torch original ms | torch lowered ms | torch ratio | rounds | lower s | "
              "ORT peak MB original → lowered | Gather-family ONNX ops | rewrites | other load |",
              "|" + "---|" * 15]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | FAILED: {r['error']} |" + " |" * 13)
            continue
        tgt = r.get("target")
        ok = None
        tcell = ""
        if tgt is not None:
            ok, tcell = r["ort_ratio"] <= tgt, f"≤ {tgt:g}"
        elif r.get("merge_only"):
            ok, tcell = merge_not_slower(r), f"≤ {MERGE_TARGET:g} (merge)"
        mem = r["ort_peak_mb"]
        mcell = f"{_f(mem['original'], '.1f')} → {_f(mem['lowered'], '.1f')}"
        rw = ", ".join(f"{k} {n}" for k, n in sorted(r["rewrites"].items())) or "none"
        lines.append(
            f"| {r['name']} | {_ms_cell(r['ort_ms']['original'])} | "
            f"{_ms_cell(r['ort_ms']['lowered'])} | {r['ort_ratio']:.3f} {_iqr(r['ort_paired'])} | {tcell} | "
            f"{_verdict(ok) if tcell else ''} | {_ms_cell(r['torch_ms']['original'])} | "
            f"{_ms_cell(r['torch_ms']['lowered'])} | {r['torch_ratio']:.3f} {_iqr(r['torch_paired'])} | "
            f"{r['ort_ms']['rounds']}/{r['torch_ms']['rounds']} | {r['lower_s']:.1f} | {mcell} | "
            f"{r['gathers_original']} → {r['gathers_lowered']} | {rw} | {_pct(r.get('other_load'))} |")

    host_rows = [r for r in rows if "error" not in r and r.get("host")]
    if host_rows:
        lines += ["", "## Host lookups (embedding=\"host\")", "",
                  "The ORT lowered column times the device graph alone, fed the looked-up rows; "
                  "the host runs the lookups before it (eager torch, median per call below); the "
                  "torch lowered column runs both.", ""]
        for r in host_rows:
            saved = sum(h["device_flops_saved"] for h in r["host"])
            tables = ", ".join(f"{h['op']} {'x'.join(map(str, h['table_shape']))}" for h in r["host"])
            lines.append(f"- {r['name']}: {tables}; host lookup "
                         f"{r['host_lookup_ms']['median']:.3f} ms per call; device FLOPs saved "
                         f"against the one-hot product: {saved:,}")
    mm_rows = [r for r in rows if "error" not in r and r.get("mask_macs")]
    if mm_rows:
        lines += ["", "## Mask-matmul throughput", "",
                  "MACs: the rewrites' multiply-adds per call (report). Implied: 2·MACs / "
                  "(lowered − original) median time, as if the whole slowdown were the mask "
                  "product. Kernel: run-time mask MatMul nodes of the lowered ONNX, FLOPs from "
                  "shape inference, time from onnxruntime's profiler. % of the machine's "
                  "matmul peak (same backend). Same-shape: a one-node dense MatMul of the mask "
                  "products' shapes (random values, constant operands constant), run in the "
                  "same rounds as the profiled runs: what onnxruntime achieves at that shape "
                  "at that moment. Compute-bound: intensity ≥ machine balance and ≥ 1 ms of "
                  "work at the peak. The ≥ 70% verdict uses the peak sampled in the same rounds.", "",
                  "| workload | mask MACs/call | ORT implied GFLOP/s | % ORT peak | "
                  "torch implied GFLOP/s | % torch peak | mask MatMul nodes (shape) | "
                  "kernel ms | kernel GFLOP/s | % ORT peak | % of peak sampled in the same rounds | "
                  "same-shape dense GFLOP/s | kernel / same-shape | intensity flop/B | "
                  "compute-bound | ≥ 70% of peak |",
                  "|" + "---|" * 16]
        for r in mm_rows:
            nodes = r.get("mask_matmul_nodes") or []
            shapes = "; ".join(n.get("shape", "?") for n in nodes) or "none at run time"
            frac = r.get("kernel_frac_sample", r.get("kernel_frac"))
            cb = r.get("compute_bound")
            lines.append(
                f"| {r['name']} | {r['mask_macs']:,} | {_f(r.get('ort_implied_gflops'), '.1f')} | "
                f"{_pct(r.get('ort_implied_frac'))} | {_f(r.get('torch_implied_gflops'), '.1f')} | "
                f"{_pct(r.get('torch_implied_frac'))} | {shapes} | {_f(r.get('kernel_ms'), '.2f')} | "
                f"{_f(r.get('kernel_gflops'), '.1f')} | {_pct(r.get('kernel_frac'))} | "
                f"{_pct(r.get('kernel_frac_sample'))} | {_f(r.get('reference_gflops'), '.1f')} | "
                f"{_pct(r['kernel_gflops'] / r['reference_gflops'] if r.get('reference_gflops') and r.get('kernel_gflops') else None)} | "
                f"{_f(r.get('intensity'), '.1f')} | {'yes' if cb else ('no' if cb is not None else 'n/a')} | "
                f"{_verdict(None if frac is None or not cb else frac >= MASK_PEAK_TARGET)} |")

    in_process = lowering_figures(rows)
    if in_process:
        b = in_process["breakdown"]
        lines += ["", "## Lowering time in one process", "",
                  f"`fxlower.lower` on {in_process['workload']}: {in_process['lower_s']:.1f} s "
                  f"(capture {b.get('capture', 0):.1f}, passes {b.get('rewrite', 0):.1f}, "
                  f"verification {b.get('verify', 0):.1f}) against `torch.export.export` alone "
                  f"{in_process['export_warm_s']:.2f} s (warm; cold "
                  f"{in_process['export_cold_s']:.2f} s) in the same process: "
                  f"{in_process['ratio']:.1f}× (the target is judged in fresh processes, "
                  "*Lowering in fresh processes*)."
                  + ("" if in_process.get("lower_noverify_s") is None else
                     f" Without verification (`verify=False`, a second run): "
                     f"{in_process['lower_noverify_s']:.1f} s, "
                     f"{in_process['lower_noverify_s'] / in_process['export_warm_s']:.1f}×.")]

    lines += _targets_section(targets(rows, lowering))

    lines += ["", "## Where the time goes (onnxruntime profiler)", "",
              "Both files profiled side by side (runs alternating); kernel ms per run (median "
              "over runs) by op type, top 5 (the original's top 3 for comparison).", "",
              "| workload | ONNX nodes original → lowered | run ms original → lowered (profiled) | "
              "lowered: top op types (ms) | original: top op types (ms) |",
              "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            continue
        top = r["profile_top_ops"]
        pr = r["profile_run_ms"]
        lines.append(f"| {r['name']} | {r['nodes_original']} → {r['nodes_lowered']} | "
                     f"{_t(pr['original'])} → {_t(pr['lowered'])} | "
                     + ", ".join(f"{k} {_t(x)}" for k, x in top["lowered"])
                     + " | " + ", ".join(f"{k} {_t(x)}" for k, x in top["original"][:3]) + " |")

    lines += ["", "## Method", "", *_method(quick)]
    errors = [r for r in rows if "error" in r]
    if errors:
        lines += ["", "## Failures", ""] + [f"- {r['name']}: {r['error']}" for r in errors]
    return "\n".join(lines) + "\n"


def _targets_section(tg: list[dict[str, Any]]) -> list[str]:
    if not tg:
        return []
    met = sum(1 for t in tg if t["ok"])
    missed = sum(1 for t in tg if t["ok"] is False)
    lines = ["", f"## Targets: {met} met, {missed} missed", "",
             "| workload | measure | target | value | |", "|---|---|---|---|---|"]
    for t in tg:
        lines.append(f"| {t['workload']} | {t['what']} | {t['target']} | {t['value']} | "
                     f"{_verdict(t['ok'])} |")
    return lines


def _span(xs: list[float]) -> str:
    return f"{min(xs):.0f}–{max(xs):.0f}" if xs else "n/a"


def _iqr(p: dict[str, float]) -> str:
    return f"[{p['p25']:.2f}–{p['p75']:.2f}]"


def _t(x: float) -> str:
    return f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _method(quick: bool, lowering_only: bool = False) -> list[str]:
    doc = __doc__ or ""
    body = doc.split("Method notes (also written into the output):", 1)[-1].strip("\n")
    if lowering_only:  # the one note on lowering in fresh processes
        notes = ("\n" + body).split("\n- ")
        return ["- " + n for n in notes if n.startswith("lowering, as a user runs it")]
    rounds = ("3-5 rounds after 2 warm-up runs" if quick else
              "10-30 rounds (about 8 s per backend and workload) after 3 warm-up runs")
    return [f"- Timing: {rounds}, onnxruntime then eager torch (torch.no_grad), each round on"
            " its own fresh inputs (fxlower.verify.draw_like, drawn once up front), the order"
            " of original and lowered alternating every round; medians.",
            *body.splitlines()]


def lowering_figures(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    for r in rows:
        if "export_s" in r and "error" not in r:
            return {"workload": r["name"], "lower_s": r["lower_s"],
                    "breakdown": r["lower_breakdown_s"], "export_cold_s": r["export_s"]["cold"],
                    "export_warm_s": r["export_s"]["warm"],
                    "ratio": r["lower_s"] / r["export_s"]["warm"],
                    "lower_noverify_s": r.get("lower_noverify_s")}
    return None


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/bench.py",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes and few rounds (smoke run)")
    ap.add_argument("--only", nargs="+", metavar="NAME",
                    help="run only these workloads ('lowering': lowering time and memory, in "
                    "fresh processes)")
    ap.add_argument("--out", type=Path, default=Path("build/bench.md"))
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    ws = workloads(args.quick)
    run_lowering = not args.only or "lowering" in args.only
    if args.only:
        known = {w.name for w in ws} | {"lowering"}
        unknown = [n for n in args.only if n not in known]
        if unknown:
            print(f"fxlower bench: unknown workloads {unknown}; known: {sorted(known)}",
                  file=sys.stderr)
            return 2
        ws = [w for w in ws if w.name in args.only]
    settings = Settings.make(args.quick)
    info = machine_info()
    print(f"fxlower bench{' --quick' if args.quick else ''}: {len(ws)} workloads"
          f"{' and lowering' if run_lowering else ''} on {info['cpu']}, "
          f"{info['logical_cores']} cores", flush=True)
    meter = LoadMeter()
    status = 0
    lowering = None
    if run_lowering:
        print("lowering, each run in a fresh process:", flush=True)
        lowering = measure_lowering(args.quick, progress=lambda s: print(s, flush=True))
        if any("error" in m for m in lowering["models"].values()):
            status = 1
    rows: list[dict[str, Any]] = []
    peaks = None
    if ws:
        peaks_start = measure_peaks(args.quick)
        print(f"matmul peak: onnxruntime {peaks_start['ort_gflops']:.0f} GFLOP/s, torch "
              f"{peaks_start['torch_gflops']:.0f} GFLOP/s; "
              f"copy {peaks_start['copy_gb_s']:.1f} GB/s", flush=True)
        with tempfile.TemporaryDirectory(prefix="fxlower-bench-") as d:
            for i, w in enumerate(ws, 1):
                print(f"[{i}/{len(ws)}] {w.name} ...", end=" ", flush=True)
                t0 = time.perf_counter()
                try:
                    row = run_workload(w, settings, Path(d))
                    print(f"ORT {row['ort_ms']['original']['median']:.3f} -> "
                          f"{row['ort_ms']['lowered']['median']:.3f} ms (x{row['ort_ratio']:.2f}), "
                          f"torch x{row['torch_ratio']:.2f} ({time.perf_counter() - t0:.0f}s)",
                          flush=True)
                except Exception as e:  # noqa: BLE001 - one failing workload must not hide the rest
                    status = 1
                    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    row = {"name": w.name, "kind": w.kind,
                           "error": f"{type(e).__name__}: {msg[:300]}"}
                    print(f"FAILED: {row['error']}", flush=True)
                    if os.environ.get("FXLOWER_DEBUG"):
                        traceback.print_exc()
                rows.append(row)
        samples = [r["peak_sample_gflops"] for r in rows if r.get("peak_sample_gflops")]
        peaks = combine_peaks(peaks_start, measure_peaks(args.quick), samples)
        apply_peaks(rows, peaks)
    info["other_load"] = meter.other()
    try:
        info["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    wall = time.perf_counter() - t_start
    shown = (" --quick" if args.quick else "") + (
        f" --only {' '.join(args.only)}" if args.only else "")
    text = format_markdown(info, peaks, rows, args.quick, wall, lowering, shown)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"machine": info, "peaks": peaks, "quick": args.quick, "wall_s": wall, "rows": rows,
         "lowering": lowering, "targets": targets(rows, lowering),
         "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
        indent=1, default=str))
    print()
    print(text)
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
