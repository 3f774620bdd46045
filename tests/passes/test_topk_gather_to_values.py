"""topk_gather_to_values: a gather at a tensor's own topk / sort / argsort indices is those
values (no mask); a gather of another tensor at them, or a topk along another dim, is
refused with its reason."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from helpers import applied, assert_same_outputs, gather_ops_left, lower_quiet, nonfinite, skipped
from strategies import randn as _x

TRACERS = ["symbolic_trace", "export"]


class TopkGather(nn.Module):
    """The 5-D attention pattern: gather weights at their own top-k indices."""

    def forward(self, w, other):
        idx = torch.topk(w, 3, dim=2).indices
        sorted_idx = torch.sort(w, dim=-1, descending=True).indices
        return (torch.gather(w, 2, idx), torch.gather(w, -1, sorted_idx),
                torch.gather(w, 1, torch.argsort(w, dim=1)), torch.gather(other, 2, idx))


@pytest.mark.parametrize("tracer", TRACERS)
def test_gather_at_own_topk_indices_is_the_values(tracer: str) -> None:
    w = nonfinite(_x(2, 3, 6, 4, 5))
    other = nonfinite(_x(2, 3, 6, 4, 5, seed=4))
    lowered = lower_quiet(TopkGather(), (w, other), tracer=tracer)
    rows = applied(lowered, "topk_gather_to_values")
    assert sorted(r.detail.split(":")[0] for r in rows) == [
        "gather at its own argsort indices", "gather at its own sort indices",
        "gather at its own topk indices"]
    assert all(r.macs == 0 and r.mask_elems == 0 for r in rows)
    # the gather of another tensor at those indices still needs (and gets) a mask
    assert [s.reason for s in skipped(lowered) if s.pass_name == "topk_gather_to_values"] == [
        "the index comes from a topk of another tensor, not of the gathered one"]
    assert len(applied(lowered, "gather_to_mask_matmul")) == 1
    assert gather_ops_left(lowered) == {}
    assert_same_outputs(TopkGather()(w, other), lowered(w, other))


def test_topk_along_another_dim_is_refused() -> None:
    class OtherDim(nn.Module):
        def forward(self, w):
            return torch.gather(w, 1, torch.topk(w, 2, dim=0).indices)

    w = _x(4, 4)
    lowered = lower_quiet(OtherDim(), (w,))
    assert any(s.reason == "the topk runs along another dim than the gather"
               for s in skipped(lowered))
    assert_same_outputs(OtherDim()(w), lowered(w))
