"""``facemargin bench`` (the main job) and ``facemargin glyphs`` (build a glyph identity set)."""
from __future__ import annotations

import shlex
import sys


def _list(text, cast=str):
    return [cast(s.strip()) for s in text.split(",") if s.strip()] if text else None


def register(sub) -> None:
    b = sub.add_parser(
        "bench", help="the main job: every head on thousands of glyph identities, TAR at low FAR over seeds",
        description="Train every head with one small batch-norm CNN on the training identities of a glyph set "
                    "(characters as identities, fonts as photos, degraded while training), evaluate all-vs-all "
                    "TAR@FAR, pair accuracy, EER and rank-1 on the unseen identities, and write results.json, "
                    "report.md and figures. Default budget (make demo): softmax, CosFace, ArcFace, SphereFace, ATL "
                    "(direct) and MagFace, one seed, 1500 steps of batch 256. --full: every head and loss, three "
                    "seeds, 1500 steps. Re-running the "
                    "same command continues an interrupted bench. --dataset fashion-mnist runs the Fashion-MNIST "
                    "bench of every loss instead.",
    )
    b.add_argument("--out", default="runs/bench", help="output folder (default runs/bench)")
    b.add_argument("--full", action="store_true", help="every head and loss, 3 seeds, 1500 steps of batch 256")
    b.add_argument("--data", help="glyph set folder (default runs/glyphs-hangul, built when absent); "
                                  "with --dataset fashion-mnist: the Fashion-MNIST folder")
    b.add_argument("--heads", "--losses", dest="heads",
                   help="comma-separated bench entries; the groups 'paper' (each head at its paper's settings, and "
                        "CurricularFace with warm-up and clipping) and 'atl-ablation' (the ATL grid: both recipes, "
                        "m 2/4, lambda_min 3/5, semi-hard on/off) stand for their entries, which --full leaves out")
    b.add_argument("--seeds", help="comma-separated seeds (default: the budget's)")
    b.add_argument("--steps", type=int, help="training steps per run (overrides the budget)")
    b.add_argument("--batch", type=int, help="batch size (overrides the budget)")
    b.add_argument("--fashion-data", help="Fashion-MNIST folder for the 2-D/3-D feature figures")
    b.add_argument("--device", default="auto", help="auto, cpu or cuda")
    b.add_argument("--no-figures", action="store_true", help="skip the figures and the feature runs")
    b.add_argument("--dataset", choices=["glyphs", "fashion-mnist"], default="glyphs")
    b.add_argument("--quick", action="store_true", help="fashion-mnist: the smaller budget")
    b.add_argument("--manifest", help="build the glyph set from this manifest.json (e.g. the committed report's "
                                      "docs/results/bench/glyph_set_manifest.json); faces whose fonts are missing "
                                      "here are left out and named in the report")
    b.add_argument("--reuse", action="append", help="a results.json whose runs count as finished where they match a "
                                                    "job exactly (same set, budget, seed and head settings), e.g. "
                                                    "docs/results/bench/results.json; repeatable")
    b.add_argument("--finished-only", action="store_true",
                   help="train nothing: write the results and report of the finished runs, naming those still to run")
    b.add_argument("--reference", help="a results.json over several seeds (e.g. docs/results/bench/results.json): "
                                       "the report marks each difference to softmax as within or beyond its spread")
    b.set_defaults(func=run_bench_cli)

    g = sub.add_parser(
        "glyphs", help="build a glyph identity set (characters as identities, fonts as photos)",
        description="Render every character of a script in every installed font that covers it; drop identical "
                    "renderings; split the identities into training and unseen ones; write train.rec/train.idx/"
                    "property, the unseen identities' degraded images (unseen/, unseen.lst), a pair pack "
                    "unseen.bin, and manifest.json, from which --manifest rebuilds the same set.",
    )
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--script", default="hangul", choices=["hangul", "hanzi", "kana", "latin"])
    g.add_argument("--chars", help="explicit characters (identities) instead of a script")
    g.add_argument("--fonts", action="append", help="font folder or file to search (repeatable; default: system fonts)")
    g.add_argument("--size", type=int, default=32, help="image side in pixels")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--test-fraction", type=float, default=0.2)
    g.add_argument("--min-fonts", type=int, default=8)
    g.add_argument("--max-test-per-identity", type=int, default=20)
    g.add_argument("--pairs", type=int, default=6000)
    g.add_argument("--manifest", help="rebuild the set described by this manifest.json")
    g.add_argument("--workers", type=int, help="rendering processes (default: the CPU count)")
    g.set_defaults(func=run_glyphs_cli)


def _command_line() -> str:
    return "facemargin " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def run_bench_cli(args) -> int:
    if args.dataset == "fashion-mnist":
        from .fashion import run_bench

        run_bench(out=args.out, quick=args.quick, data_root=args.data, losses=_list(args.heads), steps=args.steps,
                  seed=(_list(args.seeds, int) or [0])[0], device=args.device, figures=not args.no_figures,
                  args_line=_command_line())
        return 0
    from .glyphs import run_main_bench

    run_main_bench(out=args.out, full=args.full, set_dir=args.data, heads=_list(args.heads),
                   seeds=_list(args.seeds, int), steps=args.steps, batch=args.batch, device=args.device,
                   figures=not args.no_figures, fashion_root=args.fashion_data,
                   args_line=_command_line(), manifest=args.manifest, reference=args.reference, reuse=args.reuse,
                   finished_only=args.finished_only)
    return 0


def run_glyphs_cli(args) -> int:
    from ..data.glyphs import build_glyph_set

    m = build_glyph_set(args.out, script=args.script, chars=args.chars, font_dirs=args.fonts, size=args.size,
                        seed=args.seed, test_fraction=args.test_fraction, min_fonts=args.min_fonts,
                        max_test_per_identity=args.max_test_per_identity, num_pairs=args.pairs,
                        manifest=args.manifest, workers=args.workers)
    c = m["counts"]
    print(f"[glyphs] {args.out}: {c['identities']} identities x {c['faces']} faces -> {c['images']} images "
          f"({c['duplicates_dropped']} duplicates dropped); {c['train_images']} training, {c['test_images']} unseen, "
          f"{c['pairs']} pairs")
    return 0
