"""In-context replacement words proposed by a masked LM from our own pretraining (a model folder).

For each word to replace, the word's tokens become one `<mask>` in a window of the model's
segment length around it; the model's top-k predictions there are kept when they are a whole
word: alphabetic, starting a word exactly as the original did (after a space or not), and not
the original word. Unlike WordNet this works in any language the model was trained on, and the
candidates fit the sentence (Kobayashi 2018, "contextual augmentation"); one token is one word
candidate, so a word-initial token that is only the start of a longer word can slip through.

The one import of `lmforge.model` from `lmforge.data` (the model bundle loader; declared in
pyproject's import-linter contract and justified in docs/architecture.md), made inside the class
so that `import lmforge.data` does not import torch.
"""

from __future__ import annotations

from pathlib import Path

from lmforge.data.text import Span


class MaskedLMProposer:
    """A `Proposer` (see `eda`) backed by the masked-LM head of a model folder."""

    def __init__(self, folder: str | Path, top_k: int = 5) -> None:
        from lmforge.model.bundle import load_bundle

        bundle = load_bundle(folder)
        self.model, self.tokenizer = bundle.model, bundle.tokenizer
        self.mask_id = self.tokenizer.token_to_id("<mask>")
        self.pad_id = self.tokenizer.token_to_id("<pad>")
        self.top_k = top_k

    def __call__(self, text: str, spans: list[Span]) -> list[list[str]]:
        if not spans:
            return []
        import torch

        windows = [self._window(text, span) for span in spans]
        batch = torch.full((len(windows), max(len(ids) for ids, _ in windows)), self.pad_id)
        for row, (ids, _) in enumerate(windows):
            batch[row, :len(ids)] = torch.tensor(ids)
        with torch.inference_mode():
            logits = self.model(batch, causal=False, padding_mask=batch != self.pad_id).logits
        at = torch.tensor([mask_at for _, mask_at in windows])
        top = logits[torch.arange(len(windows)), at].topk(self.top_k).indices.tolist()
        return [self._whole_words(ids, text, span) for ids, span in zip(top, spans, strict=True)]

    def _window(self, text: str, span: Span) -> tuple[list[int], int]:
        """Token ids with the word as one mask, at most seq_len long; and the mask's index."""
        start, end = span
        # Byte-level BPE: the space before a word belongs to the word's first token.
        left = text[:start - 1] if self._spaced(text, span) else text[:start]
        half = (self.model.config.seq_len - 1) // 2
        before = self.tokenizer.encode(left).ids[-half:] if left else []
        after = self.tokenizer.encode(text[end:]).ids[:self.model.config.seq_len - 1 - len(before)]
        return [*before, self.mask_id, *after], len(before)

    def _whole_words(self, ids: list[int], text: str, span: Span) -> list[str]:
        original = text[span[0]:span[1]].casefold()
        spaced = self._spaced(text, span)
        words = []
        for piece in (self.tokenizer.decode([i]) for i in ids):
            word = piece.strip()
            if piece.startswith(" ") == spaced and word.isalpha() and word.casefold() != original:
                words.append(word)
        return words

    @staticmethod
    def _spaced(text: str, span: Span) -> bool:
        return span[0] > 0 and text[span[0] - 1] == " "
