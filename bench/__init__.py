"""Benchmarks: cpu.py, gpu.py, recipe.py (see bench/README.md)."""
