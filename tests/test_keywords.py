"""Keyword example inputs (issue 18): `lower(model, example_kwargs=...)` / `export(...,
example_kwargs=...)` capture, verify and export a model called with keywords, as
transformers users call it (`model(**tokenizer(...))`); the lowered module takes the same
call and the exported file's inputs carry the keywords' names."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import onnx
import pytest
import torch
import torch.nn as nn
from helpers import gather_ops_left

import fxlower
from fxlower.check import check_file


def _quiet_lower(model, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fxlower.lower(model, *args, **kwargs)


def _quiet_export(model, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fxlower.export(model, *args, **kwargs)


class Optional3(nn.Module):
    """Optional arguments between the used ones: `forward(ids, mask=None, scale=None,
    pos=None)` called as `(ids, pos=pos)`: no None placeholder for mask and scale."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, 4)
        self.lin = nn.Linear(4, 4)

    def forward(self, ids, mask=None, scale=None, pos=None):
        h = self.emb(ids)
        if pos is not None:
            h = h + self.emb(pos)
        if mask is not None:
            h = h * mask[..., None]
        if scale is not None:
            h = h * scale
        return self.lin(h)


def _ids(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 10, (2, 5), generator=g), torch.randint(0, 10, (2, 5), generator=g)


@pytest.mark.parametrize("tracer", ["symbolic_trace", "export"])
def test_optional_arguments_between_used_ones_are_skipped_not_traced_as_none(tracer: str) -> None:
    model = Optional3().eval()
    ids, pos = _ids()
    low = _quiet_lower(model, (ids,), example_kwargs={"pos": pos}, tracer=tracer)
    assert fxlower.report_of(low).capture == ("torch.export" if tracer == "export"
                                               else "symbolic_trace")
    assert [n.name for n in low.graph.nodes if n.op == "placeholder"] == ["ids", "pos"]
    assert gather_ops_left(low) == {}
    ids2, pos2 = _ids(1)
    with torch.no_grad():
        want = model(ids2, pos=pos2)
        assert torch.equal(low(ids2, pos=pos2), want)  # the same call as the original's
        assert torch.equal(low(ids=ids2, pos=pos2), want)
    assert type(model) is Optional3  # the user's model object is untouched


def test_a_dict_passed_as_example_inputs_is_refused_naming_example_kwargs() -> None:
    ids, pos = _ids()
    with pytest.raises(fxlower.LoweringError, match="example_kwargs"):
        fxlower.lower(Optional3(), {"ids": ids, "pos": pos})


def test_keywords_the_forward_does_not_take_are_named() -> None:
    ids, _ = _ids()
    with pytest.raises(fxlower.LoweringError, match=r"Optional3\.forward.*'posititon'"):
        fxlower.lower(Optional3(), example_kwargs={"ids": ids, "posititon": ids})


def test_verify_inputs_as_keyword_dicts() -> None:
    model = Optional3().eval()
    ids, pos = _ids()
    runs = [{"ids": a, "pos": b} for a, b in (_ids(2), _ids(3))]
    low = _quiet_lower(model, example_kwargs={"ids": ids, "pos": pos}, verify_inputs=runs)
    v = fxlower.report_of(low).verification
    assert v["runs"] == 3  # the example, then the two keyword runs
    with pytest.raises(fxlower.LoweringError, match="lacks the keyword input 'pos'"):
        fxlower.lower(model, example_kwargs={"ids": ids, "pos": pos},
                      verify_inputs=[{"ids": ids}])


def test_export_names_the_file_inputs_after_the_keywords(tmp_path: Path) -> None:
    ids, pos = _ids()
    path = tmp_path / "m.onnx"
    report = _quiet_export(Optional3().eval(), (ids,), path, example_kwargs={"pos": pos})
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["ids", "pos"]
    assert check_file(path).ok
    assert report.onnx["ort_max_abs_error"] < 1e-5


def _bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=32)
    model = BertModel(cfg).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 100, (2, 8), generator=g)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 6:] = 0
    return model, {"input_ids": ids, "attention_mask": mask,
                   "token_type_ids": torch.zeros(2, 8, dtype=torch.long)}


def test_bert_lowers_and_exports_from_a_tokenizer_style_dict(tmp_path: Path) -> None:
    model, enc = _bert()
    low = _quiet_lower(model, example_kwargs=enc)
    assert gather_ops_left(low) == {}
    with torch.no_grad():
        got, want = low(**enc), model(**enc)
    assert type(got) is type(want)
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state)
    path = tmp_path / "bert.onnx"
    _quiet_export(model, path=path, example_kwargs=enc)
    assert [i.name for i in onnx.load(str(path)).graph.input] == list(enc)
    assert check_file(path).ok


def test_bert_position_ids_without_the_arguments_before_it(tmp_path: Path) -> None:
    """BertModel.forward(input_ids, attention_mask, token_type_ids, position_ids, ...):
    only input_ids and position_ids given."""
    model, enc = _bert()
    pos = torch.arange(8).flip(0).expand(2, 8).contiguous()
    call = {"input_ids": enc["input_ids"], "position_ids": pos}
    path = tmp_path / "bert_pos.onnx"
    report = _quiet_export(model, path=path, example_kwargs=call)
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["input_ids", "position_ids"]
    assert report.onnx["forbidden"] == 0


def test_gpt2_with_a_constant_keyword_is_fixed_at_capture(tmp_path: Path) -> None:
    """GPT-2 called as `model(input_ids=..., attention_mask=..., use_cache=False)`:
    use_cache holds no tensor, so it is fixed (as torch.export fixes it); the file takes the
    two tensors and the lowered module the tensor keywords."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=1, n_head=2,
                                       n_positions=32)).eval()
    g = torch.Generator().manual_seed(0)
    call = {"input_ids": torch.randint(0, 100, (1, 8), generator=g),
            "attention_mask": torch.ones(1, 8, dtype=torch.long), "use_cache": False}
    low = _quiet_lower(model, example_kwargs=call)
    tensors = {k: v for k, v in call.items() if k != "use_cache"}
    with torch.no_grad():
        torch.testing.assert_close(low(**tensors).logits, model(**call).logits)
    path = tmp_path / "gpt2.onnx"
    report = _quiet_export(model, path=path, example_kwargs=call)
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["input_ids", "attention_mask"]
    assert report.onnx["forbidden"] == 0 and check_file(path).ok


def test_cli_factory_returning_args_and_kwargs(tmp_path: Path) -> None:
    src = tmp_path / "fac.py"
    src.write_text(
        "import torch, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_keywords import Optional3, _ids\n"
        "def make():\n"
        "    ids, pos = _ids()\n"
        "    return Optional3().eval(), (ids,), {'pos': pos}\n")
    from fxlower.cli import main

    out = tmp_path / "out.onnx"
    assert main(["lower", f"{src}:make", "-o", str(out)]) == 0
    assert [i.name for i in onnx.load(str(out)).graph.input] == ["ids", "pos"]


def test_an_instance_level_forward_is_what_the_view_calls() -> None:
    """accelerate's hooks replace `model.forward` on the instance; a call runs that one, so
    the keyword view calls it too (found in review: it called the class's forward)."""
    import functools

    model = Optional3().eval()
    old = model.forward
    seen: list[str] = []

    def new_forward(module, *args, **kwargs):
        seen.append("wrapped")
        return old(*args, **kwargs)

    model.forward = functools.update_wrapper(functools.partial(new_forward, model), old)
    ids, pos = _ids()
    low = _quiet_lower(model, example_kwargs={"ids": ids, "pos": pos})
    assert seen  # the wrapper ran (verification's runs of the view)
    ids2, pos2 = _ids(4)
    with torch.no_grad():
        assert torch.equal(low(ids=ids2, pos=pos2), model(ids=ids2, pos=pos2))


def test_hooks_on_the_model_itself_are_refused_with_keywords() -> None:
    """A pre-hook with_kwargs would see the view's positional call, not the user's
    keywords: refused by name rather than verified against the wrong call."""
    model = Optional3().eval()
    model.register_forward_pre_hook(lambda m, a, k: (a, k), with_kwargs=True)
    ids, pos = _ids()
    with pytest.raises(fxlower.LoweringError, match="hooks on the model itself"):
        fxlower.lower(model, example_kwargs={"ids": ids, "pos": pos})
    model.emb.register_forward_hook(lambda m, i, o: None)  # a submodule's: no matter
    model2 = Optional3().eval()
    model2.emb.register_forward_hook(lambda m, i, o: None)
    assert gather_ops_left(_quiet_lower(model2, example_kwargs={"ids": ids, "pos": pos})) == {}


def test_constants_under_var_keywords_and_their_runs() -> None:
    """A non-tensor keyword under **kwargs, even one named like a Python keyword, is fixed;
    a verify_inputs run that gives it another value is refused, not silently ignored."""

    class Kw(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)

        def forward(self, ids, **kw):
            h = self.emb(ids)
            return h * 2 if kw.get("lambda") else h

    model = Kw().eval()
    ids, _ = _ids()
    low = _quiet_lower(model, example_kwargs={"ids": ids, "lambda": True})
    assert [n.name for n in low.graph.nodes if n.op == "placeholder"] == ["ids"]
    with torch.no_grad():
        assert torch.equal(low(ids), model(ids, **{"lambda": True}))
    with pytest.raises(fxlower.LoweringError, match="fixed at capture"):
        fxlower.lower(model, example_kwargs={"ids": ids, "lambda": True},
                      verify_inputs=[{"ids": ids, "lambda": False}])


def test_a_class_that_refuses_a_subclass_is_named() -> None:
    class Base(nn.Module):
        def __init_subclass__(cls, flavor: str, **kw) -> None:
            super().__init_subclass__(**kw)

    class Flavoured(Base, flavor="x"):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)

        def forward(self, ids):
            return self.emb(ids)

    ids, _ = _ids()
    with pytest.raises(fxlower.LoweringError, match="keyword view of Flavoured.*positionally"):
        fxlower.lower(Flavoured(), example_kwargs={"ids": ids})
    assert gather_ops_left(_quiet_lower(Flavoured().eval(), (ids,))) == {}


def test_factory_specs_keep_a_single_input_positional_and_take_mappings(tmp_path: Path
                                                                         ) -> None:
    """(model, x) with x a tensor, list or dict is the one positional input, as before;
    the third value may be any mapping (a tokenizer's BatchEncoding is a UserDict)."""
    from fxlower.spec import load_spec

    src = tmp_path / "fac2.py"
    src.write_text(
        "import torch, collections\n"
        "class D(torch.nn.Module):\n"
        "    def forward(self, batch):\n"
        "        return batch['x'][:, 0]\n"
        "def make_dict():\n"
        "    return D(), {'x': torch.ones(2, 3)}\n"
        "def make_tensor():\n"
        "    return torch.nn.Identity(), torch.ones(2)\n"
        "def make_userdict():\n"
        "    return torch.nn.Identity(), (), collections.UserDict(input=torch.ones(2))\n")
    model, args, kwargs = load_spec(f"{src}:make_dict")
    assert isinstance(args, tuple) and len(args) == 1 and kwargs is None
    assert torch.equal(_quiet_lower(model, args)(*args), torch.ones(2))
    assert load_spec(f"{src}:make_tensor")[1][0].shape == (2,)
    _, args, kwargs = load_spec(f"{src}:make_userdict")
    assert args == () and type(kwargs) is dict and list(kwargs) == ["input"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
