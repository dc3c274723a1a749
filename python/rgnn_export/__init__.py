"""rgnn_export: write PyTorch Geometric, DGL and FloydNet models, graphs and reference outputs in
rgnn's safetensors formats (see the README, "File formats", and docs/model-config.md).

The framework-specific exporters are imported lazily, so `import rgnn_export` needs only torch and
safetensors; `export_pyg_*` additionally needs torch_geometric, `export_floydnet` needs floydnet,
`export_dgl_*` needs dgl.
"""
from .common import (FORMAT, hetero_graph_tensors, pair_graph_tensors, relational_graph_tensors,
                     write_expected, write_graph, write_model)
from .reader import read_config, summarize


def export_pyg_model(*args, **kwargs):
    """See `rgnn_export.pyg.export_pyg_model`."""
    from .pyg import export_pyg_model as f
    return f(*args, **kwargs)


def export_pyg_graph(*args, **kwargs):
    """See `rgnn_export.pyg.export_pyg_graph`."""
    from .pyg import export_pyg_graph as f
    return f(*args, **kwargs)


def export_floydnet(*args, **kwargs):
    """See `rgnn_export.floydnet.export_floydnet`."""
    from .floydnet import export_floydnet as f
    return f(*args, **kwargs)


def export_pair_graph(*args, **kwargs):
    """See `rgnn_export.floydnet.export_pair_graph`."""
    from .floydnet import export_pair_graph as f
    return f(*args, **kwargs)


def export_dgl_model(*args, **kwargs):
    """See `rgnn_export.dgl.export_dgl_model` (needs dgl)."""
    from .dgl import export_dgl_model as f
    return f(*args, **kwargs)


def export_dgl_graph(*args, **kwargs):
    """See `rgnn_export.dgl.export_dgl_graph` (needs dgl)."""
    from .dgl import export_dgl_graph as f
    return f(*args, **kwargs)


__all__ = [
    "FORMAT", "write_model", "write_graph", "write_expected",
    "relational_graph_tensors", "hetero_graph_tensors", "pair_graph_tensors",
    "export_pyg_model", "export_pyg_graph", "export_floydnet", "export_pair_graph",
    "export_dgl_model", "export_dgl_graph",
    "read_config", "summarize",
]
