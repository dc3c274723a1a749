"""Export DGL `RelGraphConv` models and their graphs to rgnn files.

DGL is imported only inside the functions below, so `import rgnn_export` works without DGL.

Model file (see docs/model-config.md): one layer config per `dgl.nn.pytorch.RelGraphConv` found by
`named_modules()` (registration order, which is the run order for the usual `nn.ModuleList` stack).
Weights keep DGL's state_dict names under the layer's prefix (dgl 2.1.0):

    linear_r.W                   no regulariser: [num_rels, in_feat, out_feat]
                                 "basis":        [num_bases, in_feat, out_feat]
                                 "bdd":          [num_rels, num_bases * (in_feat/num_bases) * (out_feat/num_bases)]
    linear_r.coeff               "basis" only:   [num_rels, num_bases]
    h_bias                       bias=True:       [out_feat]
    loop_weight                  self_loop=True:  [in_feat, out_feat]
    layer_norm_weight.weight     layer_norm=True: [out_feat]
    layer_norm_weight.bias       layer_norm=True: [out_feat]

For "bdd", row r of `linear_r.W` viewed as [num_bases, in_feat/num_bases, out_feat/num_bases] holds
the diagonal blocks: block b maps input slice b to output slice b.

DGL's forward (dgl 2.1.0, `RelGraphConv.forward`):
    h_i = sum over edges e = j->i of norm_e * x_j @ W_{etype(e)}   (norm_e = 1 if no norm given)
    h = LayerNorm(h) if layer_norm;  h = h + h_bias if bias;  h = h + x_i @ loop_weight if self_loop
    h = activation(h) if the constructor was given one
DGL takes the edge normaliser as a forward argument; rgnn's config names it per layer: `norm`
"right" (1 / number of in-edges of the destination with the same relation) or "none".
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch

from . import common

# Names rgnn accepts for the activation applied after a layer.
ACTIVATIONS = (None, "relu", "gelu", "silu", "tanh", "elu", "sigmoid")
NORMS = ("right", "none")

PerLayer = Union[None, str, Sequence[Optional[str]], Mapping[str, Optional[str]]]


def _activation_name(fn: Any, where: str) -> Optional[str]:
    """rgnn's name for an activation callable given to a DGL layer's constructor (None if none).

    Recognises the torch functions and modules whose semantics match rgnn's exactly; anything
    else is an error, because the config could not describe it.
    """
    if fn is None:
        return None
    F = torch.nn.functional
    by_function = {
        torch.relu: "relu", F.relu: "relu",
        F.gelu: "gelu",  # exact (erf) GELU; the function's default
        F.silu: "silu",
        torch.tanh: "tanh", F.tanh: "tanh",
        F.elu: "elu",  # alpha = 1 by default
        torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
    }
    for known, name in by_function.items():
        if fn is known:
            return name
    if isinstance(fn, torch.nn.ReLU):
        return "relu"
    if isinstance(fn, torch.nn.GELU) and getattr(fn, "approximate", "none") == "none":
        return "gelu"
    if isinstance(fn, torch.nn.SiLU):
        return "silu"
    if isinstance(fn, torch.nn.Tanh):
        return "tanh"
    if isinstance(fn, torch.nn.ELU) and fn.alpha == 1.0:
        return "elu"
    raise ValueError(
        f"layer {where!r}: activation {fn!r} given to the RelGraphConv constructor has no rgnn "
        f"equivalent (supported: {', '.join(a for a in ACTIVATIONS if a)})")


def _per_layer(value: PerLayer, index: int, prefix: str, count: int, what: str) -> Any:
    """Pick a layer's entry of a per-layer option: a single value, a list (layer order) or a dict
    keyed by layer prefix. Returns the sentinel `_MISSING` when a dict has no entry."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return value.get(prefix, _MISSING)
    seq = list(value)
    if len(seq) != count:
        raise ValueError(f"{what}: {len(seq)} entries given for {count} RelGraphConv layers")
    return seq[index]


_MISSING = object()


def export_dgl_model(module: torch.nn.Module, path: str, norm: PerLayer = "right",
                     activations: PerLayer = None, model_name: str = "dgl-rgcn") -> List[Dict[str, Any]]:
    """Write `module`'s `RelGraphConv` layers to `path` (`*.model.safetensors`).

    norm: "right" or "none" for every layer, or a list (layer order) / dict (by prefix) of them.
        It must describe the `norm` tensor passed to each layer's forward: "right" when it is
        1 / in-degree of the destination within the edge's relation, "none" when it is omitted.
    activations: the activation the surrounding model applies to each layer's output (None,
        "relu", "gelu", "silu", "tanh", "elu", "sigmoid"), as a single value, a list or a dict by prefix.
        An activation passed to the RelGraphConv constructor is detected and recorded on its own;
        giving one here as well is an error (the layer would apply two, rgnn applies one).
    Returns the layer configs written.
    """
    from dgl.nn.pytorch import RelGraphConv  # lazy: DGL is optional for rgnn_export

    convs = [(name, m) for name, m in module.named_modules() if isinstance(m, RelGraphConv)]
    if not convs:
        raise ValueError("no dgl.nn.pytorch.RelGraphConv found in the module")

    state = module.state_dict()
    layers: List[Dict[str, Any]] = []
    tensors: Dict[str, torch.Tensor] = {}
    for index, (prefix, conv) in enumerate(convs):
        where = prefix or "<root>"
        lin = conv.linear_r
        regularizer = lin.regularizer
        # TypedLinear keeps num_bases only when regularised; RelGraphConv defaults it to num_rels.
        num_bases = int(lin.num_bases) if regularizer is not None else None

        layer_norm = bool(conv.layer_norm)
        if layer_norm:
            ln = conv.layer_norm_weight
            if not ln.elementwise_affine or not math.isclose(ln.eps, 1e-5) or \
                    tuple(ln.normalized_shape) != (lin.out_size,):
                raise ValueError(f"layer {where!r}: LayerNorm differs from RelGraphConv's "
                                 f"(affine, eps 1e-5, over out_feat)")

        layer_norm_kind = _per_layer(norm, index, prefix, len(convs), "norm")
        if layer_norm_kind is _MISSING or layer_norm_kind not in NORMS:
            raise ValueError(f"layer {where!r}: norm must be one of {NORMS}, got "
                             f"{'nothing' if layer_norm_kind is _MISSING else repr(layer_norm_kind)}")

        inner = _activation_name(conv.activation, where)
        outer = _per_layer(activations, index, prefix, len(convs), "activations")
        if outer is _MISSING:
            outer = None
        if outer not in ACTIVATIONS:
            raise ValueError(f"layer {where!r}: activation {outer!r} is not one of {ACTIVATIONS}")
        if inner is not None and outer is not None:
            raise ValueError(
                f"layer {where!r}: the constructor already applies {inner!r} and activations gives "
                f"{outer!r} after it; rgnn applies one activation per layer")
        activation = inner if inner is not None else outer

        layers.append({
            "type": "RelGraphConv",
            "prefix": prefix,
            "in_feat": int(lin.in_size),
            "out_feat": int(lin.out_size),
            "num_rels": int(lin.num_types),
            "regularizer": regularizer,
            "num_bases": num_bases,
            "bias": bool(conv.bias),
            "self_loop": bool(conv.self_loop),
            "layer_norm": layer_norm,
            "norm": layer_norm_kind,
            "activation": activation,
        })

        # The layer's weights under their DGL names; the empty prefix (module is the layer) adds no dot.
        for key in conv.state_dict().keys():
            full = f"{prefix}.{key}" if prefix else key
            tensors[full] = state[full]

    # Anything else in the state_dict has no place in the config: refuse rather than drop it.
    extra = sorted(k for k in state if k not in tensors)
    if extra:
        raise ValueError(f"weights outside any RelGraphConv cannot be exported: {extra}")

    common.write_model(path, model_name, layers, tensors)
    return layers


def right_norm(dst: torch.Tensor, etypes: torch.Tensor, num_nodes: int, num_rels: int) -> torch.Tensor:
    """DGL's per-relation right normaliser as the `[E, 1]` norm tensor RelGraphConv's forward takes:
    1 / (number of edges with the same destination and the same relation), duplicates included."""
    key = dst.to(torch.int64) * num_rels + etypes.to(torch.int64)
    counts = torch.bincount(key, minlength=num_nodes * num_rels)
    return (1.0 / counts[key].to(torch.float32)).unsqueeze(1)


def export_dgl_graph(g: Any, etypes: Optional[Union[torch.Tensor, Sequence[int]]],
                     x: Optional[torch.Tensor], path: str) -> Dict[str, torch.Tensor]:
    """Write a homogeneous DGLGraph `g` with per-edge relation ids `etypes` and node features `x`
    to `path` (`*.graph.safetensors`): `edge_index` (row 0 source, row 1 destination) in edge-id
    order, `edge_type`, and `x` (or `num_nodes` when `x` is None).

    `etypes` may be None when `g.edata[dgl.ETYPE]` holds them (graphs from `dgl.to_homogeneous`).
    Returns the tensors written.
    """
    import dgl  # lazy: DGL is optional for rgnn_export

    if len(g.canonical_etypes) != 1 or len(g.ntypes) != 1:
        raise ValueError("export_dgl_graph needs a homogeneous graph; use dgl.to_homogeneous "
                         "(relation ids are then in g.edata[dgl.ETYPE])")
    if etypes is None:
        if dgl.ETYPE not in g.edata:
            raise ValueError("etypes not given and the graph has no g.edata[dgl.ETYPE]")
        etypes = g.edata[dgl.ETYPE]
    etypes = torch.as_tensor(etypes).reshape(-1)
    src, dst = g.edges(order="eid")
    if etypes.numel() != src.numel():
        raise ValueError(f"etypes has {etypes.numel()} entries for {src.numel()} edges")
    if x is not None and x.shape[0] != g.num_nodes():
        raise ValueError(f"x has {x.shape[0]} rows for {g.num_nodes()} nodes")

    edge_index = torch.stack([src.to(torch.int64), dst.to(torch.int64)])
    tensors = common.relational_graph_tensors(edge_index, etypes, x=x, num_nodes=g.num_nodes())
    common.write_graph(path, tensors)
    return tensors
