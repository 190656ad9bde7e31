"""Benchmarks for studio-sink: ``python -m bench ingest|backfill [--quick|--full]``.

Every figure is printed as a ratio against a baseline measured in the same run, because
the machines here are shared and absolute numbers drift. See docs/benchmarks.md.
"""
