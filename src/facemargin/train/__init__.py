"""Training: config, the resumable loop, checkpoints, and the main job (``facemargin bench``)."""
from .checkpoint import load_backbone, load_checkpoint, save_checkpoint
from .config import DEFAULTS, load_config
from .loop import Trainer, build_loss
from .schedule import BatchOrder, lr_factor

__all__ = ["Trainer", "build_loss", "load_config", "DEFAULTS", "load_backbone", "load_checkpoint",
           "save_checkpoint", "BatchOrder", "lr_factor"]
