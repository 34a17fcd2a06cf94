.PHONY: setup demo test bench-quick
setup:
	bash scripts/setup.sh

# the main job: train and evaluate every loss on Fashion-MNIST, report in runs/bench/
demo: setup
	.venv/bin/facemargin bench --out runs/bench

bench-quick: setup
	.venv/bin/facemargin bench --quick --out runs/bench-quick

test: setup
	.venv/bin/python -m pytest tests
