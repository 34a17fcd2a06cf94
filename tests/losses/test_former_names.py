"""Former names keep working and say what replaced them: backend= (engine=), BACKENDS (ENGINES),
ShardedHead (sharded_head); the store's entries keep the flat checkpoint layout."""
import pytest
import torch

from facemargin import losses


def test_backend_keyword_is_the_engine_with_a_warning():
    with pytest.warns(DeprecationWarning, match="backend= is the former name of engine="):
        head = losses.build("arcface", embedding_size=4, num_classes=5, backend="plain",
                            backend_options=None)
    assert head.engine.name == "plain" and head.backend == "plain"
    with pytest.warns(DeprecationWarning, match="backend_options= is the former name of engine_options="):
        head = losses.build("cosface", embedding_size=4, num_classes=5, backend_options={"chunk_size": 2})
    assert head.engine_options == {"chunk_size": 2}
    with pytest.raises(ValueError, match="disagree"), pytest.warns(DeprecationWarning):
        losses.build("cosface", embedding_size=4, num_classes=5, engine="fused", backend="plain")
    with pytest.warns(DeprecationWarning, match="former name"):
        loss, _ = losses.margin_cross_entropy(torch.randn(3, 4), torch.randn(5, 4), torch.tensor([0, 1, 4]),
                                              losses.MarginSpec(), backend="plain")
    assert torch.isfinite(loss)


def test_backends_registry_is_the_engines_registry():
    with pytest.warns(DeprecationWarning, match="BACKENDS is the former name"):
        assert losses.BACKENDS is losses.ENGINES


def test_sharded_head_former_name_warns():
    from facemargin.distributed import ShardedHead, is_sharded, sharded_head

    with pytest.warns(DeprecationWarning, match="sharded_head"):
        head = ShardedHead("arcface", 3, 7, seed=1)
    assert is_sharded(head) and not is_sharded(losses.build("arcface", embedding_size=3, num_classes=7))
    assert torch.equal(head.weight, sharded_head("arcface", 3, 7, seed=1).weight)


def test_state_dict_is_flat_and_loads_both_ways():
    head = losses.build("uniface", embedding_size=3, num_classes=4, per_class_bias=True)
    keys = list(head.state_dict())
    assert keys[:2] == ["weight", "bias"]  # the store's entries first, without a prefix
    other = losses.build("uniface", embedding_size=3, num_classes=4, per_class_bias=True)
    other.load_state_dict(head.state_dict())
    assert torch.equal(other.weight, head.weight) and torch.equal(other.bias, head.bias)
    with pytest.raises(RuntimeError, match="Missing key"):
        other.load_state_dict({k: v for k, v in head.state_dict().items() if k != "weight"})


def test_the_head_never_writes_its_store():
    """A training call moves nothing of the store's but the rows the optimizer (or, with the ATL
    switch, the store itself) changes; the head reads a view."""
    head = losses.build("arcface", embedding_size=3, num_classes=4)
    before = {k: v.clone() for k, v in head.store.state_dict().items()}
    head(torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 0])).backward()
    assert all(torch.equal(before[k], v) for k, v in head.store.state_dict().items())
    view = head.store.view(torch.randn(2, 3), torch.tensor([1, 3]), training=True)
    assert view.weight is head.weight and view.cols.tolist() == [1, 3] and view.num_columns == 4
