"""The registry of losses and heads (``facemargin.losses.build`` / ``available``)."""
from ..registry import Registry

LOSSES = Registry("loss")
