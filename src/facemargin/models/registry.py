"""The registry of backbones (``facemargin.models.build`` / ``available``)."""
from ..registry import Registry

BACKBONES = Registry("backbone")
