.PHONY: setup demo test bench-quick bench-full bench-extra
setup:
	bash scripts/setup.sh

# the main job: the core heads on the committed report's glyph identity set (built once from its
# manifest), one seed at the full budget, report in runs/bench/ held against the committed report;
# bench-full: every head and loss, three seeds (resumable: re-run to continue)
demo: setup
	.venv/bin/facemargin bench --out runs/bench --manifest docs/results/bench/glyph_set_manifest.json \
		--reference docs/results/bench/results.json

bench-full: setup
	nice .venv/bin/facemargin bench --full --out runs/bench-full --manifest docs/results/bench/glyph_set_manifest.json \
		--reuse docs/results/bench/results.json

# bench-extra: each scale-based head at its paper's settings, CurricularFace and SphereFace2 with warm-up and clipping, and
# the ATL ablation grid, seed 0 at the full budget; the shared-scale heads and SphereFace the report's
# tables compare them with are listed too, and come from the committed runs (--reuse), not trained again
EXTRA_BASES = sphereface,cosface,arcface,combined,adaface,magface,curricularface,subcenter_arcface,elasticarcface,elasticcosface,uniface,sphereface2
bench-extra: setup
	nice .venv/bin/facemargin bench --full --out runs/bench-extra --manifest docs/results/bench/glyph_set_manifest.json \
		--heads paper,atl-ablation,$(EXTRA_BASES) --seeds 0 \
		--reuse docs/results/bench/results.json --reuse docs/results/bench/extra/results.json

# every loss on Fashion-MNIST (open-set pairs of unseen classes), small budget
bench-quick: setup
	.venv/bin/facemargin bench --dataset fashion-mnist --quick --out runs/bench-quick

test: setup
	.venv/bin/ruff check src tests benchmarks scripts
	.venv/bin/python -m pytest tests
