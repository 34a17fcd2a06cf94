"""Sections of the main job's report that read a run beyond its own table: against a reference
report over several seeds, by the set's fonts, by image quality, the heads at their papers'
settings and the ATL ablation grid."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from .protocol import ATL_ABLATION, HEADS, LAMBDA_AT, PAPER_SOURCES, PAPER_TAG, QUALITY_AWARE, S

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


# ---------------------------------------------------------------------------------------------
# the heads at their papers' settings, and the ATL ablation grid: pure functions of result rows

#: the FARs of the two tables below
TABLE_FARS = ("0.001", "0.0001")


def seed_stat(values: Sequence[Optional[float]]) -> Optional[Dict]:
    """Mean, sample std (ddof=1; 0 with one value) and count of the values that are not None."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if not len(v):
        return None
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}


def _by_head(rows: List[Dict]) -> Dict[str, List[Dict]]:
    by: Dict[str, List[Dict]] = {}
    for r in rows:
        by.setdefault(r["head"], []).append(r)
    return by


def _tar(runs: List[Dict], far: str) -> Optional[Dict]:
    return seed_stat([r["tar_at_far"].get(far) for r in runs])


def _cell(stat: Optional[Dict]) -> str:
    if not stat:
        return "n/a"
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}" if stat["n"] > 1 else f"{stat['mean']:.3f}"


def _delta(a: Optional[Dict], b: Optional[Dict]) -> str:
    return f"{a['mean'] - b['mean']:+.3f}" if a and b else "n/a"


def _value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def settings_text(config: Dict) -> str:
    """A row's loss parameters as ``k=v`` (the λ schedule's gamma left out), then its optimiser
    overrides after a semicolon."""
    params = {k: v for k, v in config["loss"].get("params", {}).items() if k != "gamma"}
    text = ", ".join(f"{k}={_value(v)}" for k, v in params.items()) or "defaults"
    for extra in ("optim", "data"):
        values = config.get(extra) or {}
        if values:
            text += "; " + ", ".join(f"{k}={_value(v)}" for k, v in values.items())
    return text


def paper_table(rows: List[Dict], fars: Sequence[str] = TABLE_FARS) -> List[str]:
    """The table of every head that ran at its paper's settings (``<head>@paper``) or as another
    variant of its shared entry (``<head>@<tag>``): the shared row first, then each variant with its
    difference of the means to the shared row (``n/a`` where either did not run)."""
    by = _by_head(rows)
    variants: Dict[str, List[str]] = {}
    for h in by:
        if "@" in h:
            variants.setdefault(h.split("@")[0], []).append(h)
    if not any(h.endswith(PAPER_TAG) for vs in variants.values() for h in vs):
        return []
    order = [b for b in PAPER_SOURCES if b in variants] + sorted(b for b in variants if b not in PAPER_SOURCES)
    far_cols = [f"{float(f):.0e}" for f in fars]
    lines = ["| head | row | settings | source | seeds | " + " | ".join(f"TAR@{f}" for f in far_cols) + " | "
             + " | ".join(f"Δ TAR@{f}" for f in far_cols) + " |",
             "|---|---|---|---|---|" + "---|" * (2 * len(fars))]
    for base in order:
        shared = by.get(base)
        base_tars = [_tar(shared, f) if shared else None for f in fars]
        if shared:
            lines.append(f"| {base} | shared s={S:g} | {settings_text(shared[0]['config'])} | the bench's shared "
                         f"scale | {len(shared)} | " + " | ".join(_cell(s) for s in base_tars) + " | "
                         + " | ".join("(baseline)" for _ in fars) + " |")
        else:
            lines.append(f"| {base} | shared s={S:g} | not run | | 0 | " + " | ".join("n/a" for _ in fars) + " | "
                         + " | ".join("n/a" for _ in fars) + " |")
        for v in sorted(variants[base], key=lambda h: (not h.endswith(PAPER_TAG), h)):
            runs = by[v]
            paper = v.endswith(PAPER_TAG)
            label = "paper settings" if paper else f"shared s={S:g}, {v.split('@', 1)[1]}"
            source = PAPER_SOURCES.get(base, "n/a") if paper else "diagnosis"
            tars = [_tar(runs, f) for f in fars]
            lines.append(f"| {base} | {label} | {settings_text(runs[0]['config'])} | {source} | {len(runs)} | "
                         + " | ".join(_cell(s) for s in tars) + " | "
                         + " | ".join(_delta(a, b) for a, b in zip(tars, base_tars)) + " |")
    return lines


def reaches(stat: Optional[Dict], ref: Optional[Dict]) -> str:
    """Whether ``stat`` reaches ``ref``: *above* it (the mean beyond ``ref``'s mean + std), *within
    its spread* (at most one std of ``ref`` below or above), or *below*; with the difference of
    the means."""
    if not stat or not ref:
        return "n/a"
    d = stat["mean"] - ref["mean"]
    if d > ref["std"]:
        return f"yes: above ({d:+.3f})"
    if d >= -ref["std"]:
        return f"yes: within its spread ({d:+.3f})"
    return f"no: below ({d:+.3f})"


def atl_ablation_table(rows: List[Dict], far: str = KEY_FAR, fars: Sequence[str] = TABLE_FARS) -> List[str]:
    """The table of the ATL grid points that ran (in the grid's order) and SphereFace's row, each
    point marked by whether it reaches SphereFace at ``far`` (:func:`reaches`)."""
    by = _by_head(rows)
    points = [n for n in ATL_ABLATION if n in by]
    if not points:
        return []
    sph = by.get("sphereface")
    sph_tar = _tar(sph, far) if sph else None
    far_cols = [f"{float(f):.0e}" for f in fars]
    lines = ["| entry | recipe | m | λ_min | semi-hard | " + " | ".join(f"TAR@{f}" for f in far_cols)
             + f" | EER | seeds | reaches SphereFace at FAR {float(far):.0e} |",
             "|---|---|---|---|---|" + "---|" * len(fars) + "---|---|---|"]

    def cells(runs):
        return (" | ".join(_cell(_tar(runs, f)) for f in fars) + f" | {_cell(seed_stat([r['eer'] for r in runs]))} | "
                f"{len(runs)}")

    for n in points:
        p = ATL_ABLATION[n]
        verdict = reaches(_tar(by[n], far), sph_tar) if sph else "n/a (SphereFace not run)"
        lines.append(f"| {n} | {p['recipe']} | {p['m']} | {p['lambda_min']} | {'on' if p['semihard'] else 'off'} | "
                     f"{cells(by[n])} | {verdict} |")
    if sph:
        params = sph[0]["config"]["loss"].get("params", {})
        lines.append(f"| sphereface | SphereFace | {params.get('m', 4)} | {_value(params.get('lambda_min', 5))} | "
                     f"n/a | {cells(sph)} | (the reference) |")
    return lines


def paper_lines(result: Dict) -> List[str]:
    """The report's section on the heads at their papers' settings (empty when none ran)."""
    table = paper_table(result["rows"])
    if not table:
        return []
    return ["## Paper hyper-parameters", "",
            f"The main table trains every scale-based head at the shared s = {S:g}. The rows *paper settings* train "
            "the same head at its constructor's defaults, which follow the head's paper or official code "
            "(source column); a *diagnosis* row changes only what its settings name after the semicolon. TAR is "
            "the mean ± sample std over the seeds that ran (seeds column); Δ is a row's mean minus the shared row's.",
            ""] + table + [""]


def atl_ablation_lines(result: Dict) -> List[str]:
    """The report's ATL ablation section (empty unless a grid point outside the default list ran)."""
    ran = {r["head"] for r in result["rows"]}
    if not any(n in ran and n not in HEADS for n in ATL_ABLATION):
        return []
    return ["## ATL ablation", "",
            "The Angular Triplet Loss over its grid: both recipes (direct: triplet and semi-hard mask from the first "
            f"step; step: SphereFace first, then the switches on), margin m, the λ floor λ_min (reached at "
            f"{LAMBDA_AT:.0%} of the steps) and the semi-hard mask on or off; the easy triplet is on everywhere. A "
            f"point *reaches* SphereFace when its mean TAR at FAR {float(KEY_FAR):.0e} is at least SphereFace's mean "
            "minus SphereFace's std over seeds. Values are mean ± sample std over the seeds that ran.",
            ""] + atl_ablation_table(result["rows"]) + [""]
