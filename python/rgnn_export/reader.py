"""Reading rgnn safetensors files back: the config JSON and a per-tensor summary."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

from safetensors import safe_open


def read_config(path: str) -> Optional[Dict[str, Any]]:
    """The parsed `rgnn.config` of a model file, or None for graph / output files."""
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    raw = meta.get("rgnn.config")
    return None if raw is None else json.loads(raw)


def summarize(path: str) -> List[Tuple[str, str, Tuple[int, ...]]]:
    """(name, dtype, shape) of every tensor in a safetensors file, in name order."""
    out = []
    with safe_open(path, framework="pt") as f:
        for k in sorted(f.keys()):
            sl = f.get_slice(k)
            out.append((k, str(sl.get_dtype()), tuple(sl.get_shape())))
    return out
