"""Benchmark suite: `python -m bench [--quick] [--only encode,coldstart,search,build,footprint,accuracy]`.

Writes BENCHMARKS.md and bench/plots/*.png. See bench/__main__.py.
"""
