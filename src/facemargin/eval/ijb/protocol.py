"""The IJB protocols end to end, given per-image embeddings: 1:1 over the template pairs, 1:N
against a gallery (G1, G2, both together, or each in turn pooled)."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from ...roc import IJB_FARS
from .identification import IJB_FPIRS, TPIR_RULES, identify_open_set
from .meta import IJBMeta, read_ijb_1n
from .templates import IJBOptions, _template_index, pool_templates, score_pairs
from .verification import verification_1to1

__all__ = ["GALLERIES", "ijb_1to1", "ijb_1toN"]

#: gallery choices of the 1:N protocol
GALLERIES = ("G1", "G2", "both", "average")


def ijb_1to1(meta: IJBMeta, emb, emb_flip=None, options: IJBOptions = IJBOptions(),
             fars: Sequence[float] = IJB_FARS, progress: bool = False) -> Dict:
    """The IJB 1:1 protocol on per-image embeddings (rows in the order of the image list)."""
    tids, feats = pool_templates(emb, meta.templates, meta.medias, emb_flip, meta.faceness, options)
    scores = score_pairs(tids, feats, meta.pair_t1, meta.pair_t2, progress=progress)
    r = verification_1to1(scores, meta.pair_label, fars)
    r.update({"dataset": meta.dataset, "options": options.describe(), "code": options.code,
              "num_templates": int(len(tids)), "scores": scores,
              "far_rule": "TAR at the ROC point with the FAR nearest each level (thinned ROC, as the published "
                          "tables); tar_at_far_at_most: largest TAR with FAR <= level"})
    return r


def _summarise_1n(res: Dict) -> Dict:
    return {k: v for k, v in res.items() if k not in ("ranks", "best_scores", "mated")}


_RULE_TEXT = {
    "open_set": "with N non-mated probes, FPIR f allows k = floor(f x N) false alarms: threshold = the (k+1)-th "
                "largest best score of the non-mated probes; alarm when score > threshold; TPIR = rank-1 and "
                "score > threshold",
    "insightface": "insightface ijb_1n.py: threshold = the ceil(f x #probes)-th largest score of all non-mated "
                   "(probe, gallery template) pairs; TPIR = own score > threshold at any rank; FPIR = non-mated "
                   "pairs above it / #probes",
}


def _pool_levels(r1: Dict, r2: Dict, key: str, rule: str) -> Dict:
    """TPIR@FPIR of two galleries pooled: every mated search and every false-alarm chance counts once."""
    out = {}
    for f in r1[key]:
        if f not in r2[key]:
            continue
        a, b = r1[key][f], r2[key][f]
        fden = "num_non_mated" if rule == "open_set" else "num_probes"
        out[f] = {"tpir": (a["identified"] + b["identified"]) / (r1["num_mated"] + r2["num_mated"]),
                  "fpir": (a["false_alarms"] + b["false_alarms"]) / (r1[fden] + r2[fden]),
                  "identified": a["identified"] + b["identified"], "false_alarms": a["false_alarms"] + b["false_alarms"]}
    return out


def ijb_1toN(meta: IJBMeta, emb, emb_flip=None, options: IJBOptions = IJBOptions(), gallery: str = "average",
             ranks: Sequence[int] = (1, 5, 10), fpirs: Sequence[float] = IJB_FPIRS,
             lists: Optional[Dict] = None, tpir_rule: str = "open_set") -> Dict:
    """The IJB 1:N protocol with mixed-media probes against ``gallery``.

    ``gallery``: ``"G1"`` or ``"G2"`` (open set: probes of the other gallery are non-mated),
    ``"both"`` (one gallery of G1 and G2 together: closed set, so the open-set TPIR@FPIR is empty),
    or ``"average"`` (G1 and G2 each in turn, each with its own thresholds).  IJB-B's S1/S2 are
    G1/G2.  In ``"average"`` the two galleries are *pooled*, CMC and TPIR alike: each is the share
    of all mated searches of both galleries (so a gallery weighs by its number of mated probes),
    and the realised FPIR is the false alarms of both over the false-alarm chances of both
    (non-mated searches; non-mated pairs' probes for the insightface reading).
    ``per_gallery`` keeps each gallery's own figures and thresholds.

    ``tpir_rule`` chooses the reading in ``tpir_at_fpir`` (see :func:`identify_open_set`);
    ``tpir_at_fpir_insightface`` always holds insightface's.  With ``gallery="both"`` the latter is
    the setup of insightface's ``ijb_1n.py`` (G1 and G2 as one gallery, every probe mated).
    """
    if gallery not in GALLERIES:
        raise ValueError(f"gallery must be one of {', '.join(GALLERIES)}, got {gallery!r}")
    if tpir_rule not in TPIR_RULES:
        raise ValueError(f"tpir_rule must be one of {', '.join(TPIR_RULES)}, got {tpir_rule!r}")
    lists = lists or read_ijb_1n(meta)
    pt, psub = lists["probe"]
    wanted = np.concatenate([pt, lists["G1"][0], lists["G2"][0]])
    tids, feats = pool_templates(emb, meta.templates, meta.medias, emb_flip, meta.faceness, options, select=wanted)

    def feats_of(t):
        return feats[_template_index(tids, t, "template")]

    P = feats_of(pt)

    def run(gt, gsub):
        return identify_open_set(P, psub, feats_of(gt), gsub, ranks=ranks, fpirs=fpirs, tpir_rule=tpir_rule)

    base = {"dataset": meta.dataset, "options": options.describe(), "code": options.code, "gallery": gallery,
            "tpir_rule": _RULE_TEXT[tpir_rule], "tpir_rule_insightface": _RULE_TEXT["insightface"]}
    if gallery in ("G1", "G2"):
        r = _summarise_1n(run(*lists[gallery]))
    elif gallery == "both":
        r = _summarise_1n(run(np.concatenate([lists["G1"][0], lists["G2"][0]]),
                              np.concatenate([lists["G1"][1], lists["G2"][1]])))
    else:
        r1, r2 = run(*lists["G1"]), run(*lists["G2"])
        n1, n2 = r1["num_mated"], r2["num_mated"]
        cmc = {k: (r1["cmc"][k] * n1 + r2["cmc"][k] * n2) / (n1 + n2) for k in r1["cmc"]}
        r = {"cmc": cmc, **{f"top{k}": v for k, v in cmc.items()},
             "tpir_at_fpir": _pool_levels(r1, r2, "tpir_at_fpir", tpir_rule),
             "tpir_at_fpir_insightface": _pool_levels(r1, r2, "tpir_at_fpir_insightface", "insightface"),
             "num_probes": r1["num_probes"], "num_mated": n1 + n2,
             "num_non_mated": r1["num_non_mated"] + r2["num_non_mated"],
             "average_rule": "pooled over G1 and G2: CMC and TPIR are shares of all mated searches of both, "
                             "FPIR of all false-alarm chances of both",
             "per_gallery": {"G1": _summarise_1n(r1), "G2": _summarise_1n(r2)}}
    r.update(base)
    return r
