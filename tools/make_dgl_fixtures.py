#!/usr/bin/env python3
"""Generate the DGL `RelGraphConv` reference fixtures (`tests/fixtures/dgl_*`).

Needs torch 2.1.2 + dgl 2.1.0 (e.g. a virtualenv at ~/venvs/dgl):

    ~/venvs/dgl/bin/python tools/make_dgl_fixtures.py [--out tests/fixtures]

For every case it writes `<name>.model.safetensors`, `<name>.graph.safetensors` and
`<name>.expected.safetensors` (DGL's output, float32, eval mode), plus `manifest_dgl.json`.
Everything is seeded, so a rerun reproduces the files. Each DGL output is also checked against an
independent float64 evaluation of the documented semantics (docs: references.md, DGL section).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional

os.environ.setdefault("DGLBACKEND", "pytorch")

import numpy as np
import torch
import dgl
from dgl.nn.pytorch import RelGraphConv
from safetensors import safe_open

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python"))

from rgnn_export import common  # noqa: E402
from rgnn_export.dgl import export_dgl_graph, export_dgl_model, right_norm  # noqa: E402

ACT_FN = {"relu": torch.relu, None: None}


# ----------------------------------------------------------------------------------------------
# Graphs
# ----------------------------------------------------------------------------------------------

def make_graph(seed: int, num_nodes: int, num_feat: int, num_rels: int, num_edges: int,
               empty_rel: int, num_isolated: int) -> Dict[str, torch.Tensor]:
    """A random relational graph with the awkward cases built in:

    - relation `empty_rel` has no edges; the others have skewed (Zipf-like) frequencies;
    - `num_isolated` nodes touch no edge at all (they are still in `x`);
    - duplicate edges (same source, destination and relation) and self loops;
    - edges in random order (not sorted by relation or destination).
    """
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(num_nodes, generator=g)
    connected = perm[num_isolated:]  # isolated nodes are perm[:num_isolated]

    # Skewed relation frequencies: p_r ~ 1 / (rank + 1)^1.5, with one relation never drawn.
    rels = [r for r in range(num_rels) if r != empty_rel]
    weights = torch.tensor([1.0 / (k + 1) ** 1.5 for k in range(len(rels))])
    rel_of_draw = torch.tensor(rels)[torch.multinomial(weights, num_edges, True, generator=g)]

    # Destinations skewed too: a few hubs receive many edges.
    dst_w = torch.rand(connected.numel(), generator=g) ** 4 + 0.02
    dst = connected[torch.multinomial(dst_w, num_edges, True, generator=g)]
    src = connected[torch.randint(connected.numel(), (num_edges,), generator=g)]

    # Duplicates: repeat ~5% of edges (same relation); self loops: ~3% of edges.
    n_dup = max(1, num_edges // 20)
    dup = torch.randint(num_edges, (n_dup,), generator=g)
    n_loop = max(1, num_edges // 33)
    loop_nodes = connected[torch.randint(connected.numel(), (n_loop,), generator=g)]
    loop_rel = torch.tensor(rels)[torch.multinomial(weights, n_loop, True, generator=g)]

    src = torch.cat([src, src[dup], loop_nodes])
    dst = torch.cat([dst, dst[dup], loop_nodes])
    etype = torch.cat([rel_of_draw, rel_of_draw[dup], loop_rel])
    order = torch.randperm(src.numel(), generator=g)
    src, dst, etype = src[order], dst[order], etype[order]

    x = torch.randn(num_nodes, num_feat, generator=g)
    return {"src": src, "dst": dst, "etype": etype, "x": x, "num_nodes": num_nodes,
            "num_rels": num_rels}


def graph_stats(gr: Dict[str, Any]) -> Dict[str, Any]:
    """Counts that document how each fixture graph exercises the edge cases."""
    src, dst, et, n = gr["src"], gr["dst"], gr["etype"], gr["num_nodes"]
    touched = torch.zeros(n, dtype=torch.bool)
    touched[src] = True
    touched[dst] = True
    triples = torch.stack([src, dst, et], 1)
    return {
        "num_nodes": n,
        "num_edges": int(src.numel()),
        "num_feat": int(gr["x"].shape[1]),
        "num_rels": gr["num_rels"],
        "edges_per_relation": torch.bincount(et, minlength=gr["num_rels"]).tolist(),
        "isolated_nodes": int((~touched).sum()),
        "nodes_without_in_edges": int(n - torch.unique(dst).numel()),
        "self_loops": int((src == dst).sum()),
        "duplicate_edges": int(src.numel() - torch.unique(triples, dim=0).shape[0]),
    }


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------

class Stack(torch.nn.Module):
    """RelGraphConv layers run in order; `outer_acts[i]` is applied after layer i's output."""

    def __init__(self, convs: List[RelGraphConv], outer_acts: List[Optional[str]]):
        super().__init__()
        self.convs = torch.nn.ModuleList(convs)
        self.outer_acts = outer_acts

    def forward(self, g, x, etypes, norms):
        h = x
        for conv, act, norm in zip(self.convs, self.outer_acts, norms):
            h = conv(g, h, etypes, norm)
            if act is not None:
                h = ACT_FN[act](h)
        return h


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Re-initialise every parameter with nonzero random values (DGL zero-inits `h_bias`, and a
    LayerNorm starts as the identity affine map), scaled so activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)

    def fill(p: torch.Tensor, scale: float, offset: float = 0.0) -> None:
        p.copy_(offset + scale * torch.randn(p.shape, generator=g))

    convs = [m for m in module.modules() if isinstance(m, RelGraphConv)]
    with torch.no_grad():
        for conv in convs:
            lin = conv.linear_r
            # A bdd block sees in_feat / num_bases inputs; the dense forms see in_feat.
            fan_in = lin.submat_in if lin.regularizer == "bdd" else lin.in_size
            fill(lin.W, fan_in ** -0.5)
            if lin.regularizer == "basis":
                fill(lin.coeff, 1.0)
            if conv.bias:
                fill(conv.h_bias, 0.5)
            if conv.self_loop:
                fill(conv.loop_weight, lin.in_size ** -0.5)
            if conv.layer_norm:
                fill(conv.layer_norm_weight.weight, 0.5, offset=1.0)
                fill(conv.layer_norm_weight.bias, 0.5)
    # Every element must be nonzero, so that a dropped term shows up in the comparison.
    n_params = sum(1 for _ in module.parameters())
    assert n_params == sum(len(list(c.parameters())) for c in convs)
    for name, p in module.named_parameters():
        assert bool((p != 0).all()), name


# ----------------------------------------------------------------------------------------------
# Independent reference (float64) of the semantics documented in references.md
# ----------------------------------------------------------------------------------------------

def relation_weights(conv: RelGraphConv) -> np.ndarray:
    """Dense per-relation weight [R, in, out], rebuilt from the stored tensors."""
    lin = conv.linear_r
    W = lin.W.detach().double().numpy()
    R, fi, fo = lin.num_types, lin.in_size, lin.out_size
    if lin.regularizer is None:
        return W
    if lin.regularizer == "basis":
        return np.einsum("rb,bio->rio", lin.coeff.detach().double().numpy(), W)
    # bdd: row r = [B, si, so] blocks; block b maps input slice b to output slice b.
    B, si, so = lin.num_bases, fi // lin.num_bases, fo // lin.num_bases
    blocks = W.reshape(R, B, si, so)
    dense = np.zeros((R, fi, fo))
    for b in range(B):
        dense[:, b * si:(b + 1) * si, b * so:(b + 1) * so] = blocks[:, b]
    return dense


def reference_layer(conv: RelGraphConv, cfg: Dict[str, Any], x: np.ndarray, src: np.ndarray,
                    dst: np.ndarray, et: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    Wr = relation_weights(conv)
    msg = np.einsum("ei,eio->eo", x[src], Wr[et])
    if cfg["norm"] == "right":
        key = dst * cfg["num_rels"] + et
        counts = np.bincount(key, minlength=n * cfg["num_rels"])
        msg = msg / counts[key][:, None]
    h = np.zeros((n, cfg["out_feat"]))
    np.add.at(h, dst, msg)
    if cfg["layer_norm"]:
        mu = h.mean(1, keepdims=True)
        var = h.var(1, keepdims=True)
        h = (h - mu) / np.sqrt(var + 1e-5)
        h = h * conv.layer_norm_weight.weight.detach().double().numpy() \
            + conv.layer_norm_weight.bias.detach().double().numpy()
    if cfg["bias"]:
        h = h + conv.h_bias.detach().double().numpy()
    if cfg["self_loop"]:
        h = h + x @ conv.loop_weight.detach().double().numpy()
    if cfg["activation"] == "relu":
        h = np.maximum(h, 0.0)
    elif cfg["activation"] is not None:
        raise NotImplementedError(cfg["activation"])
    return h


# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------

# Each case: graph parameters and layers. A layer: RelGraphConv constructor arguments, plus
# `norm` ("right"/"none": what is passed to forward) and `outer` (activation applied outside).
CASES: List[Dict[str, Any]] = [
    dict(name="dgl_plain_right",
         description="no regulariser, bias, self loop, norm right",
         graph=dict(num_nodes=400, num_feat=16, num_rels=5, num_edges=1600, empty_rel=3, num_isolated=25),
         layers=[dict(in_feat=16, out_feat=16, regularizer=None, num_bases=None, bias=True,
                      self_loop=True, layer_norm=False, norm="right")]),
    dict(name="dgl_plain_none_noloop_nobias",
         description="no regulariser, no bias, no self loop, norm none (plain sum)",
         graph=dict(num_nodes=300, num_feat=12, num_rels=4, num_edges=1200, empty_rel=0, num_isolated=20),
         layers=[dict(in_feat=12, out_feat=20, regularizer=None, num_bases=None, bias=False,
                      self_loop=False, layer_norm=False, norm="none")]),
    dict(name="dgl_basis_right_relu",
         description="basis regulariser (3 bases), relu passed to the constructor, norm right",
         graph=dict(num_nodes=500, num_feat=16, num_rels=6, num_edges=2000, empty_rel=5, num_isolated=30),
         layers=[dict(in_feat=16, out_feat=24, regularizer="basis", num_bases=3, bias=True,
                      self_loop=True, layer_norm=False, norm="right", inner="relu")]),
    dict(name="dgl_basis_layernorm",
         description="basis regulariser with num_bases defaulted (= num_rels), layer norm, bias, "
                     "self loop, norm right",
         graph=dict(num_nodes=350, num_feat=8, num_rels=4, num_edges=1400, empty_rel=2, num_isolated=15),
         layers=[dict(in_feat=8, out_feat=16, regularizer="basis", num_bases=None, bias=True,
                      self_loop=True, layer_norm=True, norm="right")]),
    dict(name="dgl_layernorm_nobias_none",
         description="no regulariser, layer norm, no bias, self loop, norm none",
         graph=dict(num_nodes=300, num_feat=16, num_rels=3, num_edges=1000, empty_rel=1, num_isolated=20),
         layers=[dict(in_feat=16, out_feat=8, regularizer=None, num_bases=None, bias=False,
                      self_loop=True, layer_norm=True, norm="none")]),
    dict(name="dgl_bdd_right",
         description="bdd regulariser (4 blocks of 4x8), bias, self loop, norm right",
         graph=dict(num_nodes=600, num_feat=16, num_rels=5, num_edges=2400, empty_rel=4, num_isolated=40),
         layers=[dict(in_feat=16, out_feat=32, regularizer="bdd", num_bases=4, bias=True,
                      self_loop=True, layer_norm=False, norm="right")]),
    dict(name="dgl_bdd_none_noloop",
         description="bdd regulariser (2 blocks of 6x4), bias, no self loop, norm none",
         graph=dict(num_nodes=250, num_feat=12, num_rels=4, num_edges=900, empty_rel=2, num_isolated=10),
         layers=[dict(in_feat=12, out_feat=8, regularizer="bdd", num_bases=2, bias=True,
                      self_loop=False, layer_norm=False, norm="none")]),
    dict(name="dgl_stack2",
         description="2 layers: bdd (4 blocks) 32->16 then relu (applied outside the layer), "
                     "then no regulariser 16->8; norm right",
         graph=dict(num_nodes=1500, num_feat=32, num_rels=7, num_edges=4500, empty_rel=6, num_isolated=60),
         layers=[dict(in_feat=32, out_feat=16, regularizer="bdd", num_bases=4, bias=True,
                      self_loop=True, layer_norm=False, norm="right", outer="relu"),
                 dict(in_feat=16, out_feat=8, regularizer=None, num_bases=None, bias=True,
                      self_loop=True, layer_norm=False, norm="right")]),
]


def build_case(case: Dict[str, Any], seed: int, out_dir: str) -> Dict[str, Any]:
    name = case["name"]
    gr = make_graph(seed, **case["graph"])
    num_rels = gr["num_rels"]

    convs = []
    for lc in case["layers"]:
        convs.append(RelGraphConv(lc["in_feat"], lc["out_feat"], num_rels,
                                  regularizer=lc["regularizer"], num_bases=lc["num_bases"],
                                  bias=lc["bias"], activation=ACT_FN[lc.get("inner")],
                                  self_loop=lc["self_loop"], layer_norm=lc["layer_norm"]))
    # A one-layer case exports the layer itself (empty prefix); the stack exports `convs.<i>`.
    model = convs[0] if len(convs) == 1 else Stack(convs, [lc.get("outer") for lc in case["layers"]])
    randomize(model, seed + 1)
    model.eval()

    g = dgl.graph((gr["src"], gr["dst"]), num_nodes=gr["num_nodes"])
    etypes, x = gr["etype"], gr["x"]
    norm_right = right_norm(gr["dst"], etypes, gr["num_nodes"], num_rels)
    norms = [norm_right if lc["norm"] == "right" else None for lc in case["layers"]]

    with torch.no_grad():
        if len(convs) == 1:
            out = model(g, x, etypes, norms[0])
        else:
            out = model(g, x, etypes, norms)
    assert out.dtype == torch.float32

    base = os.path.join(out_dir, name)
    layers = export_dgl_model(model, base + ".model.safetensors",
                              norm=[lc["norm"] for lc in case["layers"]],
                              activations=[lc.get("outer") for lc in case["layers"]],
                              model_name=name)
    export_dgl_graph(g, etypes, x, base + ".graph.safetensors")
    common.write_expected(base + ".expected.safetensors", out)

    # Independent float64 evaluation from the exported configs must agree with DGL.
    h = x.double().numpy()
    src, dst, et = gr["src"].numpy(), gr["dst"].numpy(), etypes.numpy()
    for conv, cfg in zip(convs, layers):
        h = reference_layer(conv, cfg, h, src, dst, et)
    err = float(np.abs(h - out.double().numpy()).max())
    scale = float(np.abs(h).max())
    assert err <= 1e-4 * max(1.0, scale), f"{name}: DGL vs reference max abs err {err}"

    return {"name": name, "framework": "dgl", "description": case["description"],
            "options": {"layers": layers, "graph": graph_stats(gr), "seed": seed,
                        "reference_max_abs_err_f64": err, "out_max_abs": scale}}


# ----------------------------------------------------------------------------------------------
# Read-back check
# ----------------------------------------------------------------------------------------------

def check_files(out_dir: str, manifest: List[Dict[str, Any]]) -> None:
    """Re-open every file: config JSON parses, weights match the declared layers, shapes agree."""
    rows = []
    for entry in manifest:
        name = entry["name"]
        base = os.path.join(out_dir, name)
        with safe_open(base + ".model.safetensors", "pt") as f:
            cfg = json.loads(f.metadata()["rgnn.config"])
            weights = {k: (f.get_tensor(k).dtype, tuple(f.get_tensor(k).shape)) for k in f.keys()}
        assert cfg["format"] == "rgnn/1" and cfg["layers"] == entry["options"]["layers"]
        expected_keys = {}
        for L in cfg["layers"]:
            p = (L["prefix"] + ".") if L["prefix"] else ""
            R, fi, fo, B = L["num_rels"], L["in_feat"], L["out_feat"], L["num_bases"]
            if L["regularizer"] is None:
                expected_keys[p + "linear_r.W"] = (R, fi, fo)
            elif L["regularizer"] == "basis":
                expected_keys[p + "linear_r.W"] = (B, fi, fo)
                expected_keys[p + "linear_r.coeff"] = (R, B)
            else:
                expected_keys[p + "linear_r.W"] = (R, B * (fi // B) * (fo // B))
            if L["bias"]:
                expected_keys[p + "h_bias"] = (fo,)
            if L["self_loop"]:
                expected_keys[p + "loop_weight"] = (fi, fo)
            if L["layer_norm"]:
                expected_keys[p + "layer_norm_weight.weight"] = (fo,)
                expected_keys[p + "layer_norm_weight.bias"] = (fo,)
        assert {k: s for k, (_, s) in weights.items()} == expected_keys, (name, weights)
        assert all(d == torch.float32 for d, _ in weights.values())

        with safe_open(base + ".graph.safetensors", "pt") as f:
            gt = {k: f.get_tensor(k) for k in f.keys()}
        assert set(gt) == {"edge_index", "edge_type", "x"}
        E = gt["edge_type"].numel()
        assert gt["edge_index"].dtype == torch.int64 and tuple(gt["edge_index"].shape) == (2, E)
        assert gt["edge_type"].dtype == torch.int64 and gt["x"].dtype == torch.float32
        N = gt["x"].shape[0]
        assert int(gt["edge_index"].min()) >= 0 and int(gt["edge_index"].max()) < N
        assert int(gt["edge_type"].max()) < cfg["layers"][0]["num_rels"]

        with safe_open(base + ".expected.safetensors", "pt") as f:
            out = f.get_tensor("out")
            assert list(f.keys()) == ["out"]
        assert out.dtype == torch.float32 and tuple(out.shape) == (N, cfg["layers"][-1]["out_feat"])
        assert bool(torch.isfinite(out).all())

        size = sum(os.path.getsize(base + s) for s in
                   (".model.safetensors", ".graph.safetensors", ".expected.safetensors"))
        L0 = cfg["layers"]
        rows.append((name, len(L0), "/".join(str(l["regularizer"]) for l in L0),
                     "/".join(l["norm"] for l in L0), N, E, tuple(gt["x"].shape)[1],
                     tuple(out.shape)[1], size, entry["options"]["reference_max_abs_err_f64"]))

    hdr = ("name", "layers", "regularizer", "norm", "N", "E", "F_in", "F_out", "bytes", "err_vs_f64")
    table = [hdr] + [tuple(str(c) if not isinstance(c, float) else f"{c:.1e}" for c in r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(hdr))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    total = sum(r[8] for r in rows) + os.path.getsize(os.path.join(out_dir, "manifest_dgl.json"))
    print(f"total {total} bytes ({total / 2**20:.2f} MiB) in {len(rows)} cases + manifest_dgl.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    torch.manual_seed(0)  # DGL's constructors draw initial values; they are all overwritten
    torch.set_num_threads(1)  # deterministic float sums
    manifest = [build_case(case, 1000 + 10 * i, args.out) for i, case in enumerate(CASES)]
    with open(os.path.join(args.out, "manifest_dgl.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    check_files(args.out, manifest)


if __name__ == "__main__":
    main()
