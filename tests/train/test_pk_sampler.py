"""The identity-balanced (PK) batch order: P identities x K images per step, a function of
(seed, step) split across ranks; its settings and its use by the trainer."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from facemargin.train.config import ConfigError, load_config
from facemargin.train.data import build_train_set
from facemargin.train.loop import Trainer
from facemargin.train.schedule import BatchOrder, PKBatchOrder, make_batch_order

from trainutil import tiny_config, write_fashion


def labels_of(counts):
    """Labels with ``counts[c]`` samples of identity ``c``, shuffled (so indices are not grouped)."""
    y = np.repeat(np.arange(len(counts)), counts)
    return torch.from_numpy(y[np.random.default_rng(0).permutation(len(y))])


LABELS = labels_of([6 + c % 5 for c in range(20)])  # 20 identities of 6 to 10 images


def groups(batch, labels, k):
    """The batch's identities, one per run of ``k`` indices (asserting each run is one identity)."""
    y = labels[batch].view(-1, k)
    assert (y == y[:, :1]).all()
    return y[:, 0].tolist()


def test_every_batch_is_p_identities_of_k_distinct_images():
    o = PKBatchOrder(LABELS, batch_size=16, k=4, seed=1)
    assert (o.p, o.per_epoch) == (4, 5)
    for step in range(12):
        b = o(step)
        assert b.dtype == torch.long and len(b) == 16
        ids = groups(b, LABELS, 4)
        assert len(set(ids)) == 4
        assert len(set(b.tolist())) == 16  # every identity has >= 4 images: drawn without replacement


def test_an_epoch_visits_every_identity_once_and_reshuffles():
    o = PKBatchOrder(LABELS, batch_size=20, k=5, seed=0)  # P = 4, 20 identities: 5 steps an epoch
    epochs = [[i for s in range(e * 5, e * 5 + 5) for i in groups(o(s), LABELS, 5)] for e in range(3)]
    for ids in epochs:
        assert sorted(ids) == list(range(20))
    assert epochs[0] != epochs[1]
    # identities that do not fill a last step wait for a later epoch; the rest are distinct
    labels = labels_of([5] * 22)
    o = PKBatchOrder(labels, batch_size=8, k=2)  # P = 4: 5 steps an epoch, 2 identities left out
    first = [i for s in range(o.per_epoch) for i in groups(o(s), labels, 2)]
    assert o.per_epoch == 5 and len(set(first)) == 20 and set(first) <= set(range(22))


def test_the_order_is_a_function_of_seed_and_step_so_resume_is_exact():
    fresh = PKBatchOrder(LABELS, 16, 4, seed=3)
    run = [fresh(s).tolist() for s in range(10)]
    resumed = PKBatchOrder(LABELS, 16, 4, seed=3)  # a run resumed at step 5 never asks for 0..4
    assert [resumed(s).tolist() for s in range(5, 10)] == run[5:]
    again = PKBatchOrder(LABELS, 16, 4, seed=3)
    assert [again(s).tolist() for s in reversed(range(10))][::-1] == run  # query order does not matter
    other = PKBatchOrder(LABELS, 16, 4, seed=4)
    assert [other(s).tolist() for s in range(10)] != run


def test_rank_shares_are_disjoint_and_make_the_global_batch():
    single = PKBatchOrder(LABELS, 16, 4, seed=2)
    ranks = [PKBatchOrder(LABELS, 16, 4, seed=2, rank=r, world=2) for r in range(2)]
    for step in (0, 3, 7, 11):
        parts = [o(step) for o in ranks]
        assert all(len(p) == 8 for p in parts)
        flat = torch.cat(parts).tolist()
        assert len(set(flat)) == 16 and flat == single(step).tolist()
        shares = [set(groups(p, LABELS, 4)) for p in parts]  # whole identities on each rank
        assert len(shares[0]) == len(shares[1]) == 2 and not shares[0] & shares[1]


def test_small_identities_are_drawn_with_replacement():
    labels = labels_of([1, 2, 3, 8])
    o = PKBatchOrder(labels, batch_size=16, k=4, seed=0)
    members = {c: set(torch.nonzero(labels == c).flatten().tolist()) for c in range(4)}
    for step in range(6):
        b = o(step).view(4, 4)
        for row in b:
            c = int(labels[row[0]])
            assert set(row.tolist()) <= members[c]
            # every image of the identity before any repeats
            assert len(set(row.tolist())) == min(len(members[c]), 4)


def test_errors_name_the_settings():
    with pytest.raises(ValueError, match=r"train\.batch_size=10.*multiple of data\.pk_images=4"):
        PKBatchOrder(LABELS, 10, 4)
    with pytest.raises(ValueError, match=r"data\.pk_images=1 must be at least 2"):
        PKBatchOrder(LABELS, 10, 1)
    with pytest.raises(ValueError, match=r"20 identities, fewer than the P = .* 128 / 4 = 32"):
        PKBatchOrder(LABELS, 128, 4)
    with pytest.raises(ValueError, match="world size 3"):
        PKBatchOrder(LABELS, 16, 4, world=3)
    with pytest.raises(ValueError, match="empty"):
        PKBatchOrder([], 16, 4)


class Unlabelled:
    num_classes = 2

    def __len__(self):
        return 8


def test_make_batch_order_follows_the_data_settings():
    class Labelled(Unlabelled):
        labels = np.arange(8) % 2

    assert isinstance(make_batch_order({"sampler": "random"}, Unlabelled(), 4), BatchOrder)
    assert isinstance(make_batch_order({}, Unlabelled(), 4), BatchOrder)  # configs from before the setting
    pk = make_batch_order({"sampler": "pk", "pk_images": 2}, Labelled(), 4, seed=1)
    assert isinstance(pk, PKBatchOrder) and (pk.p, pk.k) == (2, 2)
    with pytest.raises(ValueError, match="data.sampler=pk needs the training labels.*Unlabelled"):
        make_batch_order({"sampler": "pk", "pk_images": 2}, Unlabelled(), 4)
    with pytest.raises(ValueError, match="unknown data.sampler 'balanced'; choose random or pk"):
        make_batch_order({"sampler": "balanced"}, Labelled(), 4)


def test_config_checks_the_sampler_settings():
    cfg = load_config(None, ["data.sampler=pk", "data.pk_images=8"])
    assert (cfg["data"]["sampler"], cfg["data"]["pk_images"]) == ("pk", 8)
    assert load_config(None)["data"]["sampler"] == "random"
    with pytest.raises(ConfigError, match="'data.sampler' must be one of random, pk, got 'balanced'"):
        load_config(None, ["data.sampler=balanced"])
    with pytest.raises(ConfigError, match="'data.pk_images' must be at least 2"):
        load_config(None, ["data.pk_images=1"])


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_fashion(tmp_path_factory.mktemp("fashion"), classes=range(10), train_per_class=10, test_per_class=6)


def test_the_trainer_draws_pk_batches(data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path, steps=2, loss={"name": "triplet", "params": {"mining": "semihard"}},
                      data={"sampler": "pk", "pk_images": 4})
    train_set = build_train_set(cfg["data"])
    tr = Trainer(cfg, train_set, log=lambda *a: None)
    assert isinstance(tr.order, PKBatchOrder) and (tr.order.p, tr.order.k) == (3, 4)  # batch 12
    for step in range(2):
        assert len(set(groups(tr.order(step), train_set.labels, 4))) == 3
    tr.fit()
    assert tr.step == 2 and len(tr.history) == 2


def test_the_trainer_reads_file_backed_sets_in_pk_order(data_root, tmp_path):
    """A set without ``get_batch`` goes through the DataLoader, whose batches follow the PK order."""
    class FileLike(torch.utils.data.Dataset):
        def __init__(self, base):
            self.base, self.labels, self.num_classes = base, base.labels.numpy(), base.num_classes

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            return self.base.images[i], int(self.base.labels[i])

    cfg = tiny_config(data_root, tmp_path, steps=2, data={"sampler": "pk", "pk_images": 2})
    ds = FileLike(build_train_set(cfg["data"]))
    tr = Trainer(cfg, ds, log=lambda *a: None)
    _, y = tr._batch()
    assert y.tolist() == ds.labels[tr.order(0).numpy()].tolist()
    assert (y.view(6, 2)[:, 0] == y.view(6, 2)[:, 1]).all()


def test_the_trainer_refuses_pk_without_labels(data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path, steps=2, data={"sampler": "pk"})
    ds = build_train_set(cfg["data"])
    del ds.labels  # an in-memory set that cannot tell its classes
    ds.get_batch = lambda idx: (ds.images[idx], torch.zeros(len(idx), dtype=torch.long))
    with pytest.raises(ValueError, match="data.sampler=pk needs the training labels"):
        Trainer(cfg, ds, log=lambda *a: None)
