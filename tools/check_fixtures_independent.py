#!/usr/bin/env python3
"""Independent check of the PyG / FloydNet fixtures: recompute every expected output from the
files alone (model config + weights + graph), following the semantics written in the reference
notes, without calling any PyG or FloydNet layer. A second, executable statement of the semantics
the Rust runtime must match (needs only torch and safetensors).

    python tools/check_fixtures_independent.py [--dir tests/fixtures]

Prints the max relative error per case and exits non-zero above --tol.
"""
import argparse
import glob
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

ACT = {None: lambda t: t, "relu": torch.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh,
       "elu": F.elu}


def config_of(path):
    with safe_open(path, "pt") as f:
        return json.loads(f.metadata()["rgnn.config"])


def seg_softmax(a, idx, n):
    """Softmax of a [E, K] over edges grouped by idx (max-subtracted, denominator sum + 1e-16)."""
    mx = torch.full((n, a.shape[1]), -float("inf")).scatter_reduce(
        0, idx[:, None].expand_as(a), a, "amax", include_self=True)
    e = (a - mx[idx]).exp()
    s = torch.zeros(n, a.shape[1]).index_add(0, idx, e)
    return e / (s[idx] + 1e-16)


def scatter_max(rows, idx, n):
    """Per-destination elementwise max; destinations without rows get 0 (PyG's convention)."""
    out = torch.full((n, rows.shape[1]), -float("inf")).scatter_reduce(
        0, idx[:, None].expand_as(rows), rows, "amax", include_self=True)
    out[torch.isinf(out)] = 0
    return out


def rgcn(L, W, x, ei, et, N):
    p = L["prefix"] + "." if L["prefix"] else ""
    R, fin, fo = L["num_relations"], L["in_channels"], L["out_channels"]
    w = W[p + "weight"]
    if L["num_bases"]:
        w = (W[p + "comp"] @ w.view(L["num_bases"], -1)).view(R, fin, fo)
    elif L["num_blocks"]:
        w = torch.stack([torch.block_diag(*w[r]) for r in range(R)])
    X = torch.eye(N) if x is None else x          # featureless: one-hot rows
    out = torch.zeros(N, fo)
    for r in range(R):
        m = et == r
        s, d = ei[0, m], ei[1, m]
        if L["aggr"] == "max" and x is None:
            out += scatter_max(w[r][s], d, N)     # featureless max: over rows W_r[j] (after transform)
            continue
        if L["aggr"] == "max":
            agg = scatter_max(X[s], d, N)         # features: max over x_j, THEN @ W_r
        else:
            agg = torch.zeros(N, fin).index_add(0, d, X[s])
            if L["aggr"] == "mean":               # mean within the relation
                agg = agg / torch.bincount(d, minlength=N).clamp(min=1)[:, None].float()
        out += agg @ w[r]
    if L["root_weight"]:
        out += X @ W[p + "root"]
    if L["bias"]:
        out += W[p + "bias"]
    return out


def rgat(L, W, x, ei, et, N):
    p = L["prefix"] + "." if L["prefix"] else ""
    R, fin, C, H, Dd = L["num_relations"], L["in_channels"], L["out_channels"], L["heads"], L["dim"]
    if L["num_bases"]:
        w = (W[p + "att"] @ W[p + "basis"].view(L["num_bases"], -1)).view(R, fin, H * C)
    elif L["num_blocks"]:
        w = torch.stack([torch.block_diag(*W[p + "weight"][r]) for r in range(R)])
    else:
        w = W[p + "weight"]
    s, d = ei
    xi = torch.einsum("ef,efo->eo", x[d], w[et])  # the target is transformed by the edge's W_r too
    xj = torch.einsum("ef,efo->eo", x[s], w[et])
    qi, kj = xi @ W[p + "q"], xj @ W[p + "k"]
    if L["attention_mode"].startswith("additive"):
        a = F.leaky_relu(qi + kj, L["negative_slope"])
    else:
        a = qi * kj
    if L["attention_mechanism"] == "across-relation":
        al = seg_softmax(a, d, N)
    else:
        al = seg_softmax(a, d * R + et, N * R)
    msg = al.view(-1, H, Dd, 1) * xj.view(-1, H, 1, C)
    agg = torch.zeros(N, H, Dd, C).index_add(0, d, msg)
    out = agg.reshape(N, -1) if L["concat"] else agg.mean(1).reshape(N, -1)
    return out + W[p + "bias"] if L["bias"] else out


def hgt(L, W, meta, xd, eid):
    p = L["prefix"] + "." if L["prefix"] else ""
    Fo, H = L["out_channels"], L["heads"]
    Dh, ET = Fo // H, meta["edge_types"]
    nE = len(ET)
    K, Q, V = {}, {}, {}
    for t, x in xd.items():
        y = x @ W[p + f"kqv_lin.lins.{t}.weight"].T + W[p + f"kqv_lin.lins.{t}.bias"]
        K[t], Q[t], V[t] = [z.reshape(-1, H, Dh) for z in y.split(Fo, 1)]
    dsts = {e[2] for e in ET}
    logits, vals, idx = ({t: [] for t in dsts} for _ in range(3))
    for e_i, (s, r, d) in enumerate(ET):          # metadata order fixes the relation index
        key = f"{s}__{r}__{d}"
        if key not in eid or s not in xd:
            continue
        ei = eid[key]
        kr = torch.stack([W[p + "k_rel.weight"][h * nE + e_i] for h in range(H)])
        vr = torch.stack([W[p + "v_rel.weight"][h * nE + e_i] for h in range(H)])
        k2 = torch.einsum("nhd,hde->nhe", K[s][ei[0]], kr)
        v2 = torch.einsum("nhd,hde->nhe", V[s][ei[0]], vr)
        logits[d].append((Q[d][ei[1]] * k2).sum(-1) * W[p + f"p_rel.{key}"][0] / math.sqrt(Dh))
        vals[d].append(v2)
        idx[d].append(ei[1])
    out = {}
    for t in meta["node_types"]:
        if t not in dsts or t not in xd:
            continue                               # non-destination types leave the output
        n = xd[t].shape[0]
        ix = torch.cat(idx[t])
        al = seg_softmax(torch.cat(logits[t]), ix, n)
        agg = torch.zeros(n, H, Dh).index_add(0, ix, al[..., None] * torch.cat(vals[t])).reshape(n, Fo)
        a = F.gelu(agg) @ W[p + f"out_lin.lins.{t}.weight"].T + W[p + f"out_lin.lins.{t}.bias"]
        if Fo == xd[t].shape[1]:
            g = torch.sigmoid(W[p + f"skip.{t}"])
            a = g * a + (1 - g) * xd[t]
        out[t] = a
    return out


def floyd_norm(W, p, kind, x):
    if kind == "layernorm":
        return F.layer_norm(x, (x.shape[-1],), W[p + ".weight"], W[p + ".bias"], 1e-5)
    if kind == "rmsnorm":
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-5) * W[p + ".weight"]
    if kind == "affine":
        return x * W[p + ".weight"] + W[p + ".bias"]
    return x


def floydnet(cfg, W, G):
    x = G["pair"].float()
    B, N, _, C = x.shape
    m = G.get("node_mask", torch.ones(B, N, dtype=torch.uint8)).bool()
    valid = m[:, :, None] & m[:, None, :]          # [b, i, j]
    pair_mask = valid.float()[..., None]
    for L in cfg["layers"]:
        p, b, H = L["prefix"], L["bias"], L["num_heads"]
        d = C // H

        def lin(name, z):
            y = z @ W[f"{p}.{name}.weight"].T
            return y + W[f"{p}.{name}.bias"] if b else y

        def pivot_attention(h):
            q, k1, k2, v1, v2 = [t.view(B, N, N, H, d) for t in lin("c_qkv", h).chunk(5, -1)]
            S = (torch.einsum("bikhd,bijhd->bhikj", q, k1)
                 + torch.einsum("bikhd,bjkhd->bhikj", q, k2)) / math.sqrt(2 * d)
            S = S.masked_fill(~valid[:, None, :, None, :], -1e9)   # pivot j masked if i or j padded
            P = S.softmax(-1)
            y = (torch.einsum("bhikj,bijhd->bikhd", P, v1) + torch.einsum("bhikj,bjkhd->bikhd", P, v2))
            return lin("c_proj", y.reshape(B, N, N, C))

        act = ACT[L["activation_fn"]]
        xT = lin("c_mix", x.transpose(1, 2)) if L["enable_symmetric_mix"] else 0
        ffn = lambda z: lin("ffn.2", act(lin("ffn.0", z)))                      # noqa: E731
        norm = lambda i, z: floyd_norm(W, f"{p}.norm{i}", L["norm_fn"], z)     # noqa: E731
        if L["norm_position"] == "pre":
            x = x + pivot_attention(norm(1, x + xT))
            if L["enable_ffn"]:
                x = x + ffn(norm(2, x)) * W[f"{p}.ffn_scale"]
        else:
            x = norm(1, x + pivot_attention(x + xT))
            if L["enable_ffn"]:
                x = norm(2, x + ffn(x)) * W[f"{p}.ffn_scale"]
        x = ACT[L["activation"]](x * pair_mask)
    return x


def check_case(d, name):
    mp = f"{d}/{name}.model.safetensors"
    cfg = config_of(mp)
    W = {k: v.float() for k, v in load_file(mp).items()}
    G = load_file(f"{d}/{name}.graph.safetensors")
    E = load_file(f"{d}/{name}.expected.safetensors")
    kind = cfg["layers"][0]["type"]
    if kind == "PivotalAttentionBlock":
        got = {"out": floydnet(cfg, W, G)}
    elif kind == "HGTConv":
        xd = {k[2:]: v.float() for k, v in G.items() if k.startswith("x.")}
        eid = {k[len("edge_index."):]: v.long() for k, v in G.items() if k.startswith("edge_index.")}
        for L in cfg["layers"]:
            xd = {t: ACT[L["activation"]](v) for t, v in hgt(L, W, cfg["metadata"], xd, eid).items()}
        got = {f"out.{t}": v for t, v in xd.items()}
    else:
        ei, et = G["edge_index"].long(), G["edge_type"].long()
        x = G["x"].float() if "x" in G else None
        N = x.shape[0] if x is not None else int(G["num_nodes"])
        for L in cfg["layers"]:
            x = ACT[L["activation"]]((rgcn if L["type"] == "RGCNConv" else rgat)(L, W, x, ei, et, N))
        got = {"out": x}
    if set(got) != set(E):
        raise AssertionError(f"{name}: output names {sorted(got)} != expected {sorted(E)}")
    return max(float((got[k] - E[k]).abs().max() / (1 + E[k].abs().max())) for k in E)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--dir", default=os.path.join(here, "tests", "fixtures"))
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    with open(os.path.join(args.dir, "manifest.json")) as f:
        cases = [e["name"] for e in json.load(f) if e["framework"] in ("pyg", "floydnet")]
    bad = 0
    for name in cases:
        err = check_case(args.dir, name)
        bad += err > args.tol
        print(f"{name:34s} max rel. error {err:.2e}{'  FAIL' if err > args.tol else ''}")
    print(f"{len(cases) - bad} passed, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
