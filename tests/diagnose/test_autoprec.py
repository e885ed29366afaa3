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
