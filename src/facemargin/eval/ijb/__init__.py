"""IJB-B and IJB-C template protocols: 1:1 verification and 1:N identification.

The layout is the one insightface distributes (``IJB_release/IJBC``), with ``ds`` = ``ijbb`` or
``ijbc``::

    ROOT/meta/<ds>_face_tid_mid.txt            image template_id media_id       (one line per image)
    ROOT/meta/<ds>_template_pair_label.txt     template_1 template_2 label      (1 = same subject)
    ROOT/meta/<ds>_name_5pts_score.txt         image x1 y1 ... x5 y5 faceness   (same images, same order)
    ROOT/loose_crop/<image>                    the face crops the landmarks refer to
    ROOT/meta/ijbc_1N_gallery_G1.csv, ..._G2.csv, ijbc_1N_probe_mixed.csv     (1:N; IJB-B: ijbb_1N_gallery_S1.csv,
                                                                              ..._S2.csv, ijbb_1N_probe_mixed.csv)

``ROOT`` may also be the folder above (``IJB_release``) holding ``IJBB/`` and ``IJBC/``.

The protocol, step by step (as insightface's ``eval_ijbc.py`` computes it):

1. **Alignment**: each crop is warped to the arcface 5-point template (112x112 for the usual
   backbones) by a least-squares similarity transform, then normalised like the training images.
2. **Image feature**: ``f(img) + f(flipped img)`` (flip on) or ``f(img)`` (flip off), **not**
   L2-normalised, so the feature norm weights the image in the template (norm weighting on; off
   divides by the norm), multiplied by the detector's faceness score (faceness weighting on).
3. **Template**: the image features of one media (the frames of one video, or a single still) are
   averaged; the media features of a template are summed; the sum is L2-normalised.
4. **1:1 score**: the cosine of the two template features.  TAR is reported at FAR 1e-6 ... 1e-1,
   read at the ROC point whose FAR is nearest each level on the ROC that scikit-learn returns by
   default, as the published tables are (:func:`facemargin.eval.roc.tar_at_far_nearest`); the
   conservative reading (largest TAR with FAR at most the level) is reported beside it.
5. **1:N**: probes are the mixed-media probe templates; the gallery is G1, G2 (IJB-B: S1, S2), both
   together, or each one in turn with the two results pooled (CMC and TPIR both count every
   mated search of the two galleries once).  See :func:`identify_open_set` for the ranks and the
   TPIR@FPIR rule: FPIR ``f`` allows ``floor(f N)`` of the ``N`` non-mated probes to alarm, a
   search alarming when its best score is above the threshold, and TPIR counts the mated probes
   found at rank 1 above it.

   This open-set reading is not the one of insightface's ``recognition/_evaluation_/ijb/ijb_1n.py``.
   That script searches every probe in G1 and G2 together (every probe is mated), takes the
   threshold from all non-mated pairs (each probe against every gallery template of another
   subject, not one best score per non-mated probe): the ``ceil(f Q)``-th largest of those
   scores, ``Q`` the number of probes; and counts a mated probe when its own score is above the
   threshold, with no rank-1 condition.  Its top-k ranks break ties in sort order where this
   package counts them against the probe.  ``tpir_rule="insightface"`` gives that reading, and
   the results always carry it as ``tpir_at_fpir_insightface``.

Embeddings are computed once per model and image list and cached as ``.npy`` (plain and flipped
separately, so flip on/off needs no second pass); pooling and pair scoring are vectorised.

The modules, by step:

* :mod:`.meta` - finding the set and reading its image lists, landmarks, pairs and 1:N files;
* :mod:`.images` - the aligned crops and their (cached) embeddings;
* :mod:`.templates` - image features, template pooling and pair scoring;
* :mod:`.verification` - the 1:1 metrics of template-pair scores;
* :mod:`.identification` - the 1:N search, CMC and TPIR at FPIR;
* :mod:`.protocol` - the two protocols end to end, given per-image embeddings.
"""
from __future__ import annotations

from .identification import IJB_FPIRS, TPIR_RULES, identify_open_set
from .images import IJBImages, embed_ijb, model_fingerprint
from .meta import DATASETS, IJBMeta, check_images, find_ijb_root, read_ijb, read_ijb_1n
from .protocol import GALLERIES, ijb_1to1, ijb_1toN
from .templates import IJBOptions, image_features, pool_templates, score_pairs
from .verification import verification_1to1

__all__ = [
    "IJBMeta",
    "IJBOptions",
    "find_ijb_root",
    "read_ijb",
    "read_ijb_1n",
    "check_images",
    "image_features",
    "pool_templates",
    "score_pairs",
    "verification_1to1",
    "identify_open_set",
    "ijb_1to1",
    "ijb_1toN",
    "IJBImages",
    "embed_ijb",
    "GALLERIES",
    "TPIR_RULES",
    "model_fingerprint",
]
