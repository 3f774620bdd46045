"""Linear layers, whatever their spelling: a normalising view plus the algebra of merging.

View. A pass asks `family(node)` (cheap: which kind of layer a node spells, if any),
then `layer(node)` / `norm(node)` for a canonical record, or a reason string when the
node is such a layer but cannot be used (weight computed at run time, transposed conv).

| family            | spellings                                                             |
| ----------------- | --------------------------------------------------------------------- |
| `conv1d/2d/3d`    | `nn.Conv1d/2d/3d`; `F.conv1d/2d/3d` (= `torch.conv*d`); `aten.conv*d.default`, |
|                   | `aten.conv*d.padding`, `aten.convolution.default` (not transposed)       |
| `linear`          | `nn.Linear`; `F.linear`; `aten.linear.default`                          |
| `bn`              | `nn.BatchNorm1d/2d/3d`; `F.batch_norm`, `torch.batch_norm`;             |
|                   | `aten.batch_norm.default`; the tuple-valued                            |
|                   | `aten._native_batch_norm_legit_no_training`, `_native_batch_norm_legit` |
|                   | (`_functional`, `.no_stats`), `native_batch_norm` (output: getitem 0)  |

torch.export (torch 2.13, non-strict, `ep.module()`) spells eval and training BN alike as
`aten.batch_norm.default(x, w, b, mean, var, training, momentum, eps, cudnn)`. Functionalised
(`run_decompositions({})`, what fxlower's capture does) eval BN becomes the tuple-valued
`_native_batch_norm_legit_no_training` read through `getitem 0`, training BN
`_native_batch_norm_legit_functional` with getitems 0, 3, 4; convs stay `aten.conv*d`
(`aten.convolution` after a full `run_decompositions()`). A tuple-valued BN is matched at
the tuple node; `Norm.out` is its getitem 0.
Weights and biases must be constants (`graph.is_const`: parameters, buffers, and
deterministic ops on them).

Algebra. `Geom` is the shape of a layer (channels, kernel, stride, padding, dilation,
groups, padding mode, whether its bias is zero, static sizes when known). `compose_geom`
merges two geometries or returns the reason it would not be exact; `compose_weights`
does the same arithmetic on float64 weights. A linear layer is a conv with no spatial
dims. For `y = b(a(x))`, per spatial dim:
    stride S = s_a*s_b; dilation D = gcd(s_a*d_b, d_a); alpha = s_a*d_b/D, beta = d_a/D;
    kernel K = alpha*(k_b-1) + beta*(k_a-1) + 1; padding P = s_a*p_b + p_a;
    groups = gcd(g_a, g_b);
    W[o, i, n] = sum_{c, u, t : n = alpha*u + beta*t} W_b[o, c, u] * W_a[c, i, t]
    bias = b_b + sum_{c, u} W_b[o, c, u] * b_a[c]
W is the full correlation of the kernels (Stack Overflow 58357815), computed as one
float64 conv of the zero-inserted `W_a` with the flipped, dilated `W_b`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeGuard, cast

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .. import graph as g

aten = torch.ops.aten

_CONV_DIMS = {
    torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3,
    aten.conv1d.default: 1, aten.conv2d.default: 2, aten.conv3d.default: 3,
    aten.conv1d.padding: 1, aten.conv2d.padding: 2, aten.conv3d.padding: 3,
}
_CONV_MODULES = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_LINEAR_FNS = {F.linear, aten.linear.default}
_BN_FNS = {F.batch_norm, torch.batch_norm, aten.batch_norm.default}
_BN_TUPLE_OPS = {
    aten._native_batch_norm_legit_no_training.default,
    aten._native_batch_norm_legit_functional.default,
    aten._native_batch_norm_legit.default,
    aten._native_batch_norm_legit.no_stats,
    aten.native_batch_norm.default,
}

_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
_LINEAR_ARGS = ("input", "weight", "bias")
_F_BN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training",
              "momentum", "eps")
_F_BN_DEFAULTS = {"weight": None, "bias": None, "training": False, "momentum": 0.1,
                  "eps": 1e-5}


# ----------------------------------------------------------------------------- view


def _bind(node: fx.Node, names: Sequence[str] | None = None,
          defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The node's arguments by name (ATen schemas give names and defaults themselves)."""
    t = node.target
    if names is None and isinstance(t, torch._ops.OpOverload):
        args = t._schema.arguments
        names = [a.name for a in args]
        defaults = {a.name: a.default_value for a in args if a.has_default_value()}
    assert names is not None
    out = dict(defaults or {})
    out.update(zip(names, node.args, strict=False))
    out.update(node.kwargs)
    return out


def _module(node: fx.Node) -> nn.Module | None:
    if node.op != "call_module":
        return None
    gm = node.graph.owning_module
    if gm is None:  # a graph without a module has no submodules
        return None
    try:
        return cast(nn.Module, g.get_attr(gm, str(node.target)))  # call_module: a module
    except AttributeError:
        return None


def _conv_module_dims(mod: nn.Module) -> int | None:
    for cls, d in _CONV_MODULES.items():
        if isinstance(mod, cls) and type(mod).forward is cls.forward and (
            type(mod)._conv_forward is cls._conv_forward
        ):
            return d
    return None


def _is_linear_module(mod: nn.Module) -> bool:
    return isinstance(mod, nn.Linear) and type(mod).forward is nn.Linear.forward


def _is_bn_module(mod: nn.Module) -> TypeGuard[nn.modules.batchnorm._BatchNorm]:
    base = nn.modules.batchnorm._BatchNorm
    return (isinstance(mod, base) and type(mod).forward is base.forward
            and not isinstance(mod, nn.modules.lazy.LazyModuleMixin))


def _bn_output(node: fx.Node) -> fx.Node | None:
    """For a tuple-valued ATen batch norm, its `getitem(., 0)` user (the normalised
    tensor), if any."""
    return next((u for u in node.users if u.op == "call_function"
                 and u.target is operator.getitem and u.args[1] == 0), None)


def _weight_rank(w: Any) -> int | None:
    s = g.spec(w)
    if s is not None:
        return s.rank
    if isinstance(w, fx.Node) and w.op == "get_attr":
        v = g.get_attr(cast(fx.GraphModule, w.graph.owning_module), str(w.target))
        return v.dim() if isinstance(v, torch.Tensor) else None
    return None


def family(node: Any) -> str | None:
    """'conv1d' | 'conv2d' | 'conv3d' | 'linear' | 'bn' when the node spells such a layer."""
    if not isinstance(node, fx.Node):
        return None
    if node.op == "call_module":
        mod = _module(node)
        if mod is None:
            return None
        d = _conv_module_dims(mod)
        if d is not None:
            return f"conv{d}d"
        if _is_linear_module(mod):
            return "linear"
        return "bn" if _is_bn_module(mod) else None
    if node.op != "call_function":
        return None
    t = node.target
    if t in _CONV_DIMS:
        return f"conv{_CONV_DIMS[t]}d"
    if t is aten.convolution.default:
        r = _weight_rank(_bind(node).get("weight"))
        return f"conv{r - 2}d" if r in (3, 4, 5) else None
    if t in _LINEAR_FNS:
        return "linear"
    if t in _BN_FNS or t in _BN_TUPLE_OPS:
        return "bn"
    return None


def data_input(node: fx.Node) -> Any:
    """The tensor a conv / linear / BN node transforms."""
    if node.args:
        return node.args[0]
    return node.kwargs.get("input")


def readable(node: fx.Node) -> str:
    """A name to show and to build merged module names from: the module path with dots
    as underscores; for a function / ATen call on a module's parameters (torch.export keeps
    `conv1.weight`) that module's path; else the node name."""
    if node.op == "call_module":
        return str(node.target).replace(".", "_")
    for a in node.all_input_nodes[1:]:
        if a.op == "get_attr":
            prefix, _, leaf = str(a.target).rpartition(".")
            if prefix and leaf in ("weight", "running_mean"):
                return prefix.replace(".", "_")
    return node.name


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    t = tuple(int(x) for x in v)
    return t * n if len(t) == 1 and n > 1 else t


@dataclass(frozen=True)
class Layer:
    """A conv (dims 1-3) or linear (dims 0) layer, canonically."""

    node: fx.Node  # produces the layer's output
    x: fx.Node  # the data input
    name: str  # readable name (see `readable`)
    spelling: str  # "nn.Conv2d", "F.conv2d", "aten.convolution", ...
    dims: int
    weight: torch.Tensor  # (out, in/groups, *k); linear (out, in)
    bias: torch.Tensor | None
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    padding_mode: str  # "zeros" | "reflect" | "replicate" | "circular"

    @property
    def kind(self) -> str:
        return "linear" if self.dims == 0 else "conv"

    @property
    def cout(self) -> int:
        return int(self.weight.shape[0])

    @property
    def cin(self) -> int:
        return int(self.weight.shape[1]) * self.groups

    @property
    def k(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.weight.shape[2:])

    def geom(self) -> Geom:
        sx, sy = g.spec(self.x), g.spec(self.node)
        in_size = out_size = None
        positions = None
        if sx is not None and sy is not None:
            if self.dims:
                in_size = tuple(sx.shape[-self.dims:])
                out_size = tuple(sy.shape[-self.dims:])
            positions = sy.numel // self.cout if self.cout else 0
        mode = self.padding_mode if any(self.padding) else "zeros"
        return Geom(
            dims=self.dims, cin=self.cin, cout=self.cout, groups=self.groups, k=self.k,
            stride=self.stride, padding=self.padding, dilation=self.dilation,
            padding_mode=mode, has_bias=self.bias is not None,
            bias_zero=self.bias is None or not bool(self.bias.detach().any()),
            dtype=self.weight.dtype, in_size=in_size, out_size=out_size, positions=positions,
        )


def _const(node: Any, what: str, owner: str) -> torch.Tensor | None | str:
    """The value of a weight / bias argument, or a reason it is not a constant tensor."""
    if node is None:
        return None
    gm = node.graph.owning_module if isinstance(node, fx.Node) else None
    if isinstance(node, fx.Node) and not g.is_const(node):
        return f"the {what} of '{owner}' is computed from the model's inputs, not a constant"
    v = g.const_value(gm, node) if gm is not None else node
    if not isinstance(v, torch.Tensor):
        return f"the {what} of '{owner}' is not a tensor"
    return v.detach()


def _same_padding(k: tuple[int, ...], dilation: tuple[int, ...], owner: str
                  ) -> tuple[int, ...] | str:
    pads = []
    for kk, d in zip(k, dilation, strict=True):
        total = d * (kk - 1)
        if total % 2:
            return (f"'{owner}' uses padding='same' with an even kernel, which pads "
                    "asymmetrically")
        pads.append(total // 2)
    return tuple(pads)


def _shared(node: fx.Node, name: str) -> str:
    """Why the layer's weights are shared with another node (a module called twice, or a
    parameter read by another op), or "": rewriting it would untie the shared weights."""
    graph = node.graph
    if node.op == "call_module":
        if sum(1 for n in graph.nodes if n.op == "call_module" and n.target == node.target) > 1:
            return f"module '{node.target}' is also called elsewhere: merging would untie its shared weights"
        return ""
    for a in node.all_input_nodes:
        if a.op != "get_attr":
            continue
        readers = {u for n in graph.nodes if n.op == "get_attr" and n.target == a.target
                   for u in n.users}
        if len(readers) > 1:
            return f"'{a.target}' of '{name}' is also used elsewhere: merging would untie the shared weights"
    return ""


def layer(node: fx.Node) -> Layer | str:
    """The canonical record of a conv / linear node (see `family`), or the reason it cannot
    be used (including weights shared with another node)."""
    fam = family(node)
    name = readable(node)
    if fam is None or fam == "bn":
        return f"'{name}' is not a conv or linear layer"
    shared = _shared(node, name)
    if shared:
        return shared
    mod = cast("nn.Linear | nn.modules.conv._ConvNd | None", _module(node))  # family() said so
    if mod is not None:
        x = node.args[0] if node.args else node.kwargs.get("input")
        if not isinstance(x, fx.Node):
            return f"the input of '{name}' is not a tensor node"
        mw = mod.weight.detach()
        mb = None if mod.bias is None else mod.bias.detach()
        if not mw.dtype.is_floating_point:
            return f"the weight of '{name}' is not floating point ({mw.dtype})"
        if isinstance(mod, nn.Linear):
            return Layer(node, x, name, "nn.Linear", 0, mw, mb, (), (), (), 1, "zeros")
        dims = _conv_module_dims(mod) or 0
        stride, dilation = _tuple(mod.stride, dims), _tuple(mod.dilation, dims)
        k = tuple(int(s) for s in mw.shape[2:])
        if isinstance(mod.padding, str):
            pad = (0,) * dims if mod.padding == "valid" else _same_padding(k, dilation, name)
            if isinstance(pad, str):
                return pad
        else:
            pad = _tuple(mod.padding, dims)
        return Layer(node, x, name, f"nn.{type(mod).__name__}", dims, mw, mb, stride, pad,
                     dilation, int(mod.groups), str(mod.padding_mode))
    t = node.target
    if fam == "linear":
        a = _bind(node, _LINEAR_ARGS, {"bias": None})
        spelling = "aten.linear" if isinstance(t, torch._ops.OpOverload) else "F.linear"
        dims = 0
    else:
        dims = int(fam[4])
        if isinstance(t, torch._ops.OpOverload):
            a = _bind(node)
            spelling = "aten." + t._schema.name.split("::")[-1]
            if a.get("transposed"):
                return f"'{name}' is a transposed convolution"
        else:
            a = _bind(node, _CONV_ARGS, _CONV_DEFAULTS)
            spelling = f"F.conv{dims}d"
    x = a.get("input")
    if not isinstance(x, fx.Node):
        return f"the input of '{name}' is not a tensor node"
    w = _const(a.get("weight"), "weight", name)
    if isinstance(w, str) or w is None:
        return w or f"'{name}' has no weight"
    b = _const(a.get("bias"), "bias", name)
    if isinstance(b, str):
        return b
    if not w.dtype.is_floating_point:
        return f"the weight of '{name}' is not floating point ({w.dtype})"
    if dims == 0:
        if w.dim() != 2:
            return f"the weight of '{name}' is not a matrix"
        return Layer(node, x, name, spelling, 0, w, b, (), (), (), 1, "zeros")
    if w.dim() != dims + 2:
        return f"the weight of '{name}' has rank {w.dim()}, expected {dims + 2}"
    groups = int(a.get("groups", 1))
    stride, dilation = _tuple(a.get("stride", 1), dims), _tuple(a.get("dilation", 1), dims)
    p = a.get("padding", 0)
    k = tuple(int(s) for s in w.shape[2:])
    if isinstance(p, str):
        pad = (0,) * dims if p == "valid" else _same_padding(k, dilation, name)
        if isinstance(pad, str):
            return pad
    else:
        pad = _tuple(p, dims)
    return Layer(node, x, name, spelling, dims, w, b, stride, pad, dilation, groups, "zeros")


@dataclass(frozen=True)
class Norm:
    """A batch norm, canonically: y = (x - mean) / sqrt(var + eps) * weight + bias along
    dim 1, when `batch_stats` is False."""

    node: fx.Node  # the batch-norm call (for tuple-valued ATen ops, the tuple)
    out: fx.Node | None  # produces the normalised tensor: `node`, or its getitem 0 user
    x: fx.Node
    name: str
    spelling: str
    mean: torch.Tensor | None
    var: torch.Tensor | None
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    eps: float
    training: bool  # training mode (module.training / training=True / the functional op)
    batch_stats: bool  # normalises with the batch's statistics (training or no running stats)
    input_rank: tuple[int, ...] | None  # ranks the module accepts (BatchNorm2d: (4,))

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-channel affine map, in float64: y = x * scale + shift."""
        assert self.mean is not None and self.var is not None
        mean, var = self.mean.double(), self.var.double()
        inv = 1.0 / torch.sqrt(var + self.eps)
        w = self.weight.double() if self.weight is not None else torch.ones_like(mean)
        b = self.bias.double() if self.bias is not None else torch.zeros_like(mean)
        scale = w * inv
        return scale, b - mean * scale


def norm(node: fx.Node) -> Norm | str:
    """The canonical record of a batch-norm node, or the reason it cannot be used."""
    name = readable(node)
    mod = _module(node)
    if mod is not None:
        if not _is_bn_module(mod):
            return f"'{name}' is not a batch norm"
        ranks = {nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,)}.get(
            type(mod))
        mean = None if mod.running_mean is None else mod.running_mean.detach()
        var = None if mod.running_var is None else mod.running_var.detach()
        x_in = cast(fx.Node, node.args[0])  # a module call's input: the traced tensor
        return Norm(node, node, x_in, name, f"nn.{type(mod).__name__}", mean, var,
                    None if mod.weight is None else mod.weight.detach(),
                    None if mod.bias is None else mod.bias.detach(), float(mod.eps),
                    bool(mod.training), bool(mod.training) or mean is None or var is None,
                    ranks)
    out: fx.Node | None = node
    t = node.target
    if t in _BN_TUPLE_OPS:
        a = _bind(node)
        out = _bn_output(node)
        spelling = "aten." + t._schema.name.split("::")[-1]
        training = t is not aten._native_batch_norm_legit_no_training.default and bool(
            a.get("training", True))
        if t is aten._native_batch_norm_legit_functional.default:
            training = True
    elif node.target is F.batch_norm:
        a = _bind(node, _F_BN_ARGS, _F_BN_DEFAULTS)
        spelling, training = "F.batch_norm", bool(a.get("training"))
    elif node.target in _BN_FNS:
        a = _bind(node) if isinstance(node.target, torch._ops.OpOverload) else _bind(
            node, ("input", "weight", "bias", "running_mean", "running_var", "training",
                   "momentum", "eps", "cudnn_enabled"))
        spelling = ("aten.batch_norm" if isinstance(node.target, torch._ops.OpOverload)
                    else "torch.batch_norm")
        training = bool(a.get("training"))
    else:
        return f"'{name}' is not a batch norm"
    x = a.get("input")
    if not isinstance(x, fx.Node):
        return f"the input of '{name}' is not a tensor node"
    vals: dict[str, torch.Tensor | None] = {}
    for key in ("running_mean", "running_var", "weight", "bias"):
        v = _const(a.get(key), key.replace("_", " "), name)
        if isinstance(v, str):
            return v
        vals[key] = v
    mean, var = vals["running_mean"], vals["running_var"]
    return Norm(node, out, x, name, spelling, mean, var, vals["weight"], vals["bias"],
                float(a.get("eps", 1e-5)), training, training or mean is None or var is None,
                None)


# ----------------------------------------------------------------------------- algebra


@dataclass(frozen=True)
class Geom:
    """The shape of a conv (dims >= 1) or linear (dims 0) layer, as merging sees it."""

    dims: int
    cin: int
    cout: int
    groups: int
    k: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    padding_mode: str  # effective: "zeros" whenever the padding is 0
    has_bias: bool
    bias_zero: bool  # no bias, or a bias of zeros
    dtype: torch.dtype
    in_size: tuple[int, ...] | None = None  # static spatial sizes, when known
    out_size: tuple[int, ...] | None = None
    positions: int | None = None  # output positions per call (numel / cout), when known

    @property
    def weights(self) -> int:
        return self.cout * (self.cin // self.groups) * math.prod(self.k)

    def macs(self, positions: int) -> int:
        return positions * self.weights

    def describe(self) -> str:
        if self.dims == 0:
            return f"Linear {self.cin}->{self.cout}"
        s = f"Conv{self.dims}d {self.cin}->{self.cout}, kernel {'x'.join(map(str, self.k))}"
        for label, v, dflt in (("stride", self.stride, 1), ("padding", self.padding, 0),
                               ("dilation", self.dilation, 1)):
            if any(x != dflt for x in v):
                s += f", {label} {_fmt(v)}"
        if self.groups > 1:
            s += f", groups {self.groups}"
        if self.padding_mode != "zeros":
            s += f", padding_mode {self.padding_mode}"
        return s


def _fmt(v: tuple[int, ...]) -> str:
    return str(v[0]) if len(set(v)) == 1 else "x".join(map(str, v))


def compose_geom(a: Geom, b: Geom, name_a: str, name_b: str) -> Geom | str:
    """The geometry of `b(a(x))` as one layer, or the reason the merge would not be exact.

    With `b` padding its input (p_b > 0) the merged layer computes `a` where `b` saw zero
    padding; that value is zero for every input only when `a` has no bias (or a zero one),
    pads with zeros, and every tap of `a` there reads padding: p_a >= d_a*(k_a-1) - s_a + 1
    on the left and s_a*L_a - p_a >= L on the right (static sizes; else p_a >= d_a*(k_a-1)).
    """
    if a.dtype != b.dtype:
        return f"'{name_a}' and '{name_b}' have weights of different dtypes ({a.dtype}, {b.dtype})"
    if a.cout != b.cin:
        return f"'{name_b}' expects {b.cin} channels but '{name_a}' gives {a.cout}"
    groups = math.gcd(a.groups, b.groups)
    if a.dims == 0:
        return replace(a, cout=b.cout, groups=1, has_bias=a.has_bias or b.has_bias,
                       bias_zero=a.bias_zero and b.bias_zero, out_size=b.out_size,
                       positions=b.positions)
    if any(b.padding):
        if b.padding_mode != "zeros":
            return (f"'{name_b}' pads its input with padding_mode='{b.padding_mode}', "
                    f"which repeats values of '{name_a}''s output: no single conv on "
                    f"'{name_a}''s input reproduces it")
        if not a.bias_zero:
            return (f"'{name_b}' zero-pads its input (padding {_fmt(b.padding)}) and "
                    f"'{name_a}' adds a bias: border outputs would change")
        if a.padding_mode != "zeros":
            return (f"'{name_b}' zero-pads its input and '{name_a}' pads with "
                    f"padding_mode='{a.padding_mode}': border outputs would change")
        for d in range(a.dims):
            if b.padding[d] == 0:
                continue
            reach = a.dilation[d] * (a.k[d] - 1)
            need = reach - a.stride[d] + 1
            if a.padding[d] < need:
                return (f"'{name_b}' zero-pads its input but '{name_a}''s padding "
                        f"{a.padding[d]} does not cover its receptive field (needs >= "
                        f"{need}{'' if a.dims == 1 else f' in spatial dim {d}'}): border "
                        "outputs would change")
            if a.in_size is not None and a.out_size is not None:
                right_ok = a.stride[d] * a.out_size[d] - a.padding[d] >= a.in_size[d]
            else:
                right_ok = a.padding[d] >= reach
            if not right_ok:
                return (f"'{name_b}' zero-pads its input but at the right border "
                        f"'{name_a}' reads real inputs there (stride {a.stride[d]}, padding "
                        f"{a.padding[d]}): border outputs would change")
        mode = "zeros"
    else:
        mode = a.padding_mode
    stride, dil, k, pad = [], [], [], []
    for d in range(a.dims):
        sa, da, ka = a.stride[d], a.dilation[d], a.k[d]
        D = math.gcd(sa * b.dilation[d], da)
        alpha, beta = sa * b.dilation[d] // D, da // D
        stride.append(sa * b.stride[d])
        dil.append(D)
        k.append(alpha * (b.k[d] - 1) + beta * (ka - 1) + 1)
        pad.append(sa * b.padding[d] + a.padding[d])
    return Geom(a.dims, a.cin, b.cout, groups, tuple(k), tuple(stride), tuple(pad),
                tuple(dil), mode, a.has_bias or b.has_bias, a.bias_zero and b.bias_zero,
                a.dtype, a.in_size, b.out_size, b.positions)


def dense(w: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped weight (out, in/groups, *k) as the equivalent dense (out, in, *k)."""
    if groups == 1:
        return w
    cout, cin_g = w.shape[:2]
    og = cout // groups
    out = w.new_zeros((cout, cin_g * groups, *w.shape[2:]))
    for i in range(groups):
        out[i * og:(i + 1) * og, i * cin_g:(i + 1) * cin_g] = w[i * og:(i + 1) * og]
    return out


def compose_weights(wa: torch.Tensor, ba: torch.Tensor | None, a: Geom,
                    wb: torch.Tensor, bb: torch.Tensor | None, b: Geom,
                    m: Geom) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weight and bias of `b(a(x))` in float64 (the geometry `m` from `compose_geom`)."""
    wa, wb = wa.double(), wb.double()
    if a.dims == 0:
        w = wb @ wa
    else:
        # Merged group i only involves its own blocks of channels (C0, C1, C2 split in
        # m.groups); within a block each layer is dense after `dense`. One grouped conv
        # computes every block: input (C0/g, C1, k_a) with block i's C1 channels holding
        # W_a's block i transposed, weight (C2, C1/g, k_b) holding W_b's block i flipped.
        G = m.groups
        c0g, c1g, c2g = a.cin // G, a.cout // G, b.cout // G
        blocks_a, blocks_b = [], []
        for i in range(G):
            wa_i = dense(wa[i * c1g:(i + 1) * c1g], a.groups // G)  # (C1/g, C0/g, *k_a)
            blocks_a.append(wa_i.transpose(0, 1))
            blocks_b.append(dense(wb[i * c2g:(i + 1) * c2g], b.groups // G))
        A = torch.cat(blocks_a, dim=1)  # (C0/g, C1, *k_a)
        B = torch.cat(blocks_b, dim=0).flip(list(range(2, 2 + a.dims)))  # (C2, C1/g, *k_b)
        assert A.shape[:2] == (c0g, c1g * G) and B.shape[:2] == (c2g * G, c1g)
        alpha, beta = [], []
        for d in range(a.dims):
            D = m.dilation[d]
            alpha.append(a.stride[d] * b.dilation[d] // D)
            beta.append(a.dilation[d] // D)
        if any(x > 1 for x in beta):  # W_a's taps sit beta apart on the merged grid
            size = [beta[d] * (a.k[d] - 1) + 1 for d in range(a.dims)]
            Z = A.new_zeros((*A.shape[:2], *size))
            Z[(slice(None), slice(None), *(slice(None, None, s) for s in beta))] = A
            A = Z
        conv = (F.conv1d, F.conv2d, F.conv3d)[a.dims - 1]
        full = conv(A, B, padding=[alpha[d] * (b.k[d] - 1) for d in range(a.dims)],
                    dilation=alpha, groups=G)  # (C0/g, C2, *K)
        w = full.transpose(0, 1).contiguous()  # (C2, C0/g, *K): grouped layout
    bias = None
    if m.has_bias:
        bias = bb.double() if bb is not None else torch.zeros(b.cout, dtype=torch.float64)
        if ba is not None:
            taps = wb.sum(dim=list(range(2, wb.dim()))) if wb.dim() > 2 else wb
            bias = bias + dense(taps, b.groups) @ ba.double()
    return w, bias


def make_module(m: Geom, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """A fresh nn.Conv*d / nn.Linear holding `weight` and `bias` (cast to `m.dtype`)."""
    kw: dict[str, Any] = {"device": "cpu", "dtype": m.dtype}
    if m.dims == 0:
        mod: nn.Linear | nn.modules.conv._ConvNd = nn.utils.skip_init(  # type: ignore[no-untyped-call]
            nn.Linear, m.cin, m.cout, bias=bias is not None, **kw)
    else:
        cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[m.dims - 1]
        mod = nn.utils.skip_init(  # type: ignore[no-untyped-call]
            cls, m.cin, m.cout, m.k, stride=m.stride, padding=m.padding,
            dilation=m.dilation, groups=m.groups,
            bias=bias is not None, padding_mode=m.padding_mode, **kw)
    with torch.no_grad():
        mod.weight = nn.Parameter(weight.to(m.dtype).contiguous().clone())
        if bias is not None:
            mod.bias = nn.Parameter(bias.to(m.dtype).contiguous().clone())
    return mod


# ----------------------------------------------------------------------------- surgery


def unique_name(gm: fx.GraphModule, base: str) -> str:
    base = "".join(c if c.isalnum() or c == "_" else "_" for c in base) or "merged"
    if base[0].isdigit():
        base = "m_" + base
    name, i = base, 1
    while hasattr(gm, name):
        name, i = f"{base}_{i}", i + 1
    return name


def install(gm: fx.GraphModule, anchor: fx.Node, x: fx.Node, base: str, module: nn.Module,
            replaced: Iterable[fx.Node], out: fx.Node | None = None) -> fx.Node:
    """Add `module` to `gm` as a submodule named after `base`, call it on `x` right before
    `anchor`, and remove the nodes in `replaced` (which must lead to `anchor` only), plus
    the submodules and parameters only they used. `out` (default `anchor`) is the node
    whose value the new call computes: when it is not `anchor` (the getitem of a
    tuple-valued op) its users move to the new node here. `anchor` is left for the caller
    to replace (run_passes does that with the returned node)."""
    out = anchor if out is None else out
    name = unique_name(gm, base)
    gm.add_submodule(name, module)
    with gm.graph.inserting_before(anchor):
        new = gm.graph.call_module(name, (x,))
    for key in (g.VAL, "val", "tensor_meta", "stack_trace", "nn_module_stack"):
        if key in out.meta:
            new.meta[key] = out.meta[key]
    if out is not anchor:
        out.replace_all_uses_with(new)
        gm.graph.erase_node(out)
    doomed = [n for n in replaced if n is not anchor]
    for n in doomed:
        for u in list(n.users):
            if u is anchor:
                u.replace_input_with(n, x)
    for n in reversed(doomed):
        if not n.users:
            gm.graph.erase_node(n)
    _release(gm, set(doomed) | {anchor})
    return new


def _release(gm: fx.GraphModule, dying: set[fx.Node]) -> None:
    """Delete the submodules and parameters that only dying nodes (and pure nodes feeding
    only them) reference, so the merged model holds only the merged weights."""
    dead = set(dying)
    for n in reversed(list(gm.graph.nodes)):
        if n in dead or n.op not in ("get_attr", "call_function", "call_method"):
            continue
        if n.op != "get_attr" and n.is_impure():
            continue
        if all(u in dead for u in n.users):
            dead.add(n)
    alive = {str(n.target) for n in gm.graph.nodes
             if n not in dead and n.op in ("get_attr", "call_module")}
    targets = {str(n.target) for n in dead if n.op in ("get_attr", "call_module")}

    def referenced(t: str) -> bool:
        return any(r == t or r.startswith(t + ".") or t.startswith(r + ".") for r in alive)

    for t in sorted(targets, key=lambda s: -s.count(".")):
        if referenced(t):
            continue
        parent, _, leaf = t.rpartition(".")
        try:
            owner = g.get_attr(gm, parent) if parent else gm
        except AttributeError:
            continue
        if not hasattr(owner, leaf):
            continue
        delattr(owner, leaf)
        # drop containers that only held what was just deleted (torch.export keeps `c.weight`
        # under an otherwise empty module `c`)
        while parent and not referenced(parent):
            try:
                holder = g.get_attr(gm, parent)
            except AttributeError:
                break
            if not isinstance(holder, nn.Module) or any(True for _ in holder.children()) or \
                    holder._parameters or holder._buffers:
                break
            grand, _, leaf2 = parent.rpartition(".")
            delattr(g.get_attr(gm, grand) if grand else gm, leaf2)
            parent = grand
