"""Verification: the lowered module against the original, output leaf by output leaf.

Runs both on the example inputs and on fresh random draws of the same shapes, dtypes and
value ranges (integers uniform in the example's [min, max], so index inputs stay valid),
or on the user's own `verify_inputs` instead of the draws. A fresh draw the original model
itself fails on is skipped and reported (its valid inputs are narrower than the draw);
when every draw is skipped, VerificationError asks for `verify_inputs`.
Integer and boolean leaves must be equal; float leaves must have NaN/+inf/-inf in the same
places and, elsewhere, an error within a tolerance grounded in the original's own fp32
rounding: the original run in float64 is the reference, and the lowered error may be at
most `max(4 * e_orig, 8 * eps * scale)` where e_orig is the original's own error against
that reference and scale the largest finite magnitude of the output. Without a float64
reference (a model that cannot run in float64) the floor `8 * eps * scale` alone applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch.utils import _pytree as pytree

from . import progress
from .graph import preserved_state, snapshot


@dataclass
class Mismatch:
    output: str
    message: str
    error: float


def _path(kp: Any) -> str:
    return "output" + "".join(str(k) for k in kp)


def draw_like(inputs: tuple[Any, ...], seed: int) -> tuple[Any, ...]:
    """Fresh inputs with the same pytree, shapes, dtypes and value ranges."""
    gen = torch.Generator().manual_seed(seed)

    def one(t: Any) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        if t.dtype == torch.bool:
            return torch.randint(0, 2, t.shape, generator=gen).bool()
        if t.dtype.is_floating_point:
            x = torch.randn(t.shape, generator=gen, dtype=torch.float32)
            if t.numel() > 1:
                x = x * t.float().std().nan_to_num(1.0).clamp(min=1e-3) + t.float().mean().nan_to_num(0.0)
            return x.to(t.dtype)
        if t.dtype.is_complex:
            return t.clone()
        lo, hi = (int(t.min()), int(t.max())) if t.numel() else (0, 0)
        return torch.randint(lo, hi + 1, t.shape, generator=gen, dtype=torch.int64).to(t.dtype)

    return cast(tuple[Any, ...], pytree.tree_map(one, inputs))


@dataclass
class Run:
    """One set of inputs verification runs both models on."""

    inputs: tuple[Any, ...]
    label: str  # "example inputs" | "fresh draw" | "verify_inputs[i]"

    @property
    def fresh(self) -> bool:
        return self.label == "fresh draw"


def runs_for(example_inputs: tuple[Any, ...], verify_inputs: Any, draws: int,
             seed: int) -> list[Run]:
    """The example inputs, then the user's `verify_inputs` (a list of input tuples, or of
    single tensors) or else `draws` fresh draws."""
    runs = [Run(example_inputs, "example inputs")]
    if verify_inputs is None:
        return runs + [Run(draw_like(example_inputs, seed + i), "fresh draw") for i in range(draws)]
    from .errors import LoweringError

    if not isinstance(verify_inputs, (list, tuple)):
        raise LoweringError("verify_inputs must be a list of input tuples (one per run), not "
                            f"{type(verify_inputs).__name__}")
    for i, v in enumerate(verify_inputs):
        one = (v,) if isinstance(v, torch.Tensor) else v
        if not isinstance(one, tuple) or len(one) != len(example_inputs):
            raise LoweringError(
                f"verify_inputs[{i}] must be a tuple of {len(example_inputs)} positional "
                f"input(s) like example_inputs, got {type(v).__name__}"
                + (f" of {len(one)}" if isinstance(one, tuple) else ""))
        runs.append(Run(one, f"verify_inputs[{i}]"))
    return runs


def reference(original: Any, run: Run, seed: int, skipped: list[str]) -> Any:
    """The original's outputs on `run`, or None for a fresh draw it fails on (the reason
    goes to `skipped`). The user's own inputs must work: VerificationError otherwise."""
    from .errors import VerificationError

    try:
        return run_once(original, run.inputs, seed)
    except Exception as e:  # noqa: BLE001 - the user's own forward failed on these inputs
        first = (str(e).strip().splitlines() or [""])[0]
        why = f"{type(e).__name__}: {first}"
        if not run.fresh:
            raise VerificationError(f"the original model fails on {run.label}: {why}") from e
        skipped.append(f"the original model fails on a fresh draw ({why}); draw skipped")
        return None


def no_draw_left(skipped: list[str]) -> str:
    """The message when every fresh draw was skipped."""
    return (f"the original model fails on every fresh draw of the example's shapes and value "
            f"ranges ({skipped[0]}): its valid inputs are narrower; pass verify_inputs=[(...), "
            "...] with inputs it accepts, or verify=False")


def _to_double(x: Any) -> Any:
    return pytree.tree_map(
        lambda t: t.double() if isinstance(t, torch.Tensor) and t.dtype == torch.float32 else t, x
    )


def run_once(model: Any, inputs: tuple[Any, ...], seed: int) -> Any:
    """One forward pass that leaves the module's state as it was (a training-mode
    BatchNorm's statistics, a max_norm embedding's table): the user's model and the
    lowered one are both run here."""
    torch.manual_seed(seed)
    with torch.no_grad(), preserved_state(model):
        return model(*inputs)


def compare(
    reference: Any, lowered_out: Any, ref64: Any | None
) -> tuple[list[Mismatch], float, int, bool]:
    """Compare two output pytrees. Returns (mismatches, max abs error, leaves, bit-exact)."""
    ref_leaves, ref_spec = pytree.tree_flatten_with_path(reference)
    low_leaves, low_spec = pytree.tree_flatten_with_path(lowered_out)
    if [p for p, _ in ref_leaves] != [p for p, _ in low_leaves]:
        return ([Mismatch("output", f"output structure differs: {ref_spec} vs {low_spec}",
                          float("inf"))], float("inf"), len(ref_leaves), False)
    r64 = pytree.tree_leaves(ref64) if ref64 is not None else None
    out: list[Mismatch] = []
    worst = 0.0
    exact = True
    for i, ((kp, a), (_, b)) in enumerate(zip(ref_leaves, low_leaves, strict=True)):
        name = _path(kp)
        if not isinstance(a, torch.Tensor):
            if a != b:
                out.append(Mismatch(name, f"{a!r} != {b!r}", float("inf")))
            continue
        if not isinstance(b, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            desc = (f"{tuple(b.shape)} {b.dtype}" if isinstance(b, torch.Tensor) else type(b))
            out.append(Mismatch(name, f"expected {tuple(a.shape)} {a.dtype}, got {desc}",
                                float("inf")))
            continue
        if not a.dtype.is_floating_point:
            if not torch.equal(a, b):
                diff = (a != b).sum().item()
                out.append(Mismatch(name, f"{diff} of {a.numel()} values differ", float("inf")))
            continue
        exact = exact and torch.equal(a.nan_to_num(), b.nan_to_num()) and torch.equal(
            a.isnan(), b.isnan()
        )
        af, bf = a.double(), b.double()
        for label, f in (("NaN", torch.isnan), ("+inf", torch.isposinf), ("-inf", torch.isneginf)):
            if not torch.equal(f(af), f(bf)):
                n = (f(af) != f(bf)).sum().item()
                out.append(Mismatch(name, f"{label} in {n} different places", float("inf")))
                break
        else:
            fin = torch.isfinite(af)
            if not fin.any():
                continue
            err = (af[fin] - bf[fin]).abs().max().item()
            worst = max(worst, err)
            scale = af[fin].abs().max().item()
            eps = torch.finfo(a.dtype).eps
            tol = 8 * eps * max(scale, 1e-30)
            if r64 is not None and isinstance(r64[i], torch.Tensor) and r64[i].shape == a.shape:
                ref = r64[i].double()
                both = fin & torch.isfinite(ref)
                if both.any():
                    tol = max(tol, 4 * (af[both] - ref[both]).abs().max().item())
            if err > tol:
                out.append(Mismatch(name, f"max abs error {err:.3g} exceeds tolerance {tol:.3g}",
                                    err))
    return out, worst, len(ref_leaves), exact


class References:
    """The original model's outputs, one run per input for a whole lowering session: the
    runs (example inputs, then the draws or `verify_inputs`), each reference computed once
    and kept, and the float64 twin that widens the tolerance, made from a snapshot taken
    before any run (a forward may change Python state the twin must then see too: it
    replays the runs before the one it is first needed for)."""

    def __init__(self, original: torch.nn.Module, example_inputs: tuple[Any, ...], *,
                 draws: int = 2, seed: int = 0, draw_seed: int | None = None,
                 verify_inputs: Any = None) -> None:
        self.original, self.seed = original, seed
        self.runs = runs_for(example_inputs, verify_inputs, draws,
                             seed + 1 if draw_seed is None else draw_seed)
        self.verify_inputs = verify_inputs
        self.outs: dict[int, tuple[Any, list[str]]] = {}
        try:
            self.pristine: torch.nn.Module | None = snapshot(original)
        except Exception:  # noqa: BLE001 - models that cannot be copied
            self.pristine = None
        self.outs64: dict[int, Any] = {}
        self.twin: torch.nn.Module | None = None
        self.twin_ran = 0  # runs the twin has replayed

    def out(self, i: int) -> tuple[Any, list[str]]:
        """The original's output on run i (None if a fresh draw it fails on) and why."""
        if i not in self.outs:
            why: list[str] = []
            self.outs[i] = (reference(self.original, self.runs[i], self.seed, why), why)
        return self.outs[i]

    def out64(self, i: int) -> Any:
        """The float64 twin's output on run i, or None (a model that only runs in float32)."""
        if i not in self.outs64:
            self.outs64[i] = self._twin_run(i)
        return self.outs64[i]

    def _twin_run(self, i: int) -> Any:
        try:
            if self.twin is None:
                if self.pristine is None:
                    return None
                self.twin, self.pristine = self.pristine.double(), None
            while self.twin_ran < i:  # what the original saw before run i
                if self.out(self.twin_ran)[0] is not None:
                    run_once(self.twin, _to_double(self.runs[self.twin_ran].inputs), self.seed)
                self.twin_ran += 1
            self.twin_ran = i + 1
            return run_once(self.twin, _to_double(self.runs[i].inputs), self.seed)
        except Exception:  # noqa: BLE001 - some models only run in float32
            self.pristine = self.twin = None
            return None


def verify(
    original: torch.nn.Module,
    lowered: Any,
    example_inputs: tuple[Any, ...],
    *,
    draws: int = 2,
    seed: int = 0,
    verify_inputs: Any = None,
    refs: References | None = None,
) -> tuple[list[Mismatch], dict[str, Any]]:
    """Compare outputs on the example inputs and `draws` fresh draws (or `verify_inputs`).
    `refs` (a References of this original and these inputs) keeps the original's outputs
    across verifications of one session: a re-verification runs only the lowered module."""
    from .errors import VerificationError

    if refs is None:
        refs = References(original, example_inputs, draws=draws, seed=seed,
                          verify_inputs=verify_inputs)
    mismatches: list[Mismatch] = []
    skipped: list[str] = []
    worst, leaves, exact, done, fresh = 0.0, 0, True, 0, 0
    for i, run in enumerate(refs.runs):
        progress.step(f"run {i + 1}/{len(refs.runs)} ({run.label})")
        ref, why = refs.out(i)
        skipped += why
        if ref is None:
            continue
        low = run_once(lowered, run.inputs, refs.seed)
        m, w, leaves, ex = compare(ref, low, None)
        # the float64 reference only ever widens the tolerance (max of the floor and 4x the
        # original's own error), so it is needed only when the floor alone is exceeded
        if any(mm.error != float("inf") for mm in m):
            m, w, leaves, ex = compare(ref, low, refs.out64(i))
        for mm in m:
            mm.output = f"{mm.output} (run {done}: {run.label})"
        done += 1
        fresh += run.fresh
        mismatches += m
        worst = max(worst, w)
        exact = exact and ex
    if skipped and not fresh:
        raise VerificationError(no_draw_left(skipped))
    figures: dict[str, Any] = {"runs": done, "outputs": leaves, "max_abs_error": worst,
                               "bit_exact": exact}
    if skipped:
        figures["skipped_draws"] = skipped
    if refs.verify_inputs is not None:
        figures["inputs"] = "example inputs + verify_inputs"
    return mismatches, figures
