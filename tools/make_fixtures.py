#!/usr/bin/env python3
"""Generate the PyG and FloydNet reference fixtures in tests/fixtures/.

For every case it writes `<name>.model.safetensors`, `<name>.graph.safetensors` and
`<name>.expected.safetensors` (the reference output computed with the framework itself), and
updates `tests/fixtures/manifest.json` (entries of other frameworks are kept).

Needs torch, torch_geometric (2.8), floydnet (1.1.0), safetensors, numpy; no pyg-lib / torch-scatter /
torch-sparse (their fused paths change semantics, see docs). Run from anywhere:

    python tools/make_fixtures.py                 # all cases
    python tools/make_fixtures.py --only rgat     # cases whose name contains "rgat"

The knowledge-graph cases read the triples shipped inside the pykeen wheel (UMLS, Kinships):
pass `--pykeen-wheel PATH`, set RGNN_PYKEEN_WHEEL, or let the script `pip download` it.

Everything is deterministic: each case seeds its own generator, and references are computed in
float32 on the CPU with `model.eval()` under `torch.no_grad()`.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python"))

import torch_geometric  # noqa: E402
import torch_geometric.backend  # noqa: E402
from torch_geometric.data import Data, HeteroData  # noqa: E402
from torch_geometric.nn import HGTConv, RGATConv, RGCNConv  # noqa: E402
from floydnet import PivotalAttentionBlock  # noqa: E402

from rgnn_export import write_expected  # noqa: E402
from rgnn_export.floydnet import export_floydnet, export_pair_graph, floydnet_stack_forward  # noqa: E402
from rgnn_export.pyg import export_pyg_graph, export_pyg_model  # noqa: E402
from rgnn_export.reader import read_config, summarize  # noqa: E402

# The reference RGCN mean is the per-relation mean; pyg-lib's segment_matmul path (not installed
# anyway) would average over all in-edges. Force the per-relation loop.
torch_geometric.backend.use_segment_matmul = False

PYKEEN_VERSION = "1.11.1"

ACT: Dict[Optional[str], Callable[[torch.Tensor], torch.Tensor]] = {
    None: lambda t: t,
    "relu": F.relu,
    "gelu": F.gelu,        # exact (erf) GELU
    "silu": F.silu,
    "tanh": torch.tanh,
    "elu": F.elu,          # alpha = 1
}


# --------------------------------------------------------------------------------------------
# Models: a stack of layers, each followed by its activation (rgnn's model semantics).
# --------------------------------------------------------------------------------------------

class RelStack(nn.Module):
    """RGCNConv / RGATConv layers in `convs`, run in order on (x, edge_index, edge_type)."""

    def __init__(self, convs: Sequence[nn.Module], activations: Sequence[Optional[str]]):
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.activations = list(activations)

    def forward(self, x, edge_index, edge_type):
        for conv, act in zip(self.convs, self.activations):
            x = ACT[act](conv(x, edge_index, edge_type))
        return x


class HGTStack(nn.Module):
    """HGTConv layers in `convs`; PyG drops node types that are no edge type's destination."""

    def __init__(self, convs: Sequence[nn.Module], activations: Sequence[Optional[str]]):
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.activations = list(activations)

    def forward(self, x_dict, edge_index_dict):
        for conv, act in zip(self.convs, self.activations):
            x_dict = {t: ACT[act](v) for t, v in conv(x_dict, edge_index_dict).items()}
        return x_dict


class FloydStack(nn.Module):
    """PivotalAttentionBlocks in `blocks` (prefixes blocks.0, blocks.1, ...)."""

    def __init__(self, blocks: Sequence[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x, node_mask):
        return floydnet_stack_forward(self.blocks, x, node_mask)


# --------------------------------------------------------------------------------------------
# Parameter initialisation: framework inits leave biases at 0 and HGT's skip / p_rel at 1, and
# FloydNet zeros its output projections. Every parameter is re-drawn so every option is visible.
# --------------------------------------------------------------------------------------------

def randomize_pyg(module: nn.Module, gen: torch.Generator, qk_scale: float = 2.0) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias" or name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            elif "skip" in name.split("."):
                p.copy_(torch.randn(p.shape, generator=gen) * 1.5)       # sigmoid well away from 0.5
            elif "p_rel" in name.split("."):
                p.copy_(1.0 + torch.randn(p.shape, generator=gen) * 0.5)
            elif leaf in ("q", "k"):
                # RGAT attention projections: glorot is too flat to make the softmax interesting.
                p.copy_(torch.randn(p.shape, generator=gen) * qk_scale / p.shape[0] ** 0.5)
            elif leaf in ("w", "l1", "b1", "b2"):
                p.copy_(torch.randn(p.shape, generator=gen))             # unused when mod=None
            elif leaf == "l2":
                pass                                                     # see set_rgat_l2_garbage
            else:
                # Weights: normal with std 1/sqrt(fan_in) (fan_in = the contracted dimension).
                if p.dim() >= 2:
                    fan_in = p.shape[-1] if name.endswith(".weight") and "lins" in name else p.shape[-2]
                    if leaf in ("comp", "att"):
                        fan_in = p.shape[-1]
                    p.copy_(torch.randn(p.shape, generator=gen) / max(fan_in, 1) ** 0.5)
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


def set_rgat_l2_garbage(conv: RGATConv, gen: torch.Generator) -> None:
    """PyG never initialises RGATConv.l2 (its reset calls torch.full without assigning it), so real
    checkpoints hold arbitrary memory there. Fill it reproducibly with garbage including NaN, inf and
    huge values; the runtime must accept the tensor and ignore it when mod is None."""
    with torch.no_grad():
        g = torch.randn(conv.l2.shape, generator=gen) * 1e30
        flat = g.view(-1)
        flat[0] = float("nan")
        if flat.numel() > 1:
            flat[1] = float("inf")
        if flat.numel() > 2:
            flat[2] = float("-inf")
        conv.l2.copy_(g)


def randomize_floydnet(module: nn.Module, gen: torch.Generator, std: float = 0.2) -> None:
    """Norm weights ~ 1 +- 0.2, ffn_scale ~ 0.7, everything else normal(0, std)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if ".norm" in name and name.endswith(".weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("ffn_scale"):
                p.copy_(torch.tensor(0.7) + 0.1 * torch.randn((), generator=gen))
            else:
                p.copy_(std * torch.randn(p.shape, generator=gen))


# --------------------------------------------------------------------------------------------
# Graphs
# --------------------------------------------------------------------------------------------

def zipf_probs(n: int, s: float = 1.3) -> torch.Tensor:
    w = 1.0 / torch.arange(1, n + 1, dtype=torch.float64) ** s
    return (w / w.sum()).to(torch.float32)


def synthetic_edges(gen: torch.Generator, n_src: int, n_dst: int, num_edges: int,
                    num_rel: int = 1, empty_rel: Optional[int] = None, hub_in: int = 0,
                    n_isolated: int = 0, self_loops: int = 0, dup_frac: float = 0.05,
                    ) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, Any]]:
    """Random edges with the awkward features real graphs have.

    - `n_isolated` nodes (of the destination side, and of the source side when both sides are the
      same node set) have no edge at all;
    - relation frequencies are zipf-skewed; relation `empty_rel` gets no edge;
    - node `hub` (a random non-isolated destination) receives `hub_in` extra in-edges;
    - `self_loops` edges i -> i (only when n_src == n_dst);
    - a fraction `dup_frac` of the edges is repeated verbatim (same source, target, relation).
    Returns (edge_index [2,E], edge_type [E], info).
    """
    same = n_src == n_dst
    perm = torch.randperm(n_dst, generator=gen)
    isolated = perm[:n_isolated]
    active_dst = perm[n_isolated:]
    if same:
        active_src = active_dst
    else:
        active_src = torch.arange(n_src)
    rels = [r for r in range(num_rel) if r != empty_rel]
    probs = zipf_probs(len(rels))
    rel_ids = torch.tensor(rels, dtype=torch.int64)

    def draw_rel(k):
        return rel_ids[torch.multinomial(probs, k, replacement=True, generator=gen)]

    base = max(num_edges - hub_in - self_loops, 0)
    n_dup = int(base * dup_frac)
    base -= n_dup
    src = active_src[torch.randint(len(active_src), (base,), generator=gen)]
    dst = active_dst[torch.randint(len(active_dst), (base,), generator=gen)]
    typ = draw_rel(base)
    hub = int(active_dst[0])
    if hub_in:
        src = torch.cat([src, active_src[torch.randint(len(active_src), (hub_in,), generator=gen)]])
        dst = torch.cat([dst, torch.full((hub_in,), hub)])
        typ = torch.cat([typ, draw_rel(hub_in)])
    if self_loops and same:
        loops = active_dst[torch.randint(len(active_dst), (self_loops,), generator=gen)]
        src, dst = torch.cat([src, loops]), torch.cat([dst, loops])
        typ = torch.cat([typ, draw_rel(self_loops)])
    if n_dup:
        pick = torch.randint(len(src), (n_dup,), generator=gen)
        src, dst, typ = torch.cat([src, src[pick]]), torch.cat([dst, dst[pick]]), torch.cat([typ, typ[pick]])
    order = torch.randperm(len(src), generator=gen)        # no particular edge order
    ei = torch.stack([src[order], dst[order]]).to(torch.int64)
    et = typ[order].to(torch.int64)
    info = {"hub": hub, "hub_in_degree": int((ei[1] == hub).sum()), "isolated": int(n_isolated),
            "empty_relation": empty_rel, "self_loops": int((ei[0] == ei[1]).sum()) if same else 0,
            "duplicates": int(n_dup)}
    return ei, et, info


def relational_graph(seed: int, N: int = 600, R: int = 6, E: int = 3000, F_in: Optional[int] = 16,
                     x_scale: float = 1.0) -> Tuple[Data, Dict[str, Any]]:
    gen = torch.Generator().manual_seed(seed)
    ei, et, info = synthetic_edges(gen, N, N, E, num_rel=R, empty_rel=R // 2, hub_in=300,
                                   n_isolated=N // 30, self_loops=40)
    data = Data(edge_index=ei, edge_type=et, num_nodes=N)
    if F_in is not None:
        data.x = torch.randn(N, F_in, generator=gen) * x_scale
    rel_counts = torch.bincount(et, minlength=R).tolist()
    info["relation_counts"] = rel_counts
    return data, info


# --------------------------------------------------------------------------------------------
# Knowledge graphs from the pykeen wheel
# --------------------------------------------------------------------------------------------

_PYKEEN_WHEEL: Optional[str] = None


def pykeen_wheel(path_arg: Optional[str]) -> str:
    global _PYKEEN_WHEEL
    if _PYKEEN_WHEEL:
        return _PYKEEN_WHEEL
    cand = path_arg or os.environ.get("RGNN_PYKEEN_WHEEL")
    if not cand:
        cache = os.path.join(tempfile.gettempdir(), "rgnn-pykeen")
        found = sorted(glob.glob(os.path.join(cache, f"pykeen-{PYKEEN_VERSION}-*.whl")))
        if not found:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                            f"pykeen=={PYKEEN_VERSION}", "-d", cache], check=True)
            found = sorted(glob.glob(os.path.join(cache, f"pykeen-{PYKEEN_VERSION}-*.whl")))
        cand = found[0]
    _PYKEEN_WHEEL = cand
    return cand


def load_kg(wheel: str, name: str) -> Tuple[torch.Tensor, torch.Tensor, int, int, Dict[str, Any]]:
    """Train triples of a pykeen dataset as a relational graph with inverse relations.

    Entities and relations are numbered in sorted-name order. Edge (h, r, t) gives h -> t with
    relation r, and t -> h with relation r + R (the usual R-GCN setup). Returns
    (edge_index, edge_type, num_nodes, num_relations_with_inverses, info).
    """
    with zipfile.ZipFile(wheel) as z:
        text = z.read(f"pykeen/datasets/{name}/train.txt").decode("utf-8")
    triples = [ln.split("\t") for ln in text.strip().splitlines()]
    ents = sorted({h for h, _, _ in triples} | {t for _, _, t in triples})
    rels = sorted({r for _, r, _ in triples})
    eid = {e: i for i, e in enumerate(ents)}
    rid = {r: i for i, r in enumerate(rels)}
    h = torch.tensor([eid[a] for a, _, _ in triples])
    r = torch.tensor([rid[b] for _, b, _ in triples])
    t = torch.tensor([eid[c] for _, _, c in triples])
    R = len(rels)
    ei = torch.cat([torch.stack([h, t]), torch.stack([t, h])], dim=1)
    et = torch.cat([r, r + R])
    info = {"dataset": name, "source": f"pykeen {PYKEEN_VERSION} wheel, datasets/{name}/train.txt",
            "triples": len(triples), "entities": len(ents), "relations": R,
            "max_in_degree": int(torch.bincount(ei[1]).max())}
    return ei, et, len(ents), 2 * R, info


# --------------------------------------------------------------------------------------------
# Case runners
# --------------------------------------------------------------------------------------------

class Ctx:
    def __init__(self, out_dir: str, pykeen: Optional[str]):
        self.out_dir = out_dir
        self.pykeen = pykeen
        self.manifest: List[Dict[str, Any]] = []
        self.summary: List[Dict[str, Any]] = []

    def paths(self, name):
        return tuple(os.path.join(self.out_dir, f"{name}.{kind}.safetensors")
                     for kind in ("model", "graph", "expected"))

    def record(self, name, framework, description, options, nodes, edges, out):
        self.manifest.append({"name": name, "framework": framework, "description": description,
                              "options": options})
        shapes = ({k: list(v.shape) for k, v in out.items()} if isinstance(out, dict)
                  else list(out.shape))
        absmax = (max(float(v.abs().max()) for v in out.values()) if isinstance(out, dict)
                  else float(out.abs().max()))
        self.summary.append({"name": name, "nodes": nodes, "edges": edges, "out": shapes,
                             "absmax": absmax})


def run_relational(ctx: Ctx, name: str, description: str, layers: List[Tuple[str, Dict[str, Any]]],
                   activations: List[Optional[str]], graph: Data, graph_info: Dict[str, Any],
                   seed: int, store_dtype: Optional[torch.dtype] = None,
                   index_dtype: torch.dtype = torch.int64, extra_options: Optional[Dict] = None):
    """Build a RelStack of ("RGCNConv"|"RGATConv", kwargs) layers, run it on `graph`, write files.

    `store_dtype` (F16/BF16): weights and x are stored in that dtype; the reference is computed in
    float32 on the rounded values.
    """
    torch.manual_seed(seed)                       # framework inits (overwritten below anyway)
    gen = torch.Generator().manual_seed(seed + 1)
    convs = []
    for kind, kw in layers:
        conv = {"RGCNConv": RGCNConv, "RGATConv": RGATConv}[kind](**kw)
        randomize_pyg(conv, gen)
        if kind == "RGATConv":
            set_rgat_l2_garbage(conv, gen)
        convs.append(conv)
    model = RelStack(convs, activations).eval()

    x = getattr(graph, "x", None)
    if store_dtype is not None:
        model = model.to(store_dtype)
        if x is not None:
            graph = graph.clone()
            graph.x = x.to(store_dtype)
            x = graph.x
    mpath, gpath, epath = ctx.paths(name)
    cfg = export_pyg_model(model, mpath, activations=activations, model_name=name)
    export_pyg_graph(graph, gpath, index_dtype=index_dtype)

    ref = model.float() if store_dtype is not None else model
    xin = x.float() if x is not None else None
    with torch.no_grad():
        out = ref(xin, graph.edge_index, graph.edge_type)
    if not torch.isfinite(out).all():
        raise RuntimeError(f"{name}: non-finite reference output")
    write_expected(epath, out)
    opts = {"layers": [{k: v for k, v in l.items() if k not in ("prefix",)} for l in cfg["layers"]],
            "graph": {**graph_info, "featureless": x is None,
                      "x_dtype": str(x.dtype).replace("torch.", "") if x is not None else None,
                      "index_dtype": str(index_dtype).replace("torch.", "")},
            "weights_dtype": str(store_dtype or torch.float32).replace("torch.", "")}
    opts.update(extra_options or {})
    ctx.record(name, "pyg", description, opts, int(graph.num_nodes), int(graph.edge_index.shape[1]), out)


def rgcn(in_c, out_c, R, **kw):
    return ("RGCNConv", {"in_channels": in_c, "out_channels": out_c, "num_relations": R, **kw})


def rgat(in_c, out_c, R, **kw):
    return ("RGATConv", {"in_channels": in_c, "out_channels": out_c, "num_relations": R, **kw})


def rgcn_cases(ctx: Ctx):
    R, N, Fi, Fo = 6, 400, 16, 12
    g, gi = relational_graph(100, N=N, R=R, E=2000, F_in=Fi)
    s = 1000
    for aggr in ("mean", "add", "max"):
        run_relational(ctx, f"rgcn_{aggr}", f"RGCNConv aggr={aggr}, plain weights",
                       [rgcn(Fi, Fo, R, aggr=aggr)], [None], g, gi, s); s += 1
    run_relational(ctx, "rgcn_basis", "RGCNConv basis decomposition (num_bases=3)",
                   [rgcn(Fi, Fo, R, num_bases=3)], [None], g, gi, s); s += 1
    run_relational(ctx, "rgcn_basis_max", "RGCNConv basis decomposition, aggr=max",
                   [rgcn(Fi, Fo, R, num_bases=3, aggr="max")], [None], g, gi, s); s += 1
    run_relational(ctx, "rgcn_blocks", "RGCNConv block-diagonal decomposition (num_blocks=4)",
                   [rgcn(Fi, Fo, R, num_blocks=4)], [None], g, gi, s); s += 1
    run_relational(ctx, "rgcn_blocks_add", "RGCNConv block-diagonal (num_blocks=2), aggr=add",
                   [rgcn(Fi, Fo, R, num_blocks=2, aggr="add")], [None], g, gi, s); s += 1
    run_relational(ctx, "rgcn_no_root", "RGCNConv root_weight=False",
                   [rgcn(Fi, Fo, R, root_weight=False)], [None], g, gi, s); s += 1
    run_relational(ctx, "rgcn_no_bias", "RGCNConv bias=False",
                   [rgcn(Fi, Fo, R, bias=False)], [None], g, gi, s); s += 1
    run_relational(ctx, "rgcn_stack2_relu", "2-layer RGCN (basis then plain), relu between",
                   [rgcn(Fi, 24, R, num_bases=4), rgcn(24, Fo, R)], ["relu", None], g, gi, s); s += 1
    run_relational(ctx, "rgcn_stack3_acts", "3-layer RGCN mean/add/max with gelu, tanh, elu after the layers",
                   [rgcn(Fi, 16, R), rgcn(16, 16, R, aggr="add", num_blocks=4), rgcn(16, 8, R, aggr="max")],
                   ["gelu", "tanh", "elu"], g, gi, s); s += 1

    # Featureless: in_channels == N; the weight rows are per-node embeddings.
    Nf = 240
    gf, gfi = relational_graph(101, N=Nf, R=R, E=1200, F_in=None)
    run_relational(ctx, "rgcn_featureless", "RGCNConv featureless input (no x, in_channels = N)",
                   [rgcn(Nf, Fo, R)], [None], gf, gfi, s); s += 1
    run_relational(ctx, "rgcn_featureless_basis", "RGCNConv featureless, basis decomposition (num_bases=2), then relu and a second layer",
                   [rgcn(Nf, 16, R, num_bases=2), rgcn(16, 8, R, aggr="add")], ["relu", None], gf, gfi, s); s += 1
    run_relational(ctx, "rgcn_featureless_max", "RGCNConv featureless, aggr=max",
                   [rgcn(Nf, Fo, R, aggr="max")], [None], gf, gfi, s); s += 1

    # Storage dtypes and index dtypes.
    run_relational(ctx, "rgcn_f16", "RGCNConv with x and weights stored as F16 (reference in f32 on the rounded values)",
                   [rgcn(Fi, Fo, R, num_bases=3)], [None], g, gi, s, store_dtype=torch.float16); s += 1
    run_relational(ctx, "rgcn_bf16", "RGCNConv with x and weights stored as BF16 (reference in f32 on the rounded values)",
                   [rgcn(Fi, Fo, R)], ["relu"], g, gi, s, store_dtype=torch.bfloat16); s += 1
    run_relational(ctx, "rgcn_i32_index", "RGCNConv on a graph whose edge_index / edge_type are I32",
                   [rgcn(Fi, Fo, R, num_blocks=2)], [None], g, gi, s, index_dtype=torch.int32); s += 1

    # Real knowledge graphs (pykeen's copies of the classic KG benchmarks).
    wheel = pykeen_wheel(ctx.pykeen)
    ei, et, n, r2, info = load_kg(wheel, "umls")
    data = Data(edge_index=ei, edge_type=et, num_nodes=n)
    run_relational(ctx, "rgcn_umls_featureless",
                   "UMLS (train triples + inverse relations), featureless 2-layer RGCN: basis then blocks, relu",
                   [rgcn(n, 16, r2, num_bases=8), rgcn(16, 8, r2, num_blocks=4)], ["relu", None],
                   data, info, s); s += 1
    ei, et, n, r2, info = load_kg(wheel, "kinships")
    gen = torch.Generator().manual_seed(s)
    data = Data(edge_index=ei, edge_type=et, num_nodes=n, x=torch.randn(n, 16, generator=gen))
    run_relational(ctx, "rgcn_kinships_features",
                   "Kinships (train triples + inverse relations), random 16-d features, 2-layer RGCN mean, relu",
                   [rgcn(16, 16, r2), rgcn(16, 8, r2, aggr="max")], ["relu", None], data, info, s); s += 1
    ei, et, n, r2, info = load_kg(wheel, "nations")
    gen = torch.Generator().manual_seed(s)
    data = Data(edge_index=ei, edge_type=et, num_nodes=n, x=torch.randn(n, 16, generator=gen))
    run_relational(ctx, "rgat_nations_within",
                   "Nations (train triples + inverse relations), random features, RGATConv within-relation additive attention, 2 heads, num_bases=6",
                   [rgat(16, 8, r2, heads=2, attention_mechanism="within-relation", num_bases=6)], [None],
                   data, info, s); s += 1


def rgat_cases(ctx: Ctx):
    R, N, Fi = 5, 400, 16
    g, gi = relational_graph(200, N=N, R=R, E=2000, F_in=Fi)
    add, mul = "additive-self-attention", "multiplicative-self-attention"
    across, within = "across-relation", "within-relation"
    s = 2000
    cases = [
        ("rgat_add_across_h1", "additive, across-relation, 1 head", dict(heads=1)),
        ("rgat_add_across_h3", "additive, across-relation, 3 heads, concat", dict(heads=3)),
        ("rgat_add_across_h3_mean", "additive, across-relation, 3 heads, concat=False (head mean)",
         dict(heads=3, concat=False)),
        ("rgat_add_within_h2", "additive, within-relation, 2 heads", dict(heads=2, attention_mechanism=within)),
        ("rgat_mul_across_h1", "multiplicative, across-relation, 1 head, dim=1",
         dict(heads=1, attention_mode=mul)),
        ("rgat_mul_across_h2_d3", "multiplicative, across-relation, 2 heads, dim=3, concat",
         dict(heads=2, dim=3, attention_mode=mul)),
        ("rgat_mul_within_h2_d2_mean", "multiplicative, within-relation, 2 heads, dim=2, concat=False",
         dict(heads=2, dim=2, attention_mode=mul, attention_mechanism=within, concat=False)),
        ("rgat_add_basis", "additive, across-relation, 2 heads, num_bases=3",
         dict(heads=2, num_bases=3)),
        ("rgat_mul_blocks", "multiplicative, across-relation, 2 heads, dim=2, num_blocks=4",
         dict(heads=2, dim=2, attention_mode=mul, num_blocks=4)),
        ("rgat_add_blocks_within", "additive, within-relation, 1 head, num_blocks=2",
         dict(heads=1, num_blocks=2, attention_mechanism=within)),
        ("rgat_no_bias", "additive, across-relation, 2 heads, bias=False", dict(heads=2, bias=False)),
        ("rgat_negative_slope", "additive, across-relation, 2 heads, negative_slope=0.05",
         dict(heads=2, negative_slope=0.05)),
    ]
    for name, desc, kw in cases:
        run_relational(ctx, name, f"RGATConv {desc}", [rgat(Fi, 8, R, **kw)], [None], g, gi, s)
        s += 1
    run_relational(ctx, "rgat_stack2", "2-layer RGAT: additive 2 heads concat -> relu -> multiplicative dim=2 head mean",
                   [rgat(Fi, 8, R, heads=2), rgat(16, 6, R, heads=2, dim=2, attention_mode=mul, concat=False)],
                   ["relu", None], g, gi, s)


# --------------------------------------------------------------------------------------------
# HGT
# --------------------------------------------------------------------------------------------

def hetero_graph(seed: int, types: Dict[str, Tuple[int, int]],
                 edge_specs: List[Tuple[Tuple[str, str, str], int, int]]) -> Tuple[HeteroData, Dict]:
    """types: name -> (num_nodes, feature width); edge_specs: (edge type, num edges, hub in-degree)."""
    gen = torch.Generator().manual_seed(seed)
    data = HeteroData()
    for t, (n, f) in types.items():
        data[t].x = torch.randn(n, f, generator=gen)
    info = {}
    for et, E, hub_in in edge_specs:
        s, _, d = et
        ns, nd = types[s][0], types[d][0]
        if E == 0:
            ei = torch.zeros(2, 0, dtype=torch.int64)
            einfo = {"edges": 0}
        else:
            ei, _, einfo = synthetic_edges(gen, ns, nd, E, hub_in=hub_in, n_isolated=nd // 25,
                                           self_loops=20 if s == d else 0)
            einfo.pop("empty_relation")
        data[et].edge_index = ei
        info["__".join(et)] = einfo
    return data, info


def run_hgt(ctx: Ctx, name: str, description: str, types, edge_types_meta, edge_specs,
            layer_kws: List[Dict[str, Any]], activations, seed: int):
    """HGTStack on a HeteroData. The model gets edge_index_dict in metadata order; the graph file
    is written with edge types in a different (file/alphabetical) order."""
    data, ginfo = hetero_graph(seed, types, edge_specs)
    metadata = (list(types.keys()), [tuple(e) for e in edge_types_meta])
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    convs = []
    for kw in layer_kws:
        conv = HGTConv(metadata=metadata, **kw)
        randomize_pyg(conv, gen)
        convs.append(conv)
    model = HGTStack(convs, activations).eval()

    mpath, gpath, epath = ctx.paths(name)
    cfg = export_pyg_model(model, mpath, activations=activations, model_name=name)
    export_pyg_graph(data, gpath)

    x_dict = {t: data[t].x for t in types}
    # PyG's HGTConv runs k_rel / v_rel as HeteroLinear(is_sorted=True): its per-type segments are
    # only right when edge_index_dict iterates in metadata order. Feed it in metadata order.
    ei_meta = {et: data[et].edge_index for et in metadata[1] if et in data.edge_types}
    with torch.no_grad():
        out = model(x_dict, ei_meta)
        # Document the pitfall: the same model fed in the graph's (non-metadata) order.
        ei_other = {et: data[et].edge_index for et in sorted(data.edge_types, key=lambda e: "__".join(e))}
        wrong = model(x_dict, ei_other) if list(ei_other) != list(ei_meta) else None
    for t, v in out.items():
        if not torch.isfinite(v).all():
            raise RuntimeError(f"{name}: non-finite output for {t}")
    pitfall = None
    if wrong is not None:
        pitfall = max(float((wrong[t] - out[t]).abs().max()) for t in out)
    write_expected(epath, out)
    file_order = [k for k, _, _ in summarize(gpath) if k.startswith("edge_index.")]
    opts = {"layers": [{k: v for k, v in l.items() if k != "prefix"} for l in cfg["layers"]],
            "metadata": cfg["metadata"], "graph": ginfo,
            "graph_edge_index_order": file_order,
            "output_node_types": list(out.keys()),
            "pyg_wrong_if_fed_in_file_order_maxdiff": pitfall}
    nodes = {t: int(data[t].num_nodes) for t in types}
    edges = sum(int(data[et].edge_index.shape[1]) for et in data.edge_types)
    ctx.record(name, "pyg", description, opts, nodes, edges, out)


def hgt_cases(ctx: Ctx):
    # paper: in 16 == out (gated skip used); author: in 12 (no skip); institution: never a
    # destination (absent from the output). Metadata order is deliberately not alphabetical.
    types = {"paper": (400, 16), "author": (300, 12), "institution": (60, 8)}
    meta = [("paper", "cites", "paper"), ("author", "writes", "paper"),
            ("paper", "written_by", "author"), ("institution", "employs", "author")]
    specs = [(meta[0], 1500, 300), (meta[1], 900, 40), (meta[2], 900, 0), (meta[3], 300, 0)]
    in_ch = {t: f for t, (_, f) in types.items()}
    run_hgt(ctx, "hgt_h1", "HGTConv 1 head; paper in=out (gated skip), author in!=out, institution only a source",
            types, meta, specs, [dict(in_channels=in_ch, out_channels=16, heads=1)], [None], 3000)
    run_hgt(ctx, "hgt_h4", "HGTConv 4 heads, relu after; same graph shape as hgt_h1",
            types, meta, specs, [dict(in_channels=in_ch, out_channels=16, heads=4)], ["relu"], 3001)

    # An edge type of the metadata with an empty edge_index [2, 0] in the graph file.
    meta_e = meta + [("author", "reviews", "paper")]
    specs_e = specs + [(meta_e[4], 0, 0)]
    run_hgt(ctx, "hgt_h2_empty_edge_type", "HGTConv 2 heads; one metadata edge type has 0 edges in the graph",
            types, meta_e, specs_e, [dict(in_channels=in_ch, out_channels=16, heads=2)], [None], 3002)

    # 2-layer stack: every type is a destination, so layer 2 sees them all (PyG drops
    # non-destination types from the output; a non-destination *source* type would make layer 2
    # fail in PyG). 'venue' has features but no edges: dropped after layer 1, unused in layer 2.
    types2 = {"paper": (400, 16), "author": (300, 12), "institution": (60, 8), "venue": (20, 8)}
    meta2 = [("paper", "cites", "paper"), ("author", "writes", "paper"),
             ("paper", "written_by", "author"), ("institution", "employs", "author"),
             ("author", "works_at", "institution")]
    specs2 = [(meta2[0], 1500, 300), (meta2[1], 900, 40), (meta2[2], 900, 0),
              (meta2[3], 300, 0), (meta2[4], 300, 0)]
    in1 = {t: f for t, (_, f) in types2.items()}
    in2 = {t: 16 for t in types2}
    run_hgt(ctx, "hgt_stack2", "2-layer HGT (heads 2 then 4), gelu between; 'venue' has no edges (dropped)",
            types2, meta2, specs2,
            [dict(in_channels=in1, out_channels=16, heads=2), dict(in_channels=in2, out_channels=16, heads=4)],
            ["gelu", None], 3003)


# --------------------------------------------------------------------------------------------
# FloydNet
# --------------------------------------------------------------------------------------------

def run_floydnet(ctx: Ctx, name: str, description: str, B: int, N: int, C: int, H: int,
                 block_kw: Dict[str, Any], depth: int, pad: Optional[Sequence[int]], seed: int,
                 write_mask: bool = True):
    """A FloydStack of `depth` identical-config blocks. `pad[b]` = padded nodes in graph b."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    blocks = [PivotalAttentionBlock(C, H, **block_kw) for _ in range(depth)]
    model = FloydStack(blocks)
    # Pre-norm blocks without a normalising norm (affine / none) let the state grow block after
    # block; smaller weights keep those outputs in a range where f32 tolerances stay meaningful.
    unnormalised = block_kw.get("norm_fn", "layernorm") in ("affine", "none")
    randomize_floydnet(model, gen, std=0.1 if unnormalised else 0.2)
    model.eval()
    pair = torch.randn(B, N, N, C, generator=gen)
    node_mask = None
    if write_mask:
        node_mask = torch.ones(B, N, dtype=torch.uint8)
        for b, p in enumerate(pad or []):
            if p:
                node_mask[b, N - p:] = 0
    mpath, gpath, epath = ctx.paths(name)
    cfg = export_floydnet(model, mpath, norm_fn=block_kw.get("norm_fn"),
                          activation_fn=block_kw.get("activation_fn"), model_name=name)
    export_pair_graph(pair, node_mask, gpath)
    with torch.no_grad():
        out = model(pair, node_mask)
    if not torch.isfinite(out).all():
        raise RuntimeError(f"{name}: non-finite output")
    write_expected(epath, out)
    opts = {"layers": [{k: v for k, v in l.items() if k != "prefix"} for l in cfg["layers"]],
            "B": B, "N": N, "padded_nodes": list(pad or []), "node_mask": write_mask}
    ctx.record(name, "floydnet", description, opts, B * N, B * N * N, out)


def floydnet_cases(ctx: Ctx):
    s = 4000
    cases = [
        # name, description, B, N, C, H, kwargs, depth, padding per graph
        ("floyd_pre_ln", "pre-norm, layernorm, relu, FFN, symmetric mix, no bias, 2 blocks",
         2, 8, 16, 2, dict(), 2, [0, 3]),
        ("floyd_post_ln_bias", "post-norm, layernorm, gelu, bias, 3 blocks",
         2, 10, 32, 4, dict(norm_position="post", activation_fn="gelu", bias=True), 3, [0, 3]),
        ("floyd_pre_rms_silu", "pre-norm, rmsnorm, silu, bias, 2 blocks",
         2, 9, 16, 4, dict(norm_fn="rmsnorm", activation_fn="silu", bias=True), 2, [2, 3]),
        ("floyd_post_affine", "post-norm, affine norm, relu, no symmetric mix, 2 blocks",
         2, 7, 16, 2, dict(norm_position="post", norm_fn="affine", enable_symmetric_mix=False), 2, [0, 3]),
        ("floyd_pre_none_noffn", "pre-norm, no norm, FFN disabled, 4 blocks",
         2, 12, 32, 4, dict(norm_fn="none", enable_ffn=False), 4, [0, 3]),
        ("floyd_post_rms_noffn_nomix", "post-norm, rmsnorm, no FFN, no symmetric mix, bias, 2 blocks",
         2, 6, 16, 2, dict(norm_position="post", norm_fn="rmsnorm", enable_ffn=False,
                           enable_symmetric_mix=False, bias=True), 2, [0, 3]),
        ("floyd_pre_affine_gelu_ratio2", "pre-norm, affine, gelu, ffn_expansion_ratio=2, 3 blocks",
         2, 8, 32, 2, dict(norm_fn="affine", activation_fn="gelu", ffn_expansion_ratio=2), 3, [1, 3]),
        ("floyd_nopad", "pre-norm, layernorm, all-ones node mask (no padding), 2 blocks",
         2, 8, 16, 4, dict(), 2, [0, 0]),
        ("floyd_nomask", "post-norm, layernorm, silu, no node_mask tensor in the graph file, 2 blocks",
         2, 6, 16, 2, dict(norm_position="post", activation_fn="silu"), 2, None),
    ]
    for name, desc, B, N, C, H, kw, depth, pad in cases:
        run_floydnet(ctx, name, f"PivotalAttentionBlock stack: {desc}", B, N, C, H, kw, depth, pad, s,
                     write_mask=pad is not None)
        s += 1


# --------------------------------------------------------------------------------------------
# Read-back check and summary
# --------------------------------------------------------------------------------------------

def verify(ctx: Ctx) -> None:
    """Re-open every file: the config parses, and every written tensor is there with its dtype."""
    from safetensors import safe_open
    for entry in ctx.manifest:
        mpath, gpath, epath = ctx.paths(entry["name"])
        cfg = read_config(mpath)
        assert cfg and cfg["format"] == "rgnn/1" and cfg["layers"], mpath
        with safe_open(mpath, framework="pt") as f:
            names = set(f.keys())
        for layer in cfg["layers"]:
            p = layer["prefix"] + "." if layer["prefix"] else ""
            assert any(n.startswith(p) for n in names), f"{mpath}: no tensor for {layer['prefix']}"
        g = dict((n, (d, s)) for n, d, s in summarize(gpath))
        e = dict((n, (d, s)) for n, d, s in summarize(epath))
        assert g and e, entry["name"]
        assert all(d == "F32" for d, _ in e.values()), epath
        if entry["framework"] == "pyg" and "edge_index" in g:
            want = entry["options"]["graph"]["index_dtype"]
            assert g["edge_index"][0] == {"int64": "I64", "int32": "I32"}[want], gpath


def print_summary(ctx: Ctx) -> None:
    def size(p):
        return os.path.getsize(p)
    hdr = f"{'case':34s} {'nodes':>18s} {'edges':>7s} {'output':>28s} {'|out|max':>9s} {'model':>8s} {'graph':>8s} {'expect':>8s}"
    print(hdr)
    print("-" * len(hdr))
    total = 0
    for row in ctx.summary:
        m, g, e = (size(p) for p in ctx.paths(row["name"]))
        total += m + g + e
        nodes = row["nodes"] if isinstance(row["nodes"], int) else sum(row["nodes"].values())
        out = row["out"] if isinstance(row["out"], list) else ",".join(f"{k}{v}" for k, v in row["out"].items())
        print(f"{row['name']:34s} {nodes:>18d} {row['edges']:>7d} {str(out):>28s} {row['absmax']:9.3g} "
              f"{m:8d} {g:8d} {e:8d}")
    print(f"{len(ctx.summary)} cases, {total / 1e6:.2f} MB of fixtures")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures"),
                    help="output folder (default: tests/fixtures of this repository)")
    ap.add_argument("--pykeen-wheel", default=None,
                    help=f"path to the pykeen {PYKEEN_VERSION} wheel (default: $RGNN_PYKEEN_WHEEL, "
                         "else pip download into the temp folder)")
    ap.add_argument("--only", default=None, help="only cases whose name contains this string")
    args = ap.parse_args(argv)

    torch.set_default_dtype(torch.float32)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    ctx = Ctx(args.out, args.pykeen_wheel)
    for group in (rgcn_cases, rgat_cases, hgt_cases, floydnet_cases):
        if args.only:
            # Run the group into a scratch context and keep only the matching cases' records;
            # files of non-matching cases are not written (cheap enough to just filter afterwards).
            sub = Ctx(tempfile.mkdtemp(), args.pykeen_wheel)
            group(sub)
            for entry, row in zip(sub.manifest, sub.summary):
                if args.only in entry["name"]:
                    for src, dst in zip(sub.paths(entry["name"]), ctx.paths(entry["name"])):
                        os.replace(src, dst)
                    ctx.manifest.append(entry)
                    ctx.summary.append(row)
        else:
            group(ctx)

    verify(ctx)
    # Merge into the manifest: keep other frameworks' entries (and ours not regenerated with --only).
    mpath = os.path.join(args.out, "manifest.json")
    old: List[Dict[str, Any]] = []
    if os.path.exists(mpath):
        with open(mpath) as f:
            old = json.load(f)
    mine = {"pyg", "floydnet"}
    new = {e["name"]: e for e in ctx.manifest}
    if args.only:
        # Partial run: replace regenerated entries in place, keep everything else.
        merged = [new.pop(e["name"], e) for e in old] + list(new.values())
    else:
        merged = [e for e in old if e.get("framework") not in mine] + ctx.manifest
    with open(mpath, "w") as f:
        json.dump(merged, f, indent=1, sort_keys=False)
        f.write("\n")
    print_summary(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
