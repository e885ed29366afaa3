"""The mixed-precision search: keeps the planted broken layer in high precision, is deterministic and
bounded, and says honestly when the target was not met."""

from __future__ import annotations

import pytest

from msmlp.diagnose.autoprec import search_mixed_precision
from msmlp.diagnose.graph import corrupt_scale, load_model
from msmlp.errors import InputError

BROKEN = "/stages.1/blocks/blocks.0/mlp/fc1/MatMul"


@pytest.fixture(scope="module")
def broken(micro):
    model = load_model(micro("s2mlpv2_micro")["int8"])
    corrupt_scale(model, BROKEN, 0.02)
    return model


def test_search_keeps_the_broken_group_in_high_precision_and_is_deterministic(micro, broken):
    paths = micro("s2mlpv2_micro")
    results = [search_mixed_precision(paths["fp32"], broken, paths["held_out"], 0.999) for _ in range(2)]
    first = results[0]
    assert first.met and first.keep_groups == ["stages.1.blocks.0/mlp"]
    assert BROKEN in first.keep_nodes and first.base_cosine < 0.95
    assert first.sensitivity[0].group == "stages.1.blocks.0/mlp"
    chosen = [c for c in first.configs if c.chosen]
    assert len(chosen) == 1 and chosen[0].cosine >= 0.999 and chosen[0].latency_ms > 0
    assert [c.name for c in first.configs][:2] == ["fp32", "int8"]
    again = results[1]
    assert again.keep_groups == first.keep_groups
    assert [(c.name, c.groups, c.cosine) for c in again.configs] == [
        (c.name, c.groups, c.cosine) for c in first.configs
    ]
    record = first.to_dict()
    assert record["target_met"] and record["keep_groups"] == first.keep_groups and "chosen" in first.table()


def test_search_is_bounded_and_reports_an_unmet_target(micro, broken):
    paths = micro("s2mlpv2_micro")
    result = search_mixed_precision(paths["fp32"], broken, paths["held_out"], 0.99999999, max_configs=2)
    assert len(result.configs) <= 2 + 2  # fp32, int8, then at most max_configs tried
    assert not result.met and "no configuration within 2 tries met" in result.notes[0]
    assert "NOT met" in result.table()


def test_search_refuses_a_meaningless_target(micro):
    paths = micro("s2mlpv2_micro")
    with pytest.raises(InputError, match="--target-cosine 1.5 must be between 0 and 1"):
        search_mixed_precision(paths["fp32"], paths["int8"], paths["held_out"], 1.5)
    with pytest.raises(InputError, match="max configurations 0 must be a positive integer"):
        search_mixed_precision(paths["fp32"], paths["int8"], paths["held_out"], 0.999, max_configs=0)


def test_an_accuracy_budget_on_labels_is_a_target_too(micro, broken):
    """Labels are the FP32 graph's own top-1, so FP32 scores 100 % and the broken INT8 graph loses points;
    a budget of half that loss is met by keeping the broken group, as the cosine target does."""
    from msmlp.diagnose.autoprec import Goal
    from msmlp.diagnose.sensitivity import Evaluator

    paths = micro("s2mlpv2_micro")
    ev = Evaluator(load_model(paths["fp32"]), paths["held_out"], 8, None)
    labels = ev.reference.argmax(1)
    lost = 100 * float((ev.logits(ev.session(broken)).argmax(1) != labels).mean())
    assert lost > 0, "the planted error flips no decision on these inputs"
    goal = Goal(max_drop_points=round(lost / 2, 6), labels=labels)
    result = search_mixed_precision(paths["fp32"], broken, paths["held_out"], None, goal=goal)
    fp32, int8 = result.configs[:2]
    assert fp32.drop_points == 0 and int8.drop_points == pytest.approx(lost) and not int8.meets
    chosen = next(c for c in result.configs if c.chosen)
    assert result.met and chosen.drop_points <= lost / 2 and "stages.1.blocks.0/mlp" in result.keep_groups
    record = result.to_dict()
    assert record["max_accuracy_drop_points"] == goal.max_drop_points and record["target_cosine"] is None
    assert f"labelled top-1 drop <= {goal.max_drop_points} points" in result.table()
    with pytest.raises(InputError, match="5 labels for 16 held-out inputs"):
        short = Goal(max_drop_points=1, labels=labels[:5])
        search_mixed_precision(paths["fp32"], broken, paths["held_out"], None, goal=short)
    with pytest.raises(InputError, match="one target"):
        Goal(cosine=0.99, max_drop_points=1.0, labels=labels)
