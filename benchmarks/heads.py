#!/usr/bin/env python
"""Speed and memory of the margin heads (the same benchmark as ``facemargin bench-heads``).

    python benchmarks/heads.py                      # B=256, D=512, C=100k, 10k and 1M (chunked)
    python benchmarks/heads.py --quick              # C=10k only, 2 rounds
    python benchmarks/heads.py --sizes 256x512x100000 --heads arcface cosface --json out.json
"""
import sys

from facemargin.experiments.heads_cli import main

if __name__ == "__main__":
    sys.exit(main())
