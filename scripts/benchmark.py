#!/usr/bin/env python3
"""Kept for old command lines: the benchmark is `python -m segsuite.benchmark` (src/segsuite/benchmark/)."""
from segsuite.benchmark.cli import main

if __name__ == "__main__":
    main()
