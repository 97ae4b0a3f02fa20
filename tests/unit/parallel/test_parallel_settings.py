"""Layouts are checked against the world, the model and the batch before anything starts."""

from __future__ import annotations

import pytest

from lmforge.config import ConfigError
from lmforge.model import ModelConfig
from lmforge.parallel import ParallelSettings, check_layout, stage_layers
from lmforge.parallel.plan import memory_plan

MODEL = ModelConfig(preset="tiny", n_heads=6, d_model=96, d_ff=384, n_layers=3, vocab_size=1200)


def settings(**kw) -> ParallelSettings:
    return ParallelSettings.model_validate(kw)


@pytest.mark.parametrize(("layout", "world", "batch", "message"), [
    ({"tp": 4, "dp_shard": 1}, 4, 8, "tp=4 does not divide n_heads=6"),
    ({"dp_replicate": 2, "dp_shard": 1}, 4, 8, "= 2, but the world size is 4"),
    ({"tp": 3}, 4, 8, "world size 4 is not a multiple of dp_replicate x tp x pp = 3"),
    ({"pp": 4, "dp_shard": 1}, 4, 8, "pp=4 stages need at least 4 layers, the model has n_layers=3"),
    ({"dp_shard": 4}, 4, 6, "batch_size=6 does not split over dp_replicate x dp_shard = 4"),
    ({"pp": 2, "dp_shard": 2, "microbatches": 3}, 4, 8,
     "gets 4 sequences, which do not split into microbatches=3"),
])
def test_layout_that_does_not_fit_is_named(layout, world, batch, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("+", r"\+")):
        check_layout(settings(**layout), world, MODEL, batch)


def test_a_pruned_layer_whose_width_tp_does_not_divide_is_named():
    pruned = MODEL.model_copy(update={"layer_heads": [6, 3, 6], "layer_d_ff": [384, 384, 189]})
    with pytest.raises(ConfigError, match="tp=2 does not divide n_heads of layer 1=3"):
        check_layout(settings(tp=2, dp_shard=1), 2, pruned, 8)
    with pytest.raises(ConfigError, match="tp=2 does not divide d_ff of layer 2=189"):
        check_layout(settings(tp=2, dp_shard=1), 2, pruned.model_copy(update={"layer_heads": None}), 8)


def test_dp_shard_fills_the_world():
    resolved = check_layout(settings(tp=2, pp=3), 12, MODEL, 12)
    assert (resolved.dp_shard, resolved.dp, resolved.n_microbatches) == (2, 2, 3)


def test_stages_cover_every_layer_once_earliest_take_the_remainder():
    assert stage_layers(7, 3) == [range(0, 3), range(3, 5), range(5, 7)]
    assert [i for r in stage_layers(12, 4) for i in r] == list(range(12))


def test_plan_single_process_is_the_whole_model_and_tp_divides_the_sharded_part():
    whole = memory_plan(MODEL, settings(dp_shard=1))
    assert [s.parameters for s in whole] == [whole_model_parameters()]
    assert whole[0].optimizer_bytes == 2 * whole[0].param_bytes
    tp = memory_plan(MODEL, settings(tp=2, dp_shard=1))
    replicated = 2 * MODEL.d_model * (2 * MODEL.n_layers + 1) + MODEL.n_layers * (MODEL.d_model * 2)
    assert tp[0].parameters == tp[1].parameters
    assert tp[0].parameters == pytest.approx((whole_model_parameters() - replicated) / 2 + replicated, abs=1)


def whole_model_parameters() -> int:
    from lmforge.model import Transformer

    return Transformer(MODEL).num_parameters()
