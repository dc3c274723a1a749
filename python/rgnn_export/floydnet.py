"""Exporter for stacks of FloydNet `PivotalAttentionBlock`s (the official `floydnet` package).

A FloydNet model in rgnn is a stack of blocks run in order on a pair state `x [B, N, N, C]`; after
every block the state is multiplied by the pair mask (`node_mask[b, i] * node_mask[b, k]`), and the
attention masks pivot j for pair (i, k) when node i or node j is padding.

Every constructor argument that changes inference is read back from the block:
`norm_fn` from the type of `norm1`, `activation_fn` from the FFN's activation module, `bias` from
`c_qkv.bias`, `ffn_expansion_ratio` from the FFN width. Callers may pass them explicitly instead
(they are then checked against the block).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .common import pair_graph_tensors, write_graph, write_model


def _block_class():
    from floydnet import PivotalAttentionBlock
    return PivotalAttentionBlock


def _norm_name(norm: nn.Module) -> str:
    from floydnet.transformer import Affine
    if isinstance(norm, nn.LayerNorm):
        if norm.eps != 1e-5 or not norm.elementwise_affine or norm.bias is None:
            raise ValueError("only LayerNorm(eps=1e-5, elementwise_affine=True, bias=True) is supported")
        return "layernorm"
    if isinstance(norm, nn.RMSNorm):
        # floydnet's create_norm passes eps=1e-5 explicitly (torch's own default would differ).
        if norm.eps != 1e-5 or not norm.elementwise_affine:
            raise ValueError("only RMSNorm(eps=1e-5, elementwise_affine=True) is supported")
        return "rmsnorm"
    if isinstance(norm, Affine):
        return "affine"
    if isinstance(norm, nn.Identity):
        return "none"
    raise ValueError(f"unsupported norm module {type(norm).__name__}")


def _activation_name(act: nn.Module) -> str:
    if isinstance(act, nn.ReLU):
        return "relu"
    if isinstance(act, nn.GELU):
        if act.approximate != "none":
            raise ValueError("only the exact (erf) GELU is supported")
        return "gelu"
    if isinstance(act, nn.SiLU):
        return "silu"
    raise ValueError(f"unsupported activation module {type(act).__name__}")


_NORM_ALIASES = {"ln": "layernorm", "layernorm": "layernorm", "rms": "rmsnorm",
                 "rmsnorm": "rmsnorm", "affine": "affine", "none": "none", "identity": "none"}


def block_config(name: str, block: nn.Module, norm_fn: Optional[str] = None,
                 activation_fn: Optional[str] = None) -> Dict[str, Any]:
    """Layer config of one PivotalAttentionBlock (without `prefix`/`activation`)."""
    C = int(block.embed_dim)
    read_norm = _norm_name(block.norm1)
    if block.enable_ffn:
        read_act = _activation_name(block.ffn[1])
        ratio_num = block.ffn[0].out_features
        if ratio_num % C:
            raise ValueError(f"block '{name}': FFN width {ratio_num} is not a multiple of {C}")
        ratio = ratio_num // C
    else:
        # Without an FFN the activation is never created; the constructor argument is moot.
        read_act = activation_fn.lower() if activation_fn else "relu"
        ratio = 4
    if norm_fn is not None and _NORM_ALIASES.get(norm_fn.lower()) != read_norm:
        raise ValueError(f"block '{name}': norm_fn={norm_fn!r} but the block uses {read_norm}")
    if activation_fn is not None and block.enable_ffn and activation_fn.lower() != read_act:
        raise ValueError(f"block '{name}': activation_fn={activation_fn!r} but the block uses {read_act}")
    if getattr(block, "dropout", 0.0) and block.training:
        raise ValueError(f"block '{name}': put the model in eval() mode before export")
    return {
        "type": "PivotalAttentionBlock",
        "embed_dim": C,
        "num_heads": int(block.num_heads),
        "bias": block.c_qkv.bias is not None,
        "ffn_expansion_ratio": int(ratio),
        "norm_position": str(block.norm_position),
        "activation_fn": read_act,
        "norm_fn": read_norm,
        "enable_symmetric_mix": bool(block.enable_symmetric_mix),
        "enable_ffn": bool(block.enable_ffn),
    }


def export_floydnet(blocks_module: nn.Module, path: str,
                    norm_fn: Optional[Union[str, Sequence[str]]] = None,
                    activation_fn: Optional[Union[str, Sequence[str]]] = None,
                    activations: Optional[Sequence[Optional[str]]] = None,
                    model_name: str = "floydnet") -> Dict[str, Any]:
    """Write every `PivotalAttentionBlock` inside `blocks_module` (in module order).

    `blocks_module` is e.g. a model with an `nn.ModuleList` named `blocks` (prefixes `blocks.0`, ...),
    the ModuleList itself (prefixes `0`, `1`, ...), or a single block (prefix ""). `norm_fn` and
    `activation_fn` are optional checks (one string for all blocks, or one per block); `activations`
    are rgnn's extra per-layer activations applied after a block (default none).
    """
    Block = _block_class()
    blocks: List[Tuple[str, nn.Module]] = [(n, m) for n, m in blocks_module.named_modules()
                                           if isinstance(m, Block)]
    if not blocks:
        raise ValueError("no PivotalAttentionBlock found in the module")

    def per_block(v, what):
        if v is None or isinstance(v, str):
            return [v] * len(blocks)
        if len(v) != len(blocks):
            raise ValueError(f"{len(v)} values of {what} for {len(blocks)} blocks")
        return list(v)

    norms = per_block(norm_fn, "norm_fn")
    acts = per_block(activation_fn, "activation_fn")
    post = activations if activations is not None else [None] * len(blocks)
    if len(post) != len(blocks):
        raise ValueError(f"{len(post)} activations for {len(blocks)} blocks")

    state = blocks_module.state_dict()
    tensors: Dict[str, torch.Tensor] = {}
    configs: List[Dict[str, Any]] = []
    for (prefix, block), nf, af, act in zip(blocks, norms, acts, post):
        cfg = block_config(prefix, block, nf, af)
        configs.append({"type": cfg.pop("type"), "prefix": prefix, **cfg, "activation": act})
        dot = prefix + "." if prefix else ""
        for k, v in state.items():
            if not prefix or k.startswith(dot):
                tensors[k] = v
    write_model(path, model_name, configs, tensors)
    return {"format": "rgnn/1", "model": model_name, "layers": configs}


def export_pair_graph(pair: torch.Tensor, node_mask: Optional[torch.Tensor], path: str) -> None:
    """Write a pair graph: `pair [B, N, N, C]` (F32) and, if given, `node_mask [B, N]` (U8)."""
    if pair.dim() != 4 or pair.shape[1] != pair.shape[2]:
        raise ValueError(f"pair must be [B, N, N, C], got {tuple(pair.shape)}")
    if node_mask is not None and tuple(node_mask.shape) != tuple(pair.shape[:2]):
        raise ValueError(f"node_mask must be [B, N] = {tuple(pair.shape[:2])}, got {tuple(node_mask.shape)}")
    write_graph(path, pair_graph_tensors(pair, node_mask))


def floydnet_masks(node_mask: Optional[torch.Tensor], B: int, N: int,
                   device: Optional[torch.device] = None) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """(attn_mask [B,1,N,N,N] bool, True = masked; pair_mask [B,N,N,1] float) for a node mask.

    attn_mask[b, 0, i, k, j] is True when node i or pivot j is padding, as the reference model
    passes it to `pivotal_attention` (which fills masked scores with -1e9).
    """
    if node_mask is None:
        return None, None
    m = node_mask.to(torch.bool).to(device)
    valid_ij = m[:, :, None] & m[:, None, :]                  # [B, i, j]
    attn_mask = ~valid_ij[:, None, :, None, :].expand(B, 1, N, N, N)   # [B,1,i,k,j]
    pair_mask = valid_ij[..., None].to(torch.float32)          # [B, i, k, 1]
    return attn_mask, pair_mask


def floydnet_stack_forward(blocks: Sequence[nn.Module], x: torch.Tensor,
                           node_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Reference forward of a block stack: `x = block(x, attn_mask) * pair_mask` per block."""
    B, N = x.shape[0], x.shape[1]
    attn_mask, pair_mask = floydnet_masks(node_mask, B, N, x.device)
    for blk in blocks:
        x = blk(x, attn_mask)
        if pair_mask is not None:
            x = x * pair_mask
    return x
