"""The lowering report: plain data that every stage appends to and the CLI prints."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, cast


@dataclass(frozen=True)
class Applied:
    """One rewrite that was applied."""

    rewrite_id: str  # "<pass>:<node>", stable for a given model
    pass_name: str
    node: str
    op: str  # the user-facing op that was rewritten, e.g. "nn.Embedding 'emb'"
    detail: str  # the formulation chosen, in a phrase
    macs: int = 0  # multiply-adds the rewrite adds per call
    mask_elems: int = 0  # largest mask / temporary it materialises (elements)


@dataclass(frozen=True)
class Skipped:
    """A candidate that was left in place, with the reason in a sentence."""

    pass_name: str
    node: str
    op: str
    reason: str


@dataclass
class Report:
    capture: str = ""  # "symbolic_trace" or "torch.export"
    capture_note: str = ""  # why symbolic tracing was not used, when it was not
    applied: list[Applied] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    ops_before: dict[str, int] = field(default_factory=dict)  # forbidden-family ops in the graph
    ops_after: dict[str, int] = field(default_factory=dict)
    remaining: list[str] = field(default_factory=list)  # forbidden nodes left, described
    verification: dict[str, Any] = field(default_factory=dict)
    rolled_back: list[str] = field(default_factory=list)
    onnx: dict[str, Any] = field(default_factory=dict)  # filled by fxlower.export
    host: list[dict[str, Any]] = field(default_factory=list)  # lookups moved to the host
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    model_macs: int = 0  # multiply-adds per call of the model's own products (census.graph_macs)
    advice: list[str] = field(default_factory=list)  # cheaper options, when a rewrite is costly

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in self.applied:
            out[a.pass_name] = out.get(a.pass_name, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data, schema `fxlower-report/1` (the file
        report.schema.json in the package, `schema()`): what `fxlower report --format json`
        prints and `fxlower lower --report-json` writes. Non-finite floats become null."""
        return cast(dict[str, Any], _json_safe({
            "schema": SCHEMA_ID,
            "input": "torch",
            "capture": {"method": self.capture, "note": self.capture_note},
            "applied": [{"rewrite_id": a.rewrite_id, "pass": a.pass_name, "node": a.node,
                         "op": a.op, "detail": a.detail, "macs": a.macs,
                         "mask_elems": a.mask_elems} for a in self.applied],
            "skipped": [{"pass": k.pass_name, "node": k.node, "op": k.op, "reason": k.reason}
                        for k in self.skipped],
            "ops_before": dict(self.ops_before),
            "ops_after": dict(self.ops_after),
            "remaining": list(self.remaining),
            "rolled_back": list(self.rolled_back),
            "verification": dict(self.verification),
            "onnx": dict(self.onnx) if self.onnx else None,
            "host": [dict(h) for h in self.host],
            "model_macs": self.model_macs,
            "advice": list(self.advice),
            "warnings": list(self.warnings),
            "seconds": dict(self.seconds),
        }))

    def format(self) -> str:
        """A readable table, as the CLI prints it: rendered from `to_dict()`."""
        return render(self.to_dict())

    def __str__(self) -> str:
        return self.format()


SCHEMA_ID = "fxlower-report/1"


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of `Report.to_dict()` / `OnnxReport.to_dict()`."""
    import json
    from importlib import resources

    text = resources.files("fxlower").joinpath("report.schema.json").read_text("utf-8")
    return cast(dict[str, Any], json.loads(text))


def _json_safe(v: Any) -> Any:
    """Plain JSON values: tuples as lists, keys as strings, NaN/inf as None."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if v is None or isinstance(v, (bool, int, str)):
        return v
    return str(v)


def _num(v: Any, fmt: str = ".3g") -> str:
    return "nan" if v is None else format(v, fmt)


def render(d: dict[str, Any]) -> str:
    """The text form of a report's data (`Report.to_dict()`)."""
    cap = d["capture"]
    lines = [f"capture: {cap['method']}" + (f"  ({cap['note']})" if cap["note"] else "")]
    before = ", ".join(f"{k} {v}" for k, v in sorted(d["ops_before"].items())) or "none"
    after = ", ".join(f"{k} {v}" for k, v in sorted(d["ops_after"].items())) or "none"
    lines.append(f"gather-family ops in the graph: before: {before}; after: {after}")
    if d["applied"]:
        lines.append("")
        lines.append(f"applied ({len(d['applied'])}):")
        w = max(len(a["pass"]) for a in d["applied"])
        for a in d["applied"]:
            cost = f"+{a['macs']:,} MACs" if a["macs"] else "no MACs"
            mask = f", mask {a['mask_elems']:,} elems" if a["mask_elems"] else ""
            lines.append(f"  {a['pass']:<{w}}  {a['op']}: {a['detail']} ({cost}{mask})")
    if d["host"]:
        lines.append("")
        lines.append(f"on the host ({len(d['host'])}; the device graph takes the rows as inputs):")
        for h in d["host"]:
            lines.append(
                f"  {h['op']}: table {'x'.join(map(str, h['table_shape']))} -> input "
                f"'{h['rows_input']}' {list(h['rows_shape'])}: 0 device FLOPs "
                f"(the one-hot product would add {h['device_flops_saved']:,})")
    if d["skipped"]:
        lines.append("")
        lines.append(f"skipped ({len(d['skipped'])}):")
        for s in d["skipped"]:
            lines.append(f"  {s['pass']}  {s['op']}: {s['reason']}")
    if d["rolled_back"]:
        lines.append("")
        lines.append("rolled back after verification failed: " + ", ".join(d["rolled_back"]))
    if d["remaining"]:
        lines.append("")
        lines.append("forbidden ops remaining: " + "; ".join(d["remaining"]))
    v = d["verification"]
    if v:
        lines.append("")
        if v.get("skipped"):
            lines.append(f"verification: skipped ({v['skipped']})")
        else:
            lines.append(
                f"verification: {v['runs']} runs, {v['outputs']} outputs each, "
                f"max abs error {_num(v['max_abs_error'])}"
                + (" (bit-exact)" if v.get("bit_exact") else "")
            )
    o = d["onnx"]
    if o:
        lines.append(
            f"onnx: {o.get('path')}: {o.get('nodes')} nodes, forbidden "
            f"{o.get('forbidden', 0)}, onnxruntime max abs error "
            f"{_num(o.get('ort_max_abs_error'))}"
        )
        if o.get("host_path"):
            lines.append(f"onnx: {o['host_path']}: the host lookups (run before the device file)")
    for wmsg in d["warnings"]:
        lines.append(f"warning: {wmsg}")
    for hint in d["advice"]:
        lines.append(f"hint: {hint}")
    return "\n".join(lines)


ADVICE_SHARE = 0.10  # a rewrite adding more than this share of the model's multiply-adds


def advise(applied: list[Applied], model_macs: int, hostable: set[str]) -> list[str]:
    """One hint per rewrite that adds more than ADVICE_SHARE of the model's multiply-adds,
    naming the cheaper option where one exists: `embedding="host"` for a lookup of a stored
    table by the model's inputs (`hostable`: the node names host.split would move), and
    `assume_finite=True` where the cost includes the non-finite code path."""
    out = []
    for a in applied:
        if a.macs <= ADVICE_SHARE * max(model_macs, 1):
            continue
        share = f"{100 * a.macs / model_macs:.0f}% of the model's {model_macs:,}" if model_macs \
            else "the model has no products of its own"
        options = []
        if a.node in hostable:
            options.append('embedding="host" runs this lookup on the host instead (one Gather '
                           "before the device graph, which takes the rows as an input: 0 "
                           "device multiply-adds)")
        if "non-finite code path" in a.detail:
            options.append(f"assume_finite=True drops the non-finite code path ({a.macs // 9:,} "
                           "of them) if the source never holds NaN, inf or -0.0")
        out.append(f"{a.op}: {a.pass_name} adds {a.macs:,} multiply-adds per call ({share})"
                   + (": " + "; or ".join(options) if options else
                      ": no cheaper exact formulation is known to fxlower"))
    return out
