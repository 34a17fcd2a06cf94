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
    # (pair-based ones draw PK batches, 64 identities x 4 images: uniform ones hold few same-identity pairs)
    "center": {"loss": {"name": "softmax"}, "aux": {"name": "center", "weight": 0.01, "params": {"alpha": 0.5}}},
    "contrastive": {"loss": {"name": "softmax"}, "aux": {"name": "contrastive", "weight": 0.5, "params": {"margin": 1.0}},
                    "data": {"sampler": "pk", "pk_images": 4}},
    "triplet": {"loss": {"name": "triplet", "params": {"margin": 0.2, "mining": "semihard"}},
                "data": {"sampler": "pk", "pk_images": 4}},
    "coco": {"loss": {"name": "coco"}},
    "range": {"loss": {"name": "softmax"}, "aux": {"name": "range", "weight": 0.01},
              "data": {"sampler": "pk", "pk_images": 4}},
    "marginal": {"loss": {"name": "softmax"}, "aux": {"name": "marginal", "weight": 0.1},
                 "data": {"sampler": "pk", "pk_images": 4}},
}
#: the heads ``make demo`` always runs; the newer heads (every one a registered loss) follow them
#: the heads ``make demo`` runs: the papers' core heads, ATL trained directly and a quality-aware
#: head, at the full budget with one seed, where the committed report's ordering at FAR 1e-4 shows
DEMO_HEADS = ["softmax", "cosface", "arcface", "sphereface", "atl-direct", "magface"]
NEWER_HEADS = ["adaface", "magface", "curricularface", "subcenter_arcface", "elasticarcface", "elasticcosface",
               "uniface", "sphereface2", "spherefacer"]
#: heads whose feature norm is meant to follow image quality
QUALITY_AWARE = ["adaface", "magface"]

#: the suffix of the entries that train a head at its constructor's defaults instead of the shared
#: scale; such an entry exists for every scale-based head of the full list whose bench settings
#: differ from those defaults and that has a source here (the runner derives the list)
PAPER_TAG = "@paper"
#: where each head's constructor defaults come from: the publication and its training settings
PAPER_SOURCES: Dict[str, str] = {
    "cosface": "Wang et al., CVPR 2018: s=64, m=0.35",
    "arcface": "Deng et al., CVPR 2019: s=64, m=0.5",
    "combined": "insightface combined margin (Deng et al., CVPR 2019): s=64, m1=1, m2=0.3, m3=0.2",
    "adaface": "Kim et al., CVPR 2022: s=64, m=0.4, h=0.333",
    "magface": "Meng et al., CVPR 2021: s=64, l_a=10, u_a=110, l_margin=0.45, u_margin=0.8, lambda_g=35",
    "curricularface": "Huang et al., CVPR 2020: s=64, m=0.5",
    "subcenter_arcface": "Deng et al., ECCV 2020: K=3, s=64, m=0.5",
    "elasticarcface": "Boutros et al., CVPRW 2022: s=64, m=0.5, std=0.05",
    "elasticcosface": "Boutros et al., CVPRW 2022: s=64, m=0.35, std=0.05",
    "uniface": "Zhou et al., ICCV 2023: s=64, m=0.4",
}

#: the recipes, margins, λ floors and semi-hard switch of the ATL ablation grid
ATL_RECIPES = ("direct", "step")
ATL_M = (2, 4)
ATL_LAMBDA_MIN = (3, 5)
ATL_SEMIHARD = (True, False)


def atl_entry_name(recipe: str, m: int, lambda_min: int, semihard: bool) -> str:
    """The bench entry of one ATL grid point: ``atl-<recipe>/m<m>-l<λ_min>``, ``-nosemi`` without
    the semi-hard mask; the point at m=4, λ_min=5 with the mask is the plain ``atl-<recipe>``."""
    if (m, lambda_min, semihard) == (4, 5, True):
        return f"atl-{recipe}"
    return f"atl-{recipe}/m{m}-l{lambda_min}" + ("" if semihard else "-nosemi")


#: the ATL ablation grid, entry name -> its point (recipe, m, lambda_min, semihard)
ATL_ABLATION: Dict[str, Dict] = {
    atl_entry_name(r, m, lam, semi): {"recipe": r, "m": m, "lambda_min": lam, "semihard": semi}
    for r in ATL_RECIPES for m in ATL_M for lam in ATL_LAMBDA_MIN for semi in ATL_SEMIHARD
}

#: bench entries run only when named (alone or through a group of ``--heads``), never by default
EXTRA_HEADS: Dict[str, Dict] = {
    # CurricularFace exactly as its shared entry (s=30, the default m=0.5), plus a linear warm-up
    # of the learning rate and gradient-norm clipping
    "curricularface@warmup": {"loss": {"name": "curricularface", "params": {"s": S}},
                              "optim": {"warmup_steps": 100, "clip_grad_norm": 5.0}},
    # SphereFace2 at its defaults with the same warm-up and clipping (its first steps stay near chance)
    "sphereface2@warmup": {"loss": {"name": "sphereface2"}, "optim": {"warmup_steps": 100, "clip_grad_norm": 5.0}},
    **{name: {"loss": {"name": "atl", "params": {"m": p["m"], "lambda_min": p["lambda_min"], "triplet": True,
                                                 "semihard": p["semihard"]}},
              **({"recipe": "step"} if p["recipe"] == "step" else {})}
       for name, p in ATL_ABLATION.items() if name not in HEADS},
}
#: entries of the ``paper`` group besides the derived ``@paper`` ones
PAPER_EXTRAS = ["curricularface@warmup", "sphereface2@warmup"]
#: the group names ``--heads`` expands
HEAD_GROUPS = ("paper", "atl-ablation")

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
