"""The metrics of a training run: ``metrics.jsonl`` (one JSON row per logged step or evaluation)
and, with ``train.tensorboard``, the same rows mirrored to TensorBoard.

Only the main process writes. A resumed run first drops the rows past its checkpoint's step (and
TensorBoard purges its events past that step), so the log reads as one uninterrupted run.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

from ..io import atomic_open


class MetricsLog:
    """The trainer's ``metrics.jsonl`` and its TensorBoard mirror."""

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"

    def _write_metrics(self, row: Dict) -> None:
        self.history.append(row)
        if not self.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb_probe is not None:
            if self._tb is None:
                from .tensorboard import TensorBoardLog

                # a resumed run discards the events past its step, as metrics.jsonl was truncated
                self._tb = TensorBoardLog(self.out / "tensorboard", purge_step=self._tb_purge)
            self._tb.write_row(row, self._tb_probe.norms)

    def _truncate_metrics(self, step: int) -> None:
        self._tb_purge = step + 1
        if not (self.is_main and self.metrics_path.exists()):
            return
        keep = [ln for ln in self.metrics_path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
        with atomic_open(self.metrics_path, "w", encoding="utf-8") as f:
            f.write("".join(ln + "\n" for ln in keep))
