"""Autoregressive sampling from the backbone, with the recurrence memory as the KV cache.

The model sees at most `seq_len + mem_len` tokens (its context window). With the cache, the
prompt runs once and each new token is one forward step of length 1 whose memory is kept at
window - 1 tokens, so a step costs O(window) instead of re-running the whole window.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lmforge.model.xl import Transformer


@torch.no_grad()
def generate(model: Transformer, prompt: list[int], max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             use_cache: bool = True, eos_id: int | None = None) -> list[int]:
    """Continue `prompt`; returns only the new tokens, stopping before `eos_id` if it is drawn.

    `temperature=0` is greedy. `top_k` keeps the k most likely tokens, `top_p` the smallest set
    whose probability reaches p (nucleus). `seed` makes sampling reproducible. Without the
    cache every step re-runs the last window of tokens (the reference the cache must match).
    """
    if not prompt:
        raise ValueError("generate needs a non-empty prompt")
    if temperature < 0 or (top_k is not None and top_k < 1) or (top_p is not None and not 0 < top_p <= 1):
        raise ValueError(f"need temperature >= 0, top_k >= 1, 0 < top_p <= 1; "
                         f"got {temperature}, {top_k}, {top_p}")
    device = model.tok_emb.weight.device
    generator = torch.Generator(device).manual_seed(seed) if seed is not None else None
    window = model.config.context_len
    tokens = list(prompt)
    was_training = model.training
    model.eval()
    try:
        mems, step = None, tokens[-window:]
        for _ in range(max_new_tokens):
            if not use_cache:
                step = tokens[-window:]
            out = model(torch.tensor([step], device=device), mems, mem_len=window - 1)
            mems = out.mems if use_cache else None
            token = _sample(out.logits[0, -1], temperature, top_k, top_p, generator)
            if token == eos_id:
                break
            tokens.append(token)
            step = [token]
    finally:
        model.train(was_training)
    return tokens[len(prompt) :]


def _sample(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None,
            generator: torch.Generator | None) -> int:
    """One token id from [V] logits."""
    if temperature == 0:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the more likely ones already reach top_p; the first always stays.
        drop = probs.cumsum(dim=-1) - probs >= top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return int(torch.multinomial(logits.softmax(dim=-1), 1, generator=generator))
