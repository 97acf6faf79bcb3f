"""Benchmarks of lvebm-lightning: each script runs as ``python -m benchmarks.<name>`` from the repository root and
takes its matmul rate, timers, report writer and results folder from ``benchmarks.common``."""
