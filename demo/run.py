"""`make demo`: the whole pipeline on the demo model, ending in queries through the Lambda handler.

export (done by the Makefile) -> demo collection -> index_builder -> handler.lambda_function.lambda_handler.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from demo import shapes
from events.builders import http_api


def http_api_event(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """An API Gateway HTTP API (v2) proxy event, as API Gateway sends it to the function."""
    return http_api(
        method,
        path,
        json.dumps(body) if body is not None else None,
        "application/json" if body is not None else None,
        headers={"user-agent": "make-demo"},
    )


def invoke(handler: Any, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = handler(http_api_event(method, path, body), None)
    payload = response.get("body") or "{}"
    if response.get("isBase64Encoded"):
        payload = base64.b64decode(payload).decode()
    data = json.loads(payload)
    if response["statusCode"] != 200:
        raise SystemExit(f"{method} {path} -> {response['statusCode']}: {data}")
    return data


def print_results(title: str, data: dict[str, Any]) -> None:
    print(f"\n{title}  (index {data.get('index_version')}, {data.get('took_ms')} ms)")
    for rank, hit in enumerate(data["results"], 1):
        caption = (hit.get("metadata") or {}).get("caption", "")
        print(f"  {rank:2d}. {hit['score']:.3f}  {hit['id']:<28} {caption}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo.run", description=__doc__)
    p.add_argument("--artifacts", type=Path, default=Path("artifacts/demo"))
    p.add_argument("--count", type=int, default=320, help="images in the demo collection")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--query", default="a red circle")
    p.add_argument("--k", type=int, default=5)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    bundle, images, index = (args.artifacts / name for name in ("bundle", "images", "index"))
    if not (bundle / "manifest.json").is_file():
        print(
            f"error: no bundle at {bundle}; run `make demo` (it exports the demo model first)",
            file=sys.stderr,
        )
        return 1
    if not images.is_dir() or not any(images.rglob("*.jpg")):
        print(f"generating {args.count} demo images in {images}")
        shapes.write_collection(images, args.count, args.seed, size=128, fmt="jpg")

    from index_builder.cli import main as index_builder

    print(f"building the index {index} (incremental: unchanged images are not re-embedded)")
    rc = index_builder(["build", "--source", str(images), "--bundle", str(bundle), "--out", str(index)])
    if rc != 0:
        return rc

    os.environ["MODEL_URI"] = str(bundle.resolve())
    os.environ["INDEX_URI"] = str(index.resolve())
    t0 = time.perf_counter()
    lambda_function = importlib.import_module("handler.lambda_function")
    print(f"\nLambda handler loaded in {time.perf_counter() - t0:.2f} s (model + index, once per container)")
    handler = lambda_function.lambda_handler

    health = invoke(handler, "GET", "/health")
    print(f"health: {json.dumps(health)}")
    print_results(
        f'text query "{args.query}"', invoke(handler, "POST", "/search", {"text": args.query, "k": args.k})
    )

    query_image = shapes.render("blue", "square", np.random.default_rng(args.seed + 1), size=128)
    buf = io.BytesIO()
    query_image.save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    print_results(
        "image query (a freshly drawn blue square)",
        invoke(handler, "POST", "/search", {"image": b64, "k": args.k}),
    )
    print("\nnext: `make serve` and open http://127.0.0.1:8000/ to search in the browser")
    return 0


if __name__ == "__main__":
    sys.exit(main())
