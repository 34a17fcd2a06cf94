"""facemargin: train, compare and deploy face-embedding models with every loss of the field."""
__version__ = "0.1.0"
