"""Sections of the main job's report that read a run beyond its own table: against a reference
report over several seeds, by the set's fonts, and by image quality."""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from .protocol import QUALITY_AWARE

KEY_FAR = "0.0001"  # the FAR of the headline comparison


def reference_lines(result: Dict, far: str = KEY_FAR) -> List[str]:
    """The section that holds this run against a reference over several seeds: each head's
    difference to softmax at ``far``, marked within or beyond the reference's seed spread."""
    ref = (result.get("reference") or {}).get("summary") or {}
    summary = result["summary"]
    if "softmax" not in summary or "softmax" not in ref or far not in ref["softmax"]["tar_at_far"]:
        return []
    base, ref_base = summary["softmax"]["tar_at_far"][far]["mean"], ref["softmax"]["tar_at_far"][far]
    path = result["reference"]["path"]
    lines = ["## Against the committed report", "",
             f"TAR at FAR {float(far):.0e} of this run against `{path}` ({len(ref['softmax']['seeds'])}"
             " seeds). Δ is a head's TAR minus softmax's. A difference is *beyond* the reference's seed spread when "
             "|Δ| exceeds the sum of the two heads' standard deviations over the reference's seeds, else *within* it.",
             "", "| head | this run | Δ this run | reference (mean ± std) | Δ reference ± spread | this run's Δ |",
             "|---|---|---|---|---|---|"]
    order = sorted(summary, key=lambda h: -(summary[h]["tar_at_far"].get(far) or {"mean": -1})["mean"])
    for h in order:
        mine = (summary[h]["tar_at_far"].get(far) or {}).get("mean")
        r = ref.get(h, {}).get("tar_at_far", {}).get(far)
        if mine is None:
            continue
        delta = mine - base
        if h == "softmax":
            verdict, ref_delta = "(the baseline)", "0"
        elif r is None:
            verdict, ref_delta = "no reference row", "n/a"
        else:
            spread = r["std"] + ref_base["std"]
            side = "above" if delta > 0 else "below"
            verdict = f"{side} softmax, {'beyond' if abs(delta) > spread else 'within'} the spread"
            ref_delta = f"{r['mean'] - ref_base['mean']:+.3f} ± {spread:.3f}"
        ref_cell = f"{r['mean']:.3f} ± {r['std']:.3f}" if r else "n/a"
        lines.append(f"| {h} | {mine:.3f} | {delta:+.3f} | {ref_cell} | {ref_delta} | {verdict} |")
    return lines + [""]


def set_line(result: Dict) -> str:
    """Which fonts the set was built from, and which of a manifest's faces were missing here."""
    if not result.get("set_manifest"):
        return ""
    missing = result.get("missing_fonts") or []
    if not missing:
        return f" Built from `{result['set_manifest']}`, with every one of its font faces present on this machine."
    return (f" Built from `{result['set_manifest']}`; {len(missing)} of its font faces are not on this machine and "
            f"were left out: {', '.join(m['name'] for m in missing)}.")


#: the rankings of the error-versus-reject table, in its column order
ERC_RANKINGS = ("own norm", "softmax norm", "known quality", "random")


def quality_far(quality: Dict) -> float:
    """The FAR the quality analysis was read at (the same for every run)."""
    return float(next(iter(next(iter(quality.values())).values()))["far"])


def erc_curves(quality: Dict) -> Dict[str, List[Dict]]:
    """The curves drawn: each quality-aware head's embeddings (softmax's when none ran), rejected by
    the head's own norm, by softmax's norm, by the known quality (the first head only) and at random,
    so the rankings compete on the same pairs."""
    heads = [h for h in QUALITY_AWARE if h in quality] or [h for h in ("softmax",) if h in quality]
    curves: Dict[str, List[Dict]] = {}
    for i, h in enumerate(heads):
        for name in ("own norm", "softmax norm", "known quality", "random"):
            if name == "known quality" and i:
                continue
            runs = [a["erc"][name] for a in quality[h].values() if name in a["erc"]]
            if runs:
                curves[f"{h}: {name}"] = runs
    return curves


def quality_lines(result: Dict) -> List[str]:
    """The report's quality section: TAR by stratum and the error-versus-reject areas."""
    quality = result.get("quality") or {}
    if not quality:
        return []
    first = next(iter(next(iter(quality.values())).values()))["strata"]["bins"]
    far = quality_far(quality)
    key = f"{far:g}"
    heads = sorted(quality, key=lambda h: -np.mean([a["strata"]["tar"].get(key) or 0 for a in quality[h].values()]))

    def mean(values):
        v = [x for x in values if x is not None]
        return f"{np.mean(v):.3f}" if v else "n/a"

    cols = [f"q {b['quality_low']:.1f}-{b['quality_high']:.1f}" for b in first]
    lines = ["## By image quality", "",
             "Each unseen image's degradation is known, so its quality is too: the effective resolution "
             "(the down-sampled resolution combined with the blur, in pixels). All-vs-all pairs fall into three "
             "strata of about equal size by the quality of the pair's lower-quality image; TAR is read at the "
             f"threshold that gives FAR {far:g} on all pairs, the one threshold a deployment would use. Mean over seeds.",
             "", "| head | all pairs | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for h in heads:
        runs = list(quality[h].values())
        cells = [mean([a["strata"]["bins"][i]["tar"].get(key) for a in runs]) for i in range(len(cols))]
        lines.append(f"| {h} | {mean([a['strata']['tar'].get(key) for a in runs])} | " + " | ".join(cells) + " |")
    lines += ["", f"Error versus reject: FNMR at the threshold of FMR {far:g} on all pairs, as the lowest-ranked "
              "0-50 % of the images are rejected; the table gives the area under that curve (lower is better). "
              "*own norm* ranks by the head's feature norm, *softmax norm* by softmax's (same seed), *known "
              "quality* by the true degradation (what a perfect quality score would do), *random* at random.",
              "", "| head | " + " | ".join(ERC_RANKINGS) + " |", "|---|" + "---|" * len(ERC_RANKINGS)]
    for h in heads:
        runs = list(quality[h].values())
        lines.append(f"| {h} | " + " | ".join(mean([(a["erc"].get(r) or {}).get("area") for a in runs])
                                              for r in ERC_RANKINGS) + " |")
    return lines + [""]
