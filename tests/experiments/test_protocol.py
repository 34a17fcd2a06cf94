"""The main job's protocol: the heads it runs."""
from facemargin import losses
from facemargin.experiments import protocol


def test_every_newer_head_is_a_registered_loss():
    """The newer heads are always run: each of them must be a loss the registry builds."""
    assert set(protocol.NEWER_HEADS) <= set(losses.available())


def test_available_heads_are_the_demo_or_full_list_then_the_newer_heads():
    assert protocol.available_heads(False) == protocol.DEMO_HEADS + protocol.NEWER_HEADS
    assert protocol.available_heads(True) == list(protocol.HEADS) + protocol.NEWER_HEADS
