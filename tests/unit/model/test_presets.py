"""Presets and `describe`: names, overrides, and sizes and FLOPs pinned to hand-derived formulas."""

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


def hand_counts(c: ModelConfig) -> dict[str, int]:
    """Parameters of the architecture in xl.py / positions.py, counted by hand.

    D = d_model, F = d_ff, L = n_layers, V = vocab_size.
    - token embedding V·D; the LM head is tied to it (counted once, as an embedding);
    - absolute only: a learned (seq_len + mem_len)·D position table, also an embedding;
    - per layer: two LayerNorms 2·2D; q, k, v, o projections with bias 4·(D² + D);
      MLP D·F + F + F·D + D; xl only: W_r (D², no bias) and the u, v biases (2D);
    - the final LayerNorm 2D.
    """
    d, f, n_layers = c.d_model, c.d_ff, c.n_layers
    position = n_layers * (d * d + 2 * d) if c.position == "xl" else 0
    per_layer = 4 * d + 4 * (d * d + d) + (2 * d * f + f + d)
    embedding = c.vocab_size * d + (c.context_len * d if c.position == "absolute" else 0)
    non_embedding = n_layers * per_layer + position + 2 * d
    return {"parameters": embedding + non_embedding, "non_embedding_parameters": non_embedding,
            "embedding_parameters": embedding,
            "position_parameters": position if c.position == "xl" else c.context_len * d if
            c.position == "absolute" else 0}


def hand_flops(c: ModelConfig) -> float:
    """Training FLOPs per segment token (forward + backward), derived by hand.

    T = seq_len, M = mem_len, K = T + M keys, D = d_model, L = n_layers, V = vocab_size.
    A matmul costs 2 FLOPs per multiply-add forward and twice that backward (input gradient and
    weight gradient), so a weight applied once per token costs 6 FLOPs:
    - 6·(N − L·D² + V·D): every non-embedding weight N (biases, norms, u/v included) once per
      token, except W_r (not applied per token, below), plus the tied LM head V·D;
    - per layer 12·K·D: scores q·k over K keys (2KD fwd) and the value mix (2KD fwd), ×3 for bwd;
    - per layer 12·(M/T)·D²: W_k and W_v also run on the M memory rows, (M/T) rows per token,
      each 6·D² (the kernels compute the input gradient of the normalised memory too);
    - xl only, per layer 6·K·D: position scores (q + v)·r over K distances, 2KD fwd + 2KD for the
      gradient of q + 2KD for the gradient of r;
    - xl only, per layer 4·(K/T)·D²: W_r over the K sinusoids of the segment, 2·D² fwd per row and
      only a weight gradient backward (the sinusoids are fixed), amortised over T tokens.
    Masked future scores are counted (the kernels compute them); a causal segment is assumed.
    """
    d, t, m, n_layers = c.d_model, c.seq_len, c.mem_len, c.n_layers
    k = t + m
    w_r = n_layers * d * d if c.position == "xl" else 0
    dense = 6 * (hand_counts(c)["non_embedding_parameters"] - w_r + c.vocab_size * d)
    attention = n_layers * (12 * k * d + 12 * (m / t) * d * d)
    xl = n_layers * (6 * k * d + 4 * (k / t) * d * d) if c.position == "xl" else 0
    return dense + attention + xl


def hand_activation_bytes(c: ModelConfig) -> int:
    """fp32 bytes kept for backward per sequence, as info.activation_bytes documents them.

    Per layer: 4·K·D (layer input over K rows, its LayerNorm, k, v), 4·T·D (q, attention output,
    the MLP LayerNorm's input and output), 2·T·F (both MLP-wide tensors) and S·H·T·K score
    matrices (S = 3 for xl: content, position, probabilities; else 2). Head: T·D + 2·T·V.
    """
    d, t, k, h = c.d_model, c.seq_len, c.seq_len + c.mem_len, c.n_heads
    scores = 3 if c.position == "xl" else 2
    per_layer = 4 * k * d + 4 * t * d + 2 * t * c.d_ff + scores * h * t * k
    return 4 * (c.n_layers * per_layer + t * d + 2 * t * c.vocab_size)


@pytest.mark.parametrize("position", ["xl", "rotary", "absolute"])
@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_size_and_flops_equal_the_hand_formula(name, position):
    config = ModelConfig(preset=name, position=position)
    info = describe(config, batch_size=3)
    for key, value in hand_counts(config).items():
        assert info[key] == value, key
    assert info["parameter_bytes_fp32"] == 4 * info["parameters"]
    assert info["parameter_bytes_bf16"] == 2 * info["parameters"]
    assert info["training_state_bytes"] == 16 * info["parameters"]  # weights, grads, 2 AdamW moments
    assert info["flops_per_token"] == pytest.approx(hand_flops(config), rel=1e-12)
    assert info["activation_bytes"] == 3 * hand_activation_bytes(config)
    assert name in format_description(info)


# Pinned, so a change to a preset shows here: (parameters, training FLOPs per token), xl positions.
PINNED = {"tiny": (1_478_656, 9_920_512), "small": (5_520_896, 41_513_984),
          "base-768": (116_728_320, 969_329_664), "large-1024": (360_294_400, 2_967_072_768),
          "xl-1536": (1_154_135_040, 9_133_111_296)}


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_figures_are_pinned(name):
    config = ModelConfig(preset=name)
    assert (hand_counts(config)["parameters"], hand_flops(config)) == PINNED[name]


def test_base_768_size_matches_the_guide():
    rotary = describe(ModelConfig(preset="base-768", position="rotary"))
    assert 84e6 < rotary["non_embedding_parameters"] < 86e6
    assert rotary["embedding_parameters"] == 32000 * 768
    xl = describe(ModelConfig(preset="base-768"))
    assert xl["position_parameters"] == 12 * (768 * 768 + 2 * 768)
    assert xl["non_embedding_parameters"] == rotary["non_embedding_parameters"] + xl["position_parameters"]


@pytest.mark.parametrize("position", ["xl", "rotary", "absolute"])
def test_meta_counts_equal_a_real_model(position):
    config = ModelConfig(preset="tiny", position=position)
    model = Transformer(config)
    assert describe(config)["parameters"] == model.num_parameters() == hand_counts(config)["parameters"]
    assert sum(p.numel() for p in model.parameters()) == hand_counts(config)["parameters"]  # tied: once


def test_pruned_heads_cut_the_attention_flops_of_their_layer():
    """Halving layer 1's heads removes half of that layer's attention: Q, K, V, O and W_r weights
    (6 FLOPs per weight and token), scores and value mix over K keys, memory projections and
    position scores, each at width D/2 instead of D."""
    full = ModelConfig(preset="tiny")
    heads = [full.n_heads // 2 if layer == 1 else full.n_heads for layer in range(full.n_layers)]
    pruned = full.model_copy(update={"layer_heads": heads})
    d, t, m = full.d_model, full.seq_len, full.mem_len
    k, cut = t + m, d // 2
    weights = 4 * d * cut + 3 * cut + 2 * cut  # W_q, W_k, W_v (+ biases), W_o rows, xl's u and v
    # (W_r is not applied per token: it is in the position term below)
    expected = 6 * weights + 12 * k * cut + 12 * (m / t) * d * cut + 6 * k * cut + 4 * (k / t) * d * cut
    assert flops_per_token(full) - flops_per_token(pruned) == pytest.approx(expected, rel=1e-12)


def test_xl_costs_more_flops_than_rotary():
    assert flops_per_token(ModelConfig(preset="small")) > flops_per_token(ModelConfig(preset="small",
                                                                                          position="rotary"))
