"""Shared pytest setup for the facemargin test suite.

The tests use tiny tensors; on a small shared CPU several intra-op threads per test process only
oversubscribe the cores (3x slower wall-clock here). One thread by default;
``FACEMARGIN_TEST_THREADS=N`` overrides it.
"""
import os

import torch

torch.set_num_threads(int(os.environ.get("FACEMARGIN_TEST_THREADS", "1")))
