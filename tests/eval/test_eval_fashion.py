"""Open-set evaluation on Fashion-MNIST (:class:`facemargin.eval.fashion.FashionEval`)."""
import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facemargin.eval.fashion import FashionEval
from facemargin.models import build

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from trainutil import write_fashion  # noqa: E402


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory):
    root = write_fashion(tmp_path_factory.mktemp("fashion"), train_per_class=6, test_per_class=5, seed=3)
    return FashionEval(str(root), (0, 1, 2, 3, 4, 5), (6, 7, 8, 9), num_pairs=40, seed=0, gallery_size=12)


def test_open_set_images_are_the_unseen_classes_and_the_gallery_is_a_seeded_share(evaluator):
    assert set(np.unique(evaluator.open_labels).tolist()) == {6, 7, 8, 9}
    assert evaluator.open_images.shape == (20, 1, 28, 28)
    assert len(evaluator.gallery_labels) == 12 and set(evaluator.gallery_labels.tolist()) <= set(range(6))
    assert sorted(evaluator.closed_labels.tolist()) == sorted(np.repeat(np.arange(6), 5).tolist())
    tampered = copy.copy(evaluator)
    tampered.open_labels = np.concatenate([evaluator.open_labels, [0]])
    with pytest.raises(RuntimeError, match="leak"):
        tampered.leak_check()


def test_scores_a_model(evaluator):
    torch.manual_seed(0)
    model = build("lenetpp", embedding_size=8, width=0.25).eval()
    quick = evaluator(model)
    assert set(quick) == {"accuracy", "accuracy_std", "auc", "eer"} and 0 <= quick["accuracy"] <= 1
    full = evaluator(model, full=True)
    assert 0 <= full["closed_set_accuracy"] <= 1
    assert full["open_embeddings"].shape == (20, 8) and full["gallery_embeddings"].shape == (12, 8)
    assert set(evaluator.raw_pixel_baseline()) == {"centred pixels", "0-255 intensities"}
