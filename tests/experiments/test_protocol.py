"""The main job's protocol: the heads it runs."""
from facemargin import losses
from facemargin.experiments import protocol


def test_every_newer_head_is_a_registered_loss():
    """The newer heads are always run: each of them must be a loss the registry builds."""
    assert set(protocol.NEWER_HEADS) <= set(losses.available())


def test_the_demo_runs_the_core_heads_and_a_quality_aware_one_and_full_runs_everything():
    demo = protocol.available_heads(False)
    assert demo == protocol.DEMO_HEADS
    assert {"softmax", "cosface", "arcface", "sphereface", "atl-direct"} <= set(demo)
    assert set(demo) & set(protocol.QUALITY_AWARE)
    assert protocol.available_heads(True) == list(protocol.HEADS) + protocol.NEWER_HEADS


def test_the_demo_budget_is_the_full_budget_with_one_seed():
    demo, full = protocol.BUDGETS["demo"], protocol.BUDGETS["full"]
    assert (demo["steps"], demo["batch"]) == (full["steps"], full["batch"])
    assert demo["seeds"] == full["seeds"][:1]
