"""Autoregressive sampling from the backbone, with the recurrence memory as the KV cache.

The model sees at most `window = seq_len + mem_len` tokens at once. The prompt is read the way
Transformer-XL reads long text: left to right in segments of `seq_len` tokens starting at token
0, each after the memory of the tokens before it, trimmed so that memory + segment fit in the
window (a full segment gets `mem_len` memory, as in training). A prompt of at most `window`
tokens therefore sees every earlier token, as one forward over the whole prompt would; a longer
one is not truncated to its last window, every token sees at least as much as truncation gave
and deeper layers carry context from further back. Fixed segment boundaries (multiples of
`seq_len`) make the memory after a prefix a function of that prefix alone, so a server can cache
it (`lmforge.serve.prefix_cache`) and resume from it to the same result as a cold run.

After the prompt each new token is one forward step of length 1 whose memory is kept at
window - 1 tokens, so a step costs O(window) instead of re-running the whole window.
"""

from __future__ import annotations

from collections.abc import Iterator

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
    cache every step re-runs the last window of tokens: the reference the cache must match while
    prompt and continuation fit in the window.
    """
    if not prompt:
        raise ValueError("generate needs a non-empty prompt")
    check_sampling(temperature, top_k, top_p)
    device = model.tok_emb.weight.device
    generator = torch.Generator(device).manual_seed(seed) if seed is not None else None
    window = model.config.context_len
    tokens = list(prompt)
    was_training = model.training
    model.eval()
    try:
        if use_cache and max_new_tokens > 0:
            mems, logits = prefill(model, tokens)
        for step in range(max_new_tokens):
            if not use_cache:
                logits = model(torch.tensor([tokens[-window:]], device=device)).logits[0, -1]
            elif step > 0:
                out = model(torch.tensor([tokens[-1:]], device=device), mems, mem_len=window - 1)
                mems, logits = out.mems, out.logits[0, -1]
            token = sample_token(logits, temperature, top_k, top_p, generator)
            if token == eos_id:
                break
            tokens.append(token)
    finally:
        model.train(was_training)
    return tokens[len(prompt) :]


def prefill(model: Transformer, tokens: list[int], mems: list[Tensor] | None = None,
            start: int = 0) -> tuple[list[Tensor], Tensor]:
    """Read `tokens[start:]` after `mems`, the memory left by `tokens[:start]` (`start` a multiple
    of seq_len); returns the memory after all of `tokens` (window - 1 kept) and the last token's
    [V] logits. Call it with the model in eval mode."""
    if start >= len(tokens):
        raise ValueError(f"prefill needs tokens after position {start}; got {len(tokens)} tokens")
    *_, (_, mems, logits) = prefill_segments(model, tokens, mems, start)
    return mems, logits


@torch.no_grad()
def prefill_segments(model: Transformer, tokens: list[int], mems: list[Tensor] | None = None,
                     start: int = 0) -> Iterator[tuple[int, list[Tensor], Tensor]]:
    """`prefill` one segment at a time: yields (end, memory after tokens[:end], logits of token
    end - 1) after each segment, so a caller can keep the memory at every boundary it passes."""
    seq_len, window = model.config.seq_len, model.config.context_len
    if start % seq_len:
        raise ValueError(f"prefill resumes at a multiple of seq_len ({seq_len}); got {start}")
    device = model.tok_emb.weight.device
    for begin in range(start, len(tokens), seq_len):
        segment = tokens[begin : begin + seq_len]
        if mems:  # memory + segment fit in the window, as in training
            mems = [m[:, max(m.size(1) - (window - len(segment)), 0) :] for m in mems]
        out = model(torch.tensor([segment], device=device), mems, mem_len=window - 1)
        mems = out.mems
        yield begin + len(segment), mems, out.logits[0, -1]


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise ValueError for sampling settings `sample_token` cannot honour."""
    if temperature < 0 or (top_k is not None and top_k < 1) or (top_p is not None and not 0 < top_p <= 1):
        raise ValueError(f"need temperature >= 0, top_k >= 1, 0 < top_p <= 1; "
                         f"got {temperature}, {top_k}, {top_p}")


def sample_token(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None,
                 generator: torch.Generator | None) -> int:
    """One token id from [V] logits. Public so that every caller (generate, the server's batches)
    draws the same token from the same logits and generator state."""
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
