#!/usr/bin/env python3
"""Train and export the model that `rgnn demo` ships: R-GCN + DistMult on Kinships.

Data: the Kinships knowledge graph (104 people, 25 kinship terms) as split by the PyKEEN package
(train/valid/test). The triples are read straight out of the PyKEEN wheel (no installation needed):

    pip download --no-deps pykeen -d pykeen_wheel
    python tools/train_demo.py --pykeen-wheel pykeen_wheel

or from a directory holding `train.txt`, `valid.txt`, `test.txt` (`--data-dir`).

Model: a featureless two-layer PyG `RGCNConv` encoder over the training graph (every training triple
(h, r, t) as an edge h -> t of relation r, plus its inverse t -> h of relation r + R), followed by a
DistMult decoder `score(h, r, t) = sum(z_h * rel_r * z_t)` over the R forward relations. Trained with
softmax cross-entropy over all candidate tails (1-N scoring) and Adam. Each epoch a random half of
the training triples is hidden from the message-passing graph and serves as the targets, so that no
edge carries its own answer. The checkpoint with the best filtered validation MRR is kept, then
evaluated on the test triples (filtered tail prediction).

Outputs (in --out, default `assets/demo/` of the repository):
    kinships.model.safetensors  the encoder, in rgnn's model format (state_dict + `rgnn.config`)
    kinships.graph.safetensors  the featureless relational training graph
    kinships.task.safetensors   decoder relations, test and known triples, reference embeddings
"""
from __future__ import annotations

import argparse
import copy
import glob
import json
import os
import random
import re
import sys
import time
import warnings
import zipfile
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# torch_geometric's import triggers torch.jit.script deprecation notices; they are noise here.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
import torch_geometric  # noqa: E402
import torch_geometric.backend  # noqa: E402
from torch_geometric.nn import RGCNConv  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python"))
from rgnn_export.common import relational_graph_tensors, write_graph, write_model  # noqa: E402

# The fused pyg-lib path (segment_matmul) averages over *all* in-edges for aggr="mean"; the
# reference semantics (and rgnn's) is the mean within each relation, which the per-relation loop
# computes. Force the loop.
torch_geometric.backend.use_segment_matmul = False

SPLITS = ("train", "valid", "test")
WHEEL_DIR = "pykeen/datasets/kinships/"


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

def _parse_triples(text: str) -> List[Tuple[str, str, str]]:
    """Tab-separated `head<TAB>relation<TAB>tail` lines."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        h, r, t = line.split("\t")
        out.append((h, r, t))
    return out


def load_raw_triples(args) -> Tuple[Dict[str, List[Tuple[str, str, str]]], str]:
    """Read the three splits from a PyKEEN wheel (file, or directory holding one) or a directory;
    also return a short name of the source."""
    if args.data_dir:
        raw = {}
        for s in SPLITS:
            with open(os.path.join(args.data_dir, f"{s}.txt"), encoding="utf-8") as f:
                raw[s] = _parse_triples(f.read())
        return raw, os.path.abspath(args.data_dir)
    wheel = args.pykeen_wheel
    if os.path.isdir(wheel):
        found = sorted(glob.glob(os.path.join(wheel, "pykeen-*.whl")))
        if not found:
            sys.exit(f"no pykeen-*.whl in {wheel}")
        wheel = found[-1]
    raw = {}
    with zipfile.ZipFile(wheel) as zf:
        for s in SPLITS:
            raw[s] = _parse_triples(zf.read(WHEEL_DIR + f"{s}.txt").decode("utf-8"))
    return raw, os.path.basename(wheel)


def natural_key(name: str):
    """Sort `person2` before `person10` (name prefix, then the trailing number)."""
    m = re.match(r"^(.*?)(\d+)$", name)
    return (m.group(1), int(m.group(2))) if m else (name, -1)


def index_triples(raw):
    """Map names to ids (natural order of the names) and return I64 [n, 3] tensors per split."""
    entities = sorted({x for s in SPLITS for (h, _, t) in raw[s] for x in (h, t)}, key=natural_key)
    relations = sorted({r for s in SPLITS for (_, r, _) in raw[s]}, key=natural_key)
    ent_id = {e: i for i, e in enumerate(entities)}
    rel_id = {r: i for i, r in enumerate(relations)}
    triples = {
        s: torch.tensor([[ent_id[h], rel_id[r], ent_id[t]] for (h, r, t) in raw[s]], dtype=torch.int64)
        for s in SPLITS
    }
    return entities, relations, triples


def graph_from_triples(triples: torch.Tensor, num_relations: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Edges h -> t of relation r, then the inverses t -> h of relation r + R."""
    h, r, t = triples[:, 0], triples[:, 1], triples[:, 2]
    edge_index = torch.cat([torch.stack([h, t]), torch.stack([t, h])], dim=1)
    edge_type = torch.cat([r, r + num_relations])
    return edge_index, edge_type


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------

class Encoder(nn.Module):
    """Two featureless RGCNConv layers: ReLU after the first, nothing after the second."""

    def __init__(self, num_nodes: int, num_relations: int, dim: int, num_bases, dropout: float):
        super().__init__()
        self.num_nodes = num_nodes
        self.dropout = dropout
        self.convs = nn.ModuleList([
            RGCNConv(num_nodes, dim, num_relations, num_bases=num_bases, aggr="mean"),
            RGCNConv(dim, dim, num_relations, num_bases=num_bases, aggr="mean"),
        ])

    def forward(self, edge_index: torch.Tensor, edge_type: torch.Tensor) -> torch.Tensor:
        # x = None: featureless input, the first layer's weight rows are per-node embeddings.
        x = self.convs[0](None, edge_index, edge_type)
        x = F.relu(x)
        x = F.dropout(x, p=self.dropout, training=self.training)  # training only; not exported
        return self.convs[1](x, edge_index, edge_type)


class DistMult(nn.Module):
    """score(h, r, t) = sum(z_h * rel_r * z_t), for the R forward relations only."""

    def __init__(self, num_relations: int, dim: int):
        super().__init__()
        self.relation = nn.Parameter(torch.empty(num_relations, dim))
        nn.init.xavier_uniform_(self.relation)

    def tail_scores(self, z: torch.Tensor, heads: torch.Tensor, rels: torch.Tensor) -> torch.Tensor:
        """Scores of every entity as the tail of (head, rel): [n, num_entities]."""
        return (z[heads] * self.relation[rels]) @ z.t()


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

def known_tails(known: torch.Tensor) -> Dict[Tuple[int, int], List[int]]:
    """(head, relation) -> all true tails among the known triples."""
    out: Dict[Tuple[int, int], List[int]] = {}
    for h, r, t in known.tolist():
        out.setdefault((h, r), []).append(t)
    return out


@torch.no_grad()
def filtered_tail_metrics(z, decoder, triples, tails_of) -> Dict[str, float]:
    """Filtered tail prediction: the other true tails of (h, r) (train, valid and test) are removed
    before ranking among all entities; rank = 1 + number of strictly higher scores."""
    scores = decoder.tail_scores(z, triples[:, 0], triples[:, 1])
    ranks = []
    for i, (h, r, t) in enumerate(triples.tolist()):
        s = scores[i].clone()
        target = s[t].item()
        others = [x for x in tails_of[(h, r)] if x != t]
        if others:
            s[others] = float("-inf")
        ranks.append(1 + int((s > target).sum().item()))
    ranks = torch.tensor(ranks, dtype=torch.float64)
    return {
        "mrr": (1.0 / ranks).mean().item(),
        "hits_at_1": (ranks <= 1).double().mean().item(),
        "hits_at_3": (ranks <= 3).double().mean().item(),
        "hits_at_10": (ranks <= 10).double().mean().item(),
    }


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def train(args, num_entities, num_relations, triples, tails_of):
    """Full-batch training; returns the encoder and decoder of the best validation checkpoint."""
    train_t = triples["train"]
    full_ei, full_et = graph_from_triples(train_t, num_relations)

    encoder = Encoder(num_entities, 2 * num_relations, args.dim, args.num_bases, args.dropout)
    decoder = DistMult(num_relations, args.dim)
    params = list(encoder.parameters()) + list(decoder.parameters())
    opt = torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)

    gen = torch.Generator().manual_seed(args.seed)
    n = train_t.size(0)
    best = {"mrr": -1.0}
    best_state = None
    best_epoch = 0
    for epoch in range(1, args.epochs + 1):
        encoder.train()
        decoder.train()
        # Each epoch, hide a random share of the training triples from the message-passing graph
        # and learn to predict exactly those (so an edge never carries its own answer).
        perm = torch.randperm(n, generator=gen)
        n_sup = int(round(args.supervision_fraction * n))
        sup, msg = train_t[perm[:n_sup]], train_t[perm[n_sup:]]
        ei, et = graph_from_triples(msg, num_relations)

        opt.zero_grad()
        z = encoder(ei, et)
        loss = F.cross_entropy(decoder.tail_scores(z, sup[:, 0], sup[:, 1]), sup[:, 2],
                               label_smoothing=args.label_smoothing)
        loss.backward()
        opt.step()

        if epoch % args.eval_every == 0 or epoch == args.epochs:
            encoder.eval()
            decoder.eval()
            with torch.no_grad():
                z = encoder(full_ei, full_et)
            m = filtered_tail_metrics(z, decoder, triples["valid"], tails_of)
            print(f"epoch {epoch:4d}  loss {loss.item():.4f}  valid MRR {m['mrr']:.4f}  "
                  f"H@1 {m['hits_at_1']:.4f}  H@10 {m['hits_at_10']:.4f}", flush=True)
            if m["mrr"] > best["mrr"]:
                best, best_epoch = m, epoch
                best_state = (copy.deepcopy(encoder.state_dict()), copy.deepcopy(decoder.state_dict()))

    encoder.load_state_dict(best_state[0])
    decoder.load_state_dict(best_state[1])
    encoder.eval()
    decoder.eval()
    return encoder, decoder, best, best_epoch


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------

def layer_configs(num_entities, num_relations2, dim, num_bases):
    """Every RGCNConv key of docs/model-config.md, written explicitly."""
    common = {"num_relations": num_relations2, "num_bases": num_bases, "num_blocks": None,
              "aggr": "mean", "root_weight": True, "bias": True}
    return [
        {"type": "RGCNConv", "prefix": "convs.0", "in_channels": num_entities, "out_channels": dim,
         **common, "activation": "relu"},
        {"type": "RGCNConv", "prefix": "convs.1", "in_channels": dim, "out_channels": dim,
         **common, "activation": None},
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--pykeen-wheel", help="pykeen-*.whl, or a directory holding one")
    src.add_argument("--data-dir", help="directory with train.txt, valid.txt, test.txt")
    ap.add_argument("--out", default=os.path.join(REPO, "assets", "demo"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--num-bases", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=600)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--supervision-fraction", type=float, default=0.5,
                    help="share of training triples hidden from the graph and predicted, per epoch")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="train and evaluate only")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    t0 = time.time()

    raw, source = load_raw_triples(args)
    entities, relations, triples = index_triples(raw)
    E, R = len(entities), len(relations)
    known = torch.cat([triples[s] for s in SPLITS])
    tails_of = known_tails(known)
    print(f"Kinships from {source}: {E} entities, {R} relations, "
          + ", ".join(f"{s} {triples[s].size(0)}" for s in SPLITS))

    encoder, decoder, best_valid, best_epoch = train(args, E, R, triples, tails_of)

    # Reference embeddings: the trained encoder over the full training graph (+ inverses).
    edge_index, edge_type = graph_from_triples(triples["train"], R)
    with torch.no_grad():
        z = encoder(edge_index, edge_type)
    test_m = filtered_tail_metrics(z, decoder, triples["test"], tails_of)
    print(f"best validation MRR {best_valid['mrr']:.4f} at epoch {best_epoch}")
    print(f"test (filtered tail prediction): MRR {test_m['mrr']:.4f}  H@1 {test_m['hits_at_1']:.4f}  "
          f"H@3 {test_m['hits_at_3']:.4f}  H@10 {test_m['hits_at_10']:.4f}  "
          f"({time.time() - t0:.1f} s)")
    if args.no_write:
        return

    os.makedirs(args.out, exist_ok=True)
    # 1. The encoder: its state_dict under PyG's names, and the layer configs.
    state = {k: v.to(torch.float32) for k, v in encoder.state_dict().items()}
    write_model(os.path.join(args.out, "kinships.model.safetensors"), "rgcn-distmult-kinships",
                layer_configs(E, 2 * R, args.dim, args.num_bases), state)
    # 2. The featureless relational graph the encoder runs on.
    write_graph(os.path.join(args.out, "kinships.graph.safetensors"),
                relational_graph_tensors(edge_index, edge_type, num_nodes=E))
    # 3. The link-prediction task: decoder, test and known triples, PyG's embeddings and metrics.
    task = {
        "decoder.relation": decoder.relation.detach().to(torch.float32),
        "test": triples["test"],
        "known": known,
        "reference.embeddings": z.to(torch.float32),
    }
    description = (
        f"Two-layer featureless RGCNConv encoder (dim {args.dim}, {args.num_bases} bases, "
        f"{2 * R} relations incl. inverses, mean aggregation) with a DistMult decoder, trained on "
        f"the Kinships training split (PyKEEN) with 1-N softmax cross-entropy over all tails "
        f"(each epoch predicting a random {args.supervision_fraction:.0%} of the training triples "
        f"hidden from the graph) and Adam for {args.epochs} epochs (seed {args.seed}), keeping the epoch-{best_epoch} checkpoint with "
        f"the best filtered validation MRR."
    )
    meta = {
        "entities": json.dumps(entities),
        "relations": json.dumps(relations),
        "pyg_mrr": f"{test_m['mrr']:.6f}",
        "pyg_hits_at_1": f"{test_m['hits_at_1']:.6f}",
        "pyg_hits_at_3": f"{test_m['hits_at_3']:.6f}",
        "pyg_hits_at_10": f"{test_m['hits_at_10']:.6f}",
        "description": description,
    }
    save_file({k: v.detach().cpu().contiguous() for k, v in task.items()},
              os.path.join(args.out, "kinships.task.safetensors"), metadata=meta)
    for name in ("model", "graph", "task"):
        p = os.path.join(args.out, f"kinships.{name}.safetensors")
        os.chmod(p, 0o644)  # the writer creates files readable by the owner only
        print(f"wrote {p} ({os.path.getsize(p)} bytes)")


if __name__ == "__main__":
    main()
