"""Measured proposals for export/ and handler/ (code used by the benchmark, plus patch files)."""
