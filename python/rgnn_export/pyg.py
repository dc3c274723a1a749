"""Exporters for PyTorch Geometric models and graphs.

`export_pyg_model` finds every `RGCNConv`, `RGATConv` and `HGTConv` in a module (in
`named_modules()` order, which is the order the layers are registered) and writes one layer config
per layer plus the layers' weights under their unchanged state_dict names. The layers are assumed to
run in that order, each one's output feeding the next, with `activations[i]` applied after layer i.

`export_pyg_graph` writes a `Data` (relational, global node ids) or `HeteroData` graph.

Layer config keys are the constructor argument names listed in docs/model-config.md; every key is
written explicitly, defaults included, so a reader never has to know the framework defaults.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import warnings

import torch
from torch import nn

from .common import hetero_graph_tensors, relational_graph_tensors, write_graph, write_model

#: Activations the runtime understands (applied after a layer).
ACTIVATIONS = (None, "relu", "gelu", "silu", "tanh", "elu", "sigmoid")


class UnsupportedLayerError(ValueError):
    """A layer uses an option the rgnn runtime does not implement."""


def _layer_classes():
    # Imported lazily so that importing the package does not require torch_geometric.
    from torch_geometric.nn import HGTConv, RGATConv, RGCNConv
    return RGCNConv, RGATConv, HGTConv


def _opt_int(v: Any) -> Optional[int]:
    return None if v is None else int(v)


def _rgcn_config(name: str, layer: nn.Module) -> Dict[str, Any]:
    name = name or "<root>"
    if not isinstance(layer.in_channels, int):
        raise UnsupportedLayerError(
            f"layer '{name}' (RGCNConv): bipartite in_channels {layer.in_channels!r} is not supported")
    aggr = layer.aggr
    if not isinstance(aggr, str) or aggr not in ("mean", "add", "sum", "max"):
        raise UnsupportedLayerError(
            f"layer '{name}' (RGCNConv): aggr={aggr!r} is not supported (mean, add/sum, max)")
    return {
        "type": "RGCNConv",
        "in_channels": int(layer.in_channels),
        "out_channels": int(layer.out_channels),
        "num_relations": int(layer.num_relations),
        "num_bases": _opt_int(layer.num_bases),
        "num_blocks": _opt_int(layer.num_blocks),
        "aggr": aggr,
        "root_weight": layer.root is not None,
        "bias": layer.bias is not None,
    }


def _rgat_config(name: str, layer: nn.Module) -> Dict[str, Any]:
    name = name or "<root>"
    if layer.mod is not None:
        raise UnsupportedLayerError(
            f"layer '{name}' (RGATConv): mod={layer.mod!r} is not supported (only mod=None)")
    if layer.edge_dim is not None:
        raise UnsupportedLayerError(
            f"layer '{name}' (RGATConv): edge_dim={layer.edge_dim!r} is not supported "
            "(edge features are not implemented; only edge_dim=None)")
    return {
        "type": "RGATConv",
        "in_channels": int(layer.in_channels),
        "out_channels": int(layer.out_channels),
        "num_relations": int(layer.num_relations),
        "heads": int(layer.heads),
        "dim": int(layer.dim),
        "concat": bool(layer.concat),
        "attention_mode": str(layer.attention_mode),
        "attention_mechanism": str(layer.attention_mechanism),
        "negative_slope": float(layer.negative_slope),
        "bias": layer.bias is not None,
        "num_bases": _opt_int(layer.num_bases),
        "num_blocks": _opt_int(layer.num_blocks),
        "mod": None,
        "edge_dim": None,
    }


def _hgt_metadata(layer: nn.Module) -> Dict[str, Any]:
    return {"node_types": list(layer.node_types),
            "edge_types": [list(et) for et in layer.edge_types]}


def _hgt_config(name: str, layer: nn.Module) -> Dict[str, Any]:
    name = name or "<root>"
    # HGTConv stores in_channels as a dict keyed by node type (an int argument is expanded). Lazy
    # (-1) entries stay -1 after the first forward pass; the width is then that of the
    # materialised K/Q/V projection.
    in_ch = {str(t): int(c) for t, c in layer.in_channels.items()}
    for t, c in in_ch.items():
        if c <= 0:
            weight = layer.kqv_lin.lins[t].weight
            if not isinstance(weight, torch.nn.parameter.UninitializedParameter):
                in_ch[t] = int(weight.shape[1])
    if any(c <= 0 for c in in_ch.values()):
        raise UnsupportedLayerError(
            f"layer '{name}' (HGTConv): lazy in_channels (-1) must be materialised before export "
            f"(run one forward pass first); got {in_ch}")
    return {
        "type": "HGTConv",
        "in_channels": in_ch,
        "out_channels": int(layer.out_channels),
        "heads": int(layer.heads),
    }


def pyg_layer_configs(module: nn.Module) -> List[Tuple[str, nn.Module, Dict[str, Any]]]:
    """(prefix, layer, config without `prefix`/`activation`) for every supported layer, in order.

    Layers nested inside a supported layer are not searched (PyG convs contain no convs).
    """
    RGCNConv, RGATConv, HGTConv = _layer_classes()
    found: List[Tuple[str, nn.Module, Dict[str, Any]]] = []
    for name, sub in module.named_modules():
        if any(name.startswith(p + ".") for p, _, _ in found if p):
            continue
        if isinstance(sub, RGCNConv):  # FastRGCNConv is a subclass and has the same semantics
            found.append((name, sub, _rgcn_config(name, sub)))
        elif isinstance(sub, RGATConv):
            found.append((name, sub, _rgat_config(name, sub)))
        elif isinstance(sub, HGTConv):
            found.append((name, sub, _hgt_config(name, sub)))
    return found


def _metadata_dict(metadata: Any) -> Optional[Dict[str, Any]]:
    """`metadata` as the config's dict: given as one, or as PyG's `HeteroData.metadata()` tuple
    `(node_types, edge_types)`."""
    if metadata is None or isinstance(metadata, dict):
        return metadata
    if isinstance(metadata, (tuple, list)) and len(metadata) == 2:
        node_types, edge_types = metadata
        return {"node_types": [str(t) for t in node_types], "edge_types": [list(e) for e in edge_types]}
    raise ValueError("metadata must be {'node_types': [...], 'edge_types': [[src, rel, dst], ...]} "
                     f"or PyG's (node_types, edge_types) from HeteroData.metadata(); got {metadata!r}")


def export_pyg_model(module: nn.Module, path: str,
                     activations: Optional[Sequence[Optional[str]]] = None,
                     metadata: Any = None,
                     model_name: Optional[str] = None) -> Dict[str, Any]:
    """Write `module`'s RGCNConv / RGATConv / HGTConv layers to a `*.model.safetensors` file.

    Args:
        module: the model, or a single conv layer (then `prefix` is "" and names have no dot).
        path: output file.
        activations: one entry per found layer (None, "relu", "gelu", "silu", "tanh", "elu",
            "sigmoid"),
            applied after that layer; default: no activation anywhere.
        metadata: `{"node_types": [...], "edge_types": [[s, r, d], ...]}`, or PyG's
            `HeteroData.metadata()` tuple. Taken from the first HGTConv when omitted (PyG's
            order). Needed to run a relational model (RGCN, RGAT) on a heterogeneous graph.
        model_name: free-form `model` field of the config; default: the module's class name.

    Only those layers are exported: parameters of anything else in `module` (encoders, heads,
    skip connections) are left out, with a warning naming them, since rgnn would not run them.

    Returns the config dict that was written.
    """
    metadata = _metadata_dict(metadata)
    if model_name is None:
        model_name = type(module).__name__
    layers = pyg_layer_configs(module)
    if not layers:
        raise ValueError("no RGCNConv, RGATConv or HGTConv layer found in the module")
    if activations is None:
        activations = [None] * len(layers)
    if len(activations) != len(layers):
        raise ValueError(f"{len(activations)} activations given for {len(layers)} layers "
                         f"({', '.join(p or '<root>' for p, _, _ in layers)})")
    for a in activations:
        if a not in ACTIVATIONS:
            raise ValueError(f"unsupported activation {a!r}; expected one of {ACTIVATIONS}")

    # Model-level metadata: given, or from the HGT layers (which must all agree).
    _, _, HGTConv = _layer_classes()
    hgt_meta = [_hgt_metadata(l) for _, l, _ in layers if isinstance(l, HGTConv)]
    for m in hgt_meta[1:]:
        if m != hgt_meta[0]:
            raise UnsupportedLayerError("HGTConv layers with different metadata are not supported")
    if metadata is None and hgt_meta:
        metadata = hgt_meta[0]
    if metadata is not None and hgt_meta:
        given = {"node_types": list(metadata["node_types"]),
                 "edge_types": [list(e) for e in metadata["edge_types"]]}
        if given != hgt_meta[0]:
            raise ValueError("metadata differs from the HGTConv layers' node_types/edge_types: "
                             f"{given} vs {hgt_meta[0]}")

    state = module.state_dict()
    tensors: Dict[str, torch.Tensor] = {}
    configs: List[Dict[str, Any]] = []
    for (prefix, _layer, cfg), act in zip(layers, activations):
        # Keep `type` first and `prefix` second for readability of the JSON.
        cfg = {"type": cfg["type"], "prefix": prefix,
               **{k: v for k, v in cfg.items() if k != "type"}, "activation": act}
        configs.append(cfg)
        dot = prefix + "." if prefix else ""
        names = [k for k in state if k.startswith(dot)] if prefix else list(state)
        if not names:
            raise ValueError(f"layer '{prefix}' has no weights in the state_dict")
        for k in names:
            tensors[k] = state[k]
    left_out = [k for k in state if k not in tensors]
    if left_out:
        shown = ", ".join(left_out[:6]) + (f" and {len(left_out) - 6} more" if len(left_out) > 6 else "")
        warnings.warn(
            f"export_pyg_model: {len(left_out)} state_dict entries belong to no RGCNConv, RGATConv or "
            f"HGTConv and are not exported ({shown}); rgnn runs only the exported layers, one after "
            "the other, so whatever the module computes around them is not part of the model file",
            stacklevel=2)
    write_model(path, model_name, configs, tensors, metadata)
    out = {"format": "rgnn/1", "model": model_name, "layers": configs}
    if metadata is not None:
        out["metadata"] = metadata
    return out


def export_pyg_graph(data: Any, path: str, index_dtype: torch.dtype = torch.int64) -> None:
    """Write a PyG `Data` or `HeteroData` to a `*.graph.safetensors` file.

    `Data`: `edge_index`, `edge_type` and `x` (or `num_nodes` when `x` is absent; the featureless
    RGCN convention then needs `in_channels == num_nodes`); `node_type` if present.
    `HeteroData`: `x.<type>`, `edge_index.<src>__<rel>__<dst>`, `num_nodes.<type>` for types
    without `x`. Node indices are local to each node type.

    `index_dtype` (torch.int64 or torch.int32) is the dtype of the stored index tensors.
    """
    from torch_geometric.data import Data, HeteroData
    if index_dtype not in (torch.int64, torch.int32):
        raise ValueError("index_dtype must be torch.int64 or torch.int32")

    if isinstance(data, HeteroData):
        x_dict = {t: data[t].x for t in data.node_types if getattr(data[t], "x", None) is not None}
        num_nodes = {t: int(data[t].num_nodes) for t in data.node_types}
        ei_dict = {et: data[et].edge_index for et in data.edge_types}
        tensors = hetero_graph_tensors(x_dict, ei_dict, num_nodes)
    elif isinstance(data, Data):
        if getattr(data, "edge_type", None) is None:
            raise ValueError("a relational Data needs `edge_type`")
        x = getattr(data, "x", None)
        tensors = relational_graph_tensors(
            data.edge_index, data.edge_type, x=x,
            num_nodes=None if x is not None else data.num_nodes,
            node_type=getattr(data, "node_type", None))
    else:
        raise TypeError(f"expected torch_geometric Data or HeteroData, got {type(data).__name__}")

    for k in list(tensors):
        if k.startswith("edge_index") or k in ("edge_type", "node_type"):
            tensors[k] = tensors[k].to(index_dtype)
    write_graph(path, tensors)
