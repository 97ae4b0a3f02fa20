"""Left-padded memories in one batch: each row computes what it computes alone, unpadded.

The reference is each sequence run by itself with its own memory (no padding, no mask), for two
segments in a row, so the memory the padded batch returns is checked by feeding it back.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.model import ModelConfig, Transformer

SHAPES = {
    "tiny": {"preset": "tiny"},
    "deep": {"vocab_size": 97, "d_model": 48, "n_layers": 3, "n_heads": 6, "d_ff": 80, "seq_len": 6,
             "mem_len": 10},
}
HISTORIES = [0, 5, 2, 9]
"""Memory lengths of the batch's rows: one row without memory, none as long as the batch's."""
SEGMENT = 4


def lively_model(shape: str, position: str) -> Transformer:
    """A float32 model in eval mode whose attention depends clearly on content and position (the
    default init leaves xl's position biases at zero and embeddings small)."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**SHAPES[shape], position=position)).eval()
    with torch.no_grad():
        model.tok_emb.weight.mul_(20)
        if model.pos_emb is not None:
            model.pos_emb.weight.mul_(20)
        for name, param in model.named_parameters():
            if name.endswith((".u", ".v", "r_proj.weight")):
                param.normal_(std=0.5)
    return model


def left_pad(mems: list[list[torch.Tensor] | None], width: int, n_layers: int, d: int) -> list[torch.Tensor]:
    """Per layer [B, width, D]: each row's memory at the right, random values in the padding (so
    a pad that leaks into a result shows)."""
    noise = torch.Generator().manual_seed(1)
    layers = []
    for layer in range(n_layers):
        rows = []
        for mem in mems:
            real = torch.zeros(1, 0, d) if mem is None else mem[layer]
            pad = torch.randn(1, width - real.size(1), d, generator=noise)
            rows.append(torch.cat([pad, real], dim=1))
        layers.append(torch.cat(rows))
    return layers


def real_mask(lengths: list[int], width: int, segment: int) -> torch.Tensor:
    """[B, width + segment]: False on each row's left padding."""
    memory = torch.arange(width)[None, :] >= width - torch.tensor(lengths)[:, None]
    return F.pad(memory, (0, segment), value=True)


@pytest.mark.parametrize("position", ["xl", "absolute", "rotary"])
@pytest.mark.parametrize("shape", list(SHAPES))
@torch.no_grad()
def test_padded_batch_equals_each_sequence_alone(shape, position):
    model = lively_model(shape, position)
    config = model.config
    keep = max(HISTORIES) + SEGMENT - 2  # the batch's longest memory gets truncated, as alone
    generator = torch.Generator().manual_seed(2)
    histories = [torch.randint(config.vocab_size, (1, h), generator=generator) for h in HISTORIES]
    segments = torch.randint(config.vocab_size, (len(HISTORIES), SEGMENT), generator=generator)
    follow = torch.randint(config.vocab_size, (len(HISTORIES), 1), generator=generator)

    own_mems = [model(h, mem_len=h.size(1)).mems if h.size(1) else None for h in histories]
    alone = []
    for mems, segment, token in zip(own_mems, segments, follow, strict=True):
        first = model(segment[None], mems, mem_len=keep)
        alone.append((first, model(token[None], first.mems, mem_len=keep)))

    width = max(HISTORIES)
    mems = left_pad(own_mems, width, config.n_layers, config.d_model)
    first = model(segments, mems, padding_mask=real_mask(HISTORIES, width, SEGMENT), mem_len=keep)
    lengths = [min(h + SEGMENT, keep) for h in HISTORIES]
    second_mask = real_mask(lengths, first.mems[0].size(1), 1)
    second = model(follow, first.mems, padding_mask=second_mask, mem_len=keep)

    for b, (first_alone, second_alone) in enumerate(alone):
        assert first_alone.mems[0].size(1) == lengths[b]  # what second_mask says is real
        for got, want in ((first, first_alone), (second, second_alone)):
            torch.testing.assert_close(got.logits[b], want.logits[0], atol=1e-5, rtol=1e-5)
            for got_mem, want_mem in zip(got.mems, want.mems, strict=True):
                real = want_mem.size(1)  # the row's real positions, at the right
                torch.testing.assert_close(got_mem[b, -real:], want_mem[0], atol=1e-5, rtol=1e-5)

@torch.no_grad()
def test_a_segment_mask_keeps_its_meaning():
    """[B, T] still means 'memory all real': the same result as [B, M+T] with a real memory."""
    model = lively_model("deep", "absolute")
    generator = torch.Generator().manual_seed(3)
    mems = model(torch.randint(97, (2, 5), generator=generator)).mems
    idx = torch.randint(97, (2, SEGMENT), generator=generator)
    segment_mask = torch.tensor([[True, True, True, False], [True, False, True, True]])
    full_mask = F.pad(segment_mask, (5, 0), value=True)
    short = model(idx, mems, padding_mask=segment_mask, mem_len=7)
    full = model(idx, mems, padding_mask=full_mask, mem_len=7)
    torch.testing.assert_close(short.logits, full.logits, atol=0, rtol=0)


def test_a_mask_of_another_length_is_refused():
    model = lively_model("deep", "xl")
    mems = model(torch.zeros(1, 3, dtype=torch.long)).mems
    with pytest.raises(ValueError, match="memory \\+ segment \\(5\\)"):
        model(torch.zeros(1, 2, dtype=torch.long), mems, padding_mask=torch.ones(1, 4, dtype=torch.bool))
