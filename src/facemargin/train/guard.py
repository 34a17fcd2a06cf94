"""Guards around one training step: steps with non-finite values are dropped, lost ranks are named.

A step whose input, embeddings, loss or gradients hold NaN or Inf (on any rank) changes nothing:
no optimizer update, and the buffers the forward pass moved (batch-norm statistics, centres of a
center loss) are put back. The skip is logged with its likely cause, the earliest stage that went
wrong, and ``train.max_consecutive_skips`` skips in a row stop the run. A checkpoint is never
written with non-finite values. In a distributed run a failed collective is reported with the
step it broke.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.distributed as tdist

from ..distributed.utils import DistributedError


class StepGuard:
    """The trainer's checks of each step and of the state it is about to save."""

    _CAUSES = {
        "input": "the input batch holds NaN/Inf (corrupt data: check the dataset files)",
        "embeddings": "the backbone produced non-finite embeddings (training diverged: lower optim.lr, "
                      "raise optim.warmup_steps or set optim.clip_grad_norm)",
        "loss": "the loss is non-finite (a margin or scale too large for the precision: try train.bf16=false "
                "or smaller loss.params; or lower optim.lr)",
        "gradients": "the gradients are non-finite (overflow: lower optim.lr or set optim.clip_grad_norm)",
    }

    def _step_buffers(self):
        """Buffers a forward or backward pass changes even when its step is dropped: batch-norm
        statistics of the backbone, centres of an auxiliary center loss."""
        mods = [self.model] + ([self.aux] if self.aux is not None else [])
        return [b for m in mods for b in m.buffers() if b.is_floating_point()]

    def _grads_finite(self) -> bool:
        grads = [p.grad for opt in self.optimizers for g in opt.param_groups for p in g["params"]
                 if p.grad is not None]
        return not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())

    def _skip_step(self, bad: Dict[str, bool], buffers, lr: float) -> Dict:
        """Drop this step: no optimizer update, buffers restored; stop after too many in a row."""
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for b, saved in zip(self._step_buffers(), buffers):
                b.copy_(saved)
        self.skipped += 1
        self.skipped_in_a_row += 1
        self.step += 1
        # the earliest stage that went wrong is the likely cause (later ones follow from it)
        cause = self._CAUSES[next(k for k, v in bad.items() if v)]
        if self.is_main:
            self.log(f"[train] step {self.step}: {cause}; step skipped ({self.skipped_in_a_row} in a row, "
                     f"{self.skipped} in all)")
        if self.skipped_in_a_row >= self.max_skips:
            ckpt = self.out / "checkpoint.pt"
            kept = f"the last good checkpoint {ckpt} is kept" if ckpt.exists() else "no checkpoint was written"
            raise FloatingPointError(
                f"step {self.step}: {self.skipped_in_a_row} consecutive steps skipped for non-finite values "
                f"(train.max_consecutive_skips={self.max_skips}); likely cause: {cause}. Training stopped; {kept}")
        return {"step": self.step, "lr": lr, "skipped": True}

    def _guarded_step(self) -> Dict:
        """:meth:`train_step`; in a distributed run a failed collective (a rank died or hung past
        ``dist.timeout_s``; DDP's own all-reduce raises the backend's error) names the step."""
        if self.dist is None:
            return self.train_step()
        try:
            return self.train_step()
        except DistributedError as e:
            raise DistributedError(f"step {self.step + 1}: {e}") from e
        except tdist.DistError as e:
            raise DistributedError(
                f"step {self.step + 1}: a collective failed on rank {self.dist.rank} of {self.dist.world}: another "
                f"rank died or hung past dist.timeout_s ({type(e).__name__}: {str(e).strip()[:200]})") from e

    def _nonfinite_state(self):
        """Names of the state tensors (this process's part) that hold NaN or Inf."""
        parts = [("model", self.model.state_dict()), ("loss", self.loss.state_dict())]
        if self.aux is not None:
            parts.append(("aux", self.aux.state_dict()))
        for i, opt in enumerate(self.optimizers):
            parts += [(f"optimizer{i}", state) for state in opt.state.values()]
        return [f"{tag}.{k}" for tag, state in parts for k, v in state.items()
                if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
