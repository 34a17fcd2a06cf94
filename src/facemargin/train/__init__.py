"""Training: config, the resumable loop, checkpoints, and the main job (``facemargin bench``)."""
from .._lazy import lazy_package


def _public():
    """The public names, imported on first use (``facemargin --help`` needs no torch)."""
    from .checkpoint import load_backbone, load_checkpoint, save_checkpoint
    from .config import DEFAULTS, load_config
    from .loop import Trainer, build_loss
    from .schedule import BatchOrder, PKBatchOrder, lr_factor
    return locals()


__getattr__ = lazy_package(__name__, _public)

__all__ = ["Trainer", "build_loss", "load_config", "DEFAULTS", "load_backbone", "load_checkpoint",
           "save_checkpoint", "BatchOrder", "PKBatchOrder", "lr_factor"]
