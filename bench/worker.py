"""`python -m bench.worker NAME CONTEXT_JSON RESULT_PATH`: run one measure in this (fresh) process."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from bench.common import Context

MODULES = {
    "encode": "bench.encode",
    "coldstart": "bench.coldstart",
    "search": "bench.search",
    "build": "bench.rebuild",
    "footprint": "bench.footprint",
    "accuracy": "bench.accuracy",
    "scale": "bench.scale",
    "scale1m": "bench.scale1m",
    "params": "bench.params",
    "features": "bench.features",
}


def main(argv: list[str]) -> int:
    name, ctx_json, result = argv
    os.environ.setdefault("MPLBACKEND", "Agg")
    logging.basicConfig(level=logging.ERROR)  # library chatter (random init, optimizer fusions) is not news
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    ctx = Context.from_json(json.loads(ctx_json))
    ctx.log = lambda msg: print(f"  [{name}] {msg.strip()}", flush=True)
    module = importlib.import_module(MODULES[name])
    section = module.run(ctx)
    Path(result).write_text(json.dumps(section.to_json(), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
