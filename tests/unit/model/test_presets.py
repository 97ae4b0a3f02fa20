"""Presets and `describe`: names, overrides, and plausible sizes for every preset."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lmforge.model import PRESETS, ModelConfig, Transformer, describe, flops_per_token
from lmforge.model.info import format_description


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValidationError, match="unknown preset 'foo'; valid presets: tiny, small, base-768, "
                                              "large-1024, xl-1536"):
        ModelConfig(preset="foo")


def test_explicit_fields_override_the_preset_and_round_trip():
    config = ModelConfig(preset="base-768", n_layers=2, dropout=0.0)
    assert (config.d_model, config.n_layers, config.dropout, config.vocab_size) == (768, 2, 0.0, 32000)
    assert ModelConfig.model_validate(config.model_dump()) == config
    assert ModelConfig.model_validate(config.model_dump(exclude={"preset"})).n_layers == 2


def test_head_dims_are_checked():
    with pytest.raises(ValidationError, match="divisible by n_heads"):
        ModelConfig(d_model=100, n_heads=3)
    with pytest.raises(ValidationError, match="even head dim"):
        ModelConfig(d_model=12, n_heads=4, position="rotary")


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_describes_on_meta(name):
    config = ModelConfig(preset=name)
    info = describe(config, batch_size=2)
    assert info["parameters"] == info["non_embedding_parameters"] + config.vocab_size * config.d_model
    assert info["training_state_bytes"] == 16 * info["parameters"]
    assert info["flops_per_token"] > 6 * info["non_embedding_parameters"]
    assert info["activation_bytes"] > 0
    assert name in format_description(info)


def test_base_768_size_matches_the_guide():
    rotary = describe(ModelConfig(preset="base-768", position="rotary"))
    assert 84e6 < rotary["non_embedding_parameters"] < 86e6
    assert rotary["embedding_parameters"] == 32000 * 768
    xl = describe(ModelConfig(preset="base-768"))
    assert xl["position_parameters"] == 12 * (768 * 768 + 2 * 768)
    assert xl["non_embedding_parameters"] == rotary["non_embedding_parameters"] + xl["position_parameters"]


def test_meta_counts_equal_a_real_model():
    config = ModelConfig(preset="tiny", position="absolute")
    assert describe(config)["parameters"] == Transformer(config).num_parameters()


def test_xl_costs_more_flops_than_rotary():
    assert flops_per_token(ModelConfig(preset="small")) > flops_per_token(ModelConfig(preset="small",
                                                                                          position="rotary"))
