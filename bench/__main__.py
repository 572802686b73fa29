"""`python -m bench [--quick] [--only encode,search,...] [--out BENCHMARKS.md]`: run the benchmarks, write the
report.

Each measure runs in its own Python process (``python -m bench.worker``), one after the other; a measure
that fails gets an error section and the others still run. Exit status: 0 when every measure ran
(goals met or not: the benchmark reports goals, it does not enforce them), 1 when a measure failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import (
    DEFAULT_WORK,
    PLOTS_DIR,
    REPO,
    Context,
    Section,
    busy_processes,
    cpu_busy,
    cpu_count,
    load_average,
    wait_until_quiet,
)
from bench.common import machine_info as get_machine_info
from bench.report import ORDER, data_path_for, error_section, merge, read_previous, render_data, write_data

MEASURES = {
    "encode": "Encode latency (text, image) — torch vs ONNX fp32/fp16/int8, and tuning",
    "coldstart": "Cold start — new process to first text-search answer",
    "search": "Search — latency and recall@10 at 10k / 100k / 1M vectors",
    "build": "Rebuild — images/s end to end",
    "footprint": "Footprint — installed dependencies and bundle sizes",
    "accuracy": "Accuracy cost of fp16 and int8",
    "scale": "Scale — shards, recall by construction, incremental publish, cold load from S3",
    "features": "Search features — filters and the duplicate finder",
    "scale1m": "Scale at 1M vectors — the goals at full size (both distributions, default sharding)",
    "params": "HNSW parameters — M and ef_construction at 100k and 500k vectors per shard",
}
ALIASES = {
    "rebuild": "build",
    "cold": "coldstart",
    "cold-start": "coldstart",
    "index": "search",
    "scale-1m": "scale1m",
}
RUN_ORDER = [
    "footprint",
    "encode",
    "accuracy",
    "coldstart",
    "build",
    "search",
    "features",
    "scale",
    "scale1m",
    "params",
]


def parse_only(value: str | None) -> list[str]:
    if not value:
        return list(RUN_ORDER)
    names = []
    for raw in value.split(","):
        name = ALIASES.get(raw.strip(), raw.strip())
        if not name:
            continue
        if name not in MEASURES:
            raise SystemExit(
                f"--only: unknown measure {raw!r}; choose from {', '.join(MEASURES)} (or rebuild)"
            )
        names.append(name)
    return [n for n in RUN_ORDER if n in names]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny model and sizes, few iterations: a smoke test (~2-3 min), numbers not meaningful",
    )
    p.add_argument(
        "--only",
        help=f"comma-separated measures to run: {', '.join(MEASURES)} (default: all); "
        "the other sections of an existing report are kept",
    )
    p.add_argument(
        "--out", type=Path, default=REPO / "BENCHMARKS.md", help="report file (default BENCHMARKS.md)"
    )
    p.add_argument(
        "--data",
        type=Path,
        help="data file the report is rendered from (default bench/results.json for BENCHMARKS.md, "
        "else <out>.json)",
    )
    p.add_argument(
        "--plots",
        type=Path,
        help="plot directory (default bench/plots for the default --out, else <out dir>/plots)",
    )
    p.add_argument(
        "--work",
        type=Path,
        default=DEFAULT_WORK,
        help="cache and scratch directory (default bench/out, gitignored)",
    )
    p.add_argument(
        "--threads", type=int, default=cpu_count(), help="threads for every engine (default: all cores)"
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each measure, wait up to SECONDS for other processes to leave the CPUs idle "
        "(shared machines; default 0: do not wait)",
    )
    return p


def _git_rev() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def run_measure(name: str, ctx: Context, wait_quiet: float = 0.0) -> Section:
    busy_before = wait_until_quiet(wait_quiet) if wait_quiet > 0 else cpu_busy(1.0)
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        result = Path(tmp) / "section.json"
        cmd = [sys.executable, "-m", "bench.worker", name, json.dumps(ctx.to_json()), str(result)]
        started = time.perf_counter()
        load0, busy = load_average()[0], busy_processes()
        proc = subprocess.run(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - started
        if proc.returncode == 0 and result.is_file():
            section = Section.from_json(json.loads(result.read_text()))
        else:
            section = error_section(
                name, MEASURES[name], f"exit status {proc.returncode}\n{(proc.stderr or '')[-4000:]}"
            )
        if proc.stderr and proc.returncode == 0:
            sys.stderr.write(proc.stderr[-2000:])
    section.seconds = seconds
    section.load = {"start": load0, "end": load_average()[0], "busy": busy, "cpu_busy_before": busy_before}
    return section


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = parse_only(args.only)
    out = args.out.resolve()
    plots = args.plots or (PLOTS_DIR if out == (REPO / "BENCHMARKS.md").resolve() else out.parent / "plots")
    plots = plots.resolve()
    plots.mkdir(parents=True, exist_ok=True)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(quick=args.quick, work=work, plots=plots, threads=max(1, args.threads))
    argv_used = sys.argv[1:] if argv is None else argv
    run = {
        "id": uuid.uuid4().hex[:8],
        "command": "python -m bench" + ("" if not argv_used else " " + shlex.join(argv_used)),
        "quick": args.quick,
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git": _git_rev(),
        "threads": ctx.threads,
        "machine": get_machine_info(ctx.threads),
        "load_start": load_average(),
    }
    print(
        f"bench: {', '.join(names)}{' (quick)' if args.quick else ''}; threads={ctx.threads}; "
        f"report -> {out}",
        flush=True,
    )
    t0 = time.perf_counter()
    sections: list[Section] = []
    failed = []
    for name in names:
        print(f"[{name}] {MEASURES[name]}", flush=True)
        section = run_measure(name, ctx, args.wait_quiet)
        if any(g.name == "(measure failed)" for g in section.goals):
            failed.append(name)
            print(f"[{name}] FAILED (see the report)", flush=True)
        print(f"[{name}] done in {section.seconds:.0f}s", flush=True)
        sections.append(section)
    run["seconds"] = time.perf_counter() - t0
    run["load_end"] = load_average()
    data_path = (args.data or data_path_for(out)).resolve()
    merged, runs = merge(read_previous(data_path, legacy_report=out), sections, run)
    data = write_data(data_path, merged, run, runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_data(data, out, plots), encoding="utf-8")
    print(
        f"bench: wrote {out} (data: {data_path}) in {run['seconds'] / 60:.1f} min"
        + (f"; FAILED: {', '.join(failed)}" if failed else ""),
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    assert set(ORDER) == set(MEASURES)
    sys.exit(main())
