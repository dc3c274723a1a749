"""Command line: `python -m rgnn_export inspect FILE...` prints the config and tensors of rgnn files.

Exporting needs the model object, so it is a Python API (see the package docstring), not a command.
"""
from __future__ import annotations

import argparse
import json
import sys

from .reader import read_config, summarize


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m rgnn_export",
        description="Tools for rgnn's safetensors model / graph / output files. Exporting is done "
                    "from Python: rgnn_export.export_pyg_model, export_pyg_graph, export_floydnet, "
                    "export_pair_graph, write_expected.")
    sub = p.add_subparsers(dest="cmd", required=True)
    ins = sub.add_parser("inspect", help="print the rgnn.config JSON and the tensors of files")
    ins.add_argument("files", nargs="+")
    args = p.parse_args(argv)
    if args.cmd == "inspect":
        for path in args.files:
            print(f"== {path}")
            cfg = read_config(path)
            if cfg is not None:
                print(json.dumps(cfg, indent=2))
            for name, dtype, shape in summarize(path):
                print(f"  {name:48s} {dtype:6s} {list(shape)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
