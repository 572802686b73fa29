"""Run the search app under uvicorn (``make serve``)::

    python -m handler.serve --bundle artifacts/demo/bundle --index artifacts/demo/index \
        [--host 127.0.0.1 --port 8000]

Options fall back to the environment (``MODEL_URI``, ``INDEX_URI``, ``HOST``, ``PORT`` and every variable
of :mod:`handler.config`). Unlike Lambda, a configuration or artifact problem stops the server at start
(exit code 2) unless ``--allow-unhealthy`` is given.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from handler.config import Settings
from handler.core.errors import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m handler.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", help="model bundle directory or s3:// prefix (default: $MODEL_URI)")
    p.add_argument(
        "--index", help="index directory or s3:// prefix (default: $INDEX_URI; none: embeddings only)"
    )
    p.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    p.add_argument(
        "--allow-unhealthy", action="store_true", help="serve even if the model or index failed to load"
    )
    args = p.parse_args(argv)

    env = dict(os.environ)
    if args.bundle:
        env["MODEL_URI"] = args.bundle
    if args.index:
        env["INDEX_URI"] = args.index
    try:
        settings = Settings.from_env(env)
    except ConfigError as e:
        print(f"configuration error: {e.message}", file=sys.stderr)
        return 2

    import uvicorn

    from handler.app import create_app
    from handler.logs import configure_logging
    from handler.state import ServiceState

    configure_logging(settings.log_level)
    state = ServiceState(settings).load()
    if not state.healthy() and not args.allow_unhealthy:
        for problem in state.problems():
            print(f"{problem.component}: {problem.code}: {problem.message}", file=sys.stderr)
        return 2
    app = create_app(state)
    print(f"serving on http://{args.host}:{args.port}/ (API docs at /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=settings.log_level.lower(), access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
