"""The registry of backbones (``facemargin.models.build`` / ``available`` / ``check_params``).

Backbones share most of their options, so their valid values are stated here once, by argument
name, and apply to every backbone that takes the argument (a backbone class may narrow one in its
own ``PARAMS``). ``models.build`` and ``models.check_params`` check them; the constructors keep
their own checks for direct use.
"""
from ..params import Check, Flag, Integer, Real
from ..registry import Registry


def _multiple_of_8(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 8 or value % 8:
        raise ValueError("not a positive multiple of 8")
    return value


def _four_positive_ints(value):
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError("not a sequence") from None
    if len(items) != 4 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in items):
        raise ValueError("not four positive integers")
    return value


#: rules for the options the backbones share (argument name -> rule)
COMMON_PARAMS = {
    "embedding_size": Integer(1, doc="the width of the embedding"),
    "dropout": Real(0, 1, hi_open=True, doc="the dropout probability before the embedding layer"),
    "width": Real(0, lo_open=True, doc="a factor on every layer's channel count"),
    "in_channels": Integer(1, doc="image channels"),
    "image_size": Check(_multiple_of_8, "a positive multiple of 8", doc="the side of the square input"),
    "scale": Integer(1, doc="a factor on the channel counts"),
    "blocks": Check(_four_positive_ints, "four positive block counts", doc="blocks per stage"),
    "zero_init_residual": Flag(doc="start every residual branch at zero"),
}

BACKBONES = Registry("backbone", common_params=COMMON_PARAMS)
