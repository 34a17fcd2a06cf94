"""The protocol of the main job (``facemargin bench``): which heads run, with which settings, on
which budget, and at which false-accept rates they are read.

Plain settings, kept apart from the runner (:mod:`.glyphs`) so that what only needs to know the
protocol (the report, for one) does not load the training code.
"""
from __future__ import annotations

from typing import Dict, List

EMBEDDING = 128
MODEL = {"name": "smallcnn", "embedding_size": EMBEDDING, "params": {}}
LR = 0.1
#: scale of every scale-based head: with 128-D features and a short budget, s=64 makes the
#: margin heads' softmax saturate early; 30 is the scale the glyph set was calibrated with
S = 30.0
#: λ-annealed heads reach λ_min at this share of the steps (the schedule is compressed when the
#: budget is too short for the default gamma)
LAMBDA_AT = 0.4

#: the head of each bench entry: loss spec, and for ATL the recipe
HEADS: Dict[str, Dict] = {
    "softmax": {"loss": {"name": "softmax"}},
    "l2softmax": {"loss": {"name": "l2softmax", "params": {"alpha": S}}},
    "normface": {"loss": {"name": "normface", "params": {"s": S}}},
    "sphereface": {"loss": {"name": "sphereface", "params": {"m": 4}}},
    "lsoftmax": {"loss": {"name": "lsoftmax", "params": {"m": 2}}},
    "cosface": {"loss": {"name": "cosface", "params": {"s": S, "m": 0.35}}},
    "arcface": {"loss": {"name": "arcface", "params": {"s": S, "m": 0.5}}},
    "combined": {"loss": {"name": "combined", "params": {"s": S}}},
    # the Angular Triplet Loss at SphereFace's settings (m=4, λ_min=5), so the recipes differ from
    # SphereFace only by the easy triplet and the semi-hard mask
    "atl-direct": {"loss": {"name": "atl", "params": {"m": 4, "triplet": True, "semihard": True}}},
    "atl-step": {"loss": {"name": "atl", "params": {"m": 4, "triplet": True, "semihard": True}}, "recipe": "step"},
    # metric losses (full budget only): softmax plus an auxiliary loss, or the loss alone
    "center": {"loss": {"name": "softmax"}, "aux": {"name": "center", "weight": 0.01, "params": {"alpha": 0.5}}},
    "contrastive": {"loss": {"name": "softmax"}, "aux": {"name": "contrastive", "weight": 0.5, "params": {"margin": 1.0}}},
    "triplet": {"loss": {"name": "triplet", "params": {"margin": 0.2, "mining": "semihard"}}},
    "coco": {"loss": {"name": "coco"}},
    "range": {"loss": {"name": "softmax"}, "aux": {"name": "range", "weight": 0.01}},
    "marginal": {"loss": {"name": "softmax"}, "aux": {"name": "marginal", "weight": 0.1}},
}
#: the heads ``make demo`` always runs; the newer heads (every one a registered loss) follow them
#: the heads ``make demo`` runs: the papers' core heads, ATL trained directly and a quality-aware
#: head, at the full budget with one seed, where the committed report's ordering at FAR 1e-4 shows
DEMO_HEADS = ["softmax", "cosface", "arcface", "sphereface", "atl-direct", "magface"]
NEWER_HEADS = ["adaface", "magface", "curricularface", "subcenter_arcface", "elasticarcface", "elasticcosface",
               "uniface", "sphereface2", "spherefacer"]
#: heads whose feature norm is meant to follow image quality
QUALITY_AWARE = ["adaface", "magface"]

BUDGETS = {
    # make demo: the demo heads at the full budget with one seed (seed 0 of the full report), fewer
    # evaluations along the way
    "demo": {"steps": 1500, "batch": 256, "seeds": [0], "eval_every": 500, "figure_steps": 100,
             "figures3d": False, "full_heads": False},
    # --full: every head and loss, three seeds, 1500 steps of batch 256
    "full": {"steps": 1500, "batch": 256, "seeds": [0, 1, 2], "eval_every": 150, "figure_steps": 400,
             "figures3d": True, "full_heads": True},
}
FARS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
CURVE_FAR = 1e-3  # the FAR of the convergence curves (when the unseen set has enough impostor pairs)


def available_heads(full: bool) -> List[str]:
    """The bench entries to run: the demo list, or with ``full`` every entry plus the newer heads."""
    if not full:
        return list(DEMO_HEADS)
    return list(HEADS) + [n for n in NEWER_HEADS if n not in HEADS]
