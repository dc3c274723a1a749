"""File writers shared by every exporter: model, graph and expected-output files.

The layouts are the contract in the rgnn README ("File formats"); keep them in sync.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from safetensors.torch import save_file

FORMAT = "rgnn/1"


def _contiguous(tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def write_model(path: str, model_name: str, layers: List[Dict[str, Any]],
                tensors: Dict[str, torch.Tensor],
                metadata: Optional[Dict[str, Any]] = None) -> None:
    """Write `*.model.safetensors`: weights under their framework names + `rgnn.config` JSON.

    `layers` are config dicts (`type`, `prefix`, constructor arguments, `activation`).
    `metadata` is `{"node_types": [...], "edge_types": [[src, rel, dst], ...]}` (required for HGT).
    """
    config: Dict[str, Any] = {"format": FORMAT, "model": model_name, "layers": layers}
    if metadata is not None:
        config["metadata"] = {
            "node_types": list(metadata["node_types"]),
            "edge_types": [list(et) for et in metadata["edge_types"]],
        }
    save_file(_contiguous(tensors), path, metadata={"rgnn.config": json.dumps(config)})


def write_graph(path: str, tensors: Dict[str, torch.Tensor]) -> None:
    """Write `*.graph.safetensors` from already-named tensors (see the README for names)."""
    save_file(_contiguous(tensors), path)


def relational_graph_tensors(edge_index: torch.Tensor, edge_type: torch.Tensor,
                             x: Optional[torch.Tensor] = None,
                             num_nodes: Optional[int] = None,
                             node_type: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """Tensors of a relational graph: `edge_index [2,E]`, `edge_type [E]`, `x [N,F]` or `num_nodes`."""
    out = {"edge_index": edge_index.to(torch.int64), "edge_type": edge_type.to(torch.int64)}
    if x is not None:
        out["x"] = x.to(torch.float32) if x.dtype == torch.float64 else x
    else:
        if num_nodes is None:
            raise ValueError("a featureless graph needs num_nodes")
        out["num_nodes"] = torch.tensor(int(num_nodes), dtype=torch.int64)
    if node_type is not None:
        out["node_type"] = node_type.to(torch.int64)
    return out


def hetero_graph_tensors(x_dict: Dict[str, torch.Tensor],
                         edge_index_dict: Dict[Tuple[str, str, str], torch.Tensor],
                         num_nodes_dict: Optional[Dict[str, int]] = None) -> Dict[str, torch.Tensor]:
    """Tensors of a heterogeneous graph: `x.<type>`, `edge_index.<src>__<rel>__<dst>`, `num_nodes.<type>`."""
    out: Dict[str, torch.Tensor] = {}
    for t, x in x_dict.items():
        out[f"x.{t}"] = x.to(torch.float32) if x.dtype == torch.float64 else x
    for (s, r, d), ei in edge_index_dict.items():
        out[f"edge_index.{s}__{r}__{d}"] = ei.to(torch.int64)
    for t, n in (num_nodes_dict or {}).items():
        if t not in x_dict:
            out[f"num_nodes.{t}"] = torch.tensor(int(n), dtype=torch.int64)
    return out


def pair_graph_tensors(pair: torch.Tensor, node_mask: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """Tensors of a pair graph (FloydNet): `pair [B,N,N,C]` and optional `node_mask [B,N]` (U8)."""
    out = {"pair": pair.to(torch.float32)}
    if node_mask is not None:
        out["node_mask"] = node_mask.to(torch.uint8)
    return out


def write_expected(path: str, out: Any) -> None:
    """Write a reference output: a tensor as `out`, a dict of tensors as `out.<node_type>`."""
    if isinstance(out, dict):
        tensors = {f"out.{k}": v.to(torch.float32) for k, v in out.items()}
    else:
        tensors = {"out": out.to(torch.float32)}
    save_file(_contiguous(tensors), path)
