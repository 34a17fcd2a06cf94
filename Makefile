.PHONY: setup demo test bench-quick bench-full
setup:
	bash scripts/setup.sh

# the main job: every head on the glyph identity set (built once into runs/glyphs-hangul), one
# seed, report in runs/bench/; bench-full: every head and loss, three seeds (resumable: re-run to continue)
demo: setup
	.venv/bin/facemargin bench --out runs/bench

bench-full: setup
	nice .venv/bin/facemargin bench --full --out runs/bench-full

# every loss on Fashion-MNIST (open-set pairs of unseen classes), small budget
bench-quick: setup
	.venv/bin/facemargin bench --dataset fashion-mnist --quick --out runs/bench-quick

test: setup
	.venv/bin/ruff check src tests benchmarks scripts
	.venv/bin/python -m pytest tests
