"""The cases of the head benchmark (``facemargin bench-heads``) as ``BxDxC`` (``@CHUNK``: the fused
path's chunk): those run by default and the one of a quick run. Kept apart from the benchmark,
which needs torch, so that the command's help can name them without loading it."""

DEFAULT_SIZES = ("256x512x100000", "256x512x10000", "256x512x1000000@65536")
QUICK_SIZES = ("256x512x10000",)
