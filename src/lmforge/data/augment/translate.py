"""Back-translation (Sennrich et al. 2016): a text through a pivot language and back, a paraphrase.

`Translator` is the interface; `MarianTranslator` runs Hugging Face MarianMT models (the
opus-mt family) from local folders, one per direction, as `save_pretrained` writes them. Nothing
is downloaded: a folder that is not there is an error before any text is read. Texts are
translated sentence by sentence: Marian models learn from sentence pairs, and a whole document
would be cut at `max_length` tokens.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

SENTENCE_BREAK = re.compile(r"(\s*\n\s*|(?<=[.!?。！？])\s+)")
"""Line breaks and the space after a sentence end; captured, so that they are put back as they were."""


class Translator(Protocol):
    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        """One translation per text, from language `src` to `tgt` (ISO 639-1 codes)."""
        ...


class MarianTranslator:
    """MarianMT models from local folders keyed by direction ("en-de"); greedy, so deterministic.

    Models load on first use of their direction. `batch_size` and `max_length` default to
    nlpaug's BackTranslationAug (32, 300); its OOM on large corpora came from not batching.
    """

    def __init__(self, folders: Mapping[str, str | Path], batch_size: int = 32,
                 max_length: int = 300) -> None:
        self.folders = {direction: Path(folder) for direction, folder in folders.items()}
        missing = [f"{d}: {f}" for d, f in self.folders.items() if not f.is_dir()]
        if missing:
            raise FileNotFoundError(f"Marian model folders not found: {', '.join(missing)}")
        self.batch_size = batch_size
        self.max_length = max_length
        self._models: dict[str, tuple[Any, Any]] = {}

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        import torch

        tokenizer, model = self._load(f"{src}-{tgt}")
        out: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            batch = tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                              truncation=True, max_length=self.max_length)
            with torch.inference_mode():
                ids = model.generate(**batch, num_beams=1, do_sample=False, max_new_tokens=self.max_length)
            out += tokenizer.batch_decode(ids, skip_special_tokens=True)
        return out

    def _load(self, direction: str) -> tuple[Any, Any]:
        if direction not in self.folders:
            have = ", ".join(sorted(self.folders)) or "none"
            raise KeyError(f"no Marian model for {direction}; have {have}")
        if direction not in self._models:
            from transformers import MarianMTModel, MarianTokenizer

            folder = self.folders[direction]
            self._models[direction] = (MarianTokenizer.from_pretrained(folder, local_files_only=True),
                                       MarianMTModel.from_pretrained(folder, local_files_only=True).eval())
        return self._models[direction]


def back_translate(texts: list[str], translator: Translator, src: str, pivot: str) -> list[str]:
    """Each text translated src -> pivot -> src, sentence by sentence, its line breaks kept.

    All sentences of all texts go through the translator together, so that it batches them.
    """
    parts = [SENTENCE_BREAK.split(text) for text in texts]  # sentences at even indices
    sentences = [part for split in parts for part in split[::2] if part.strip()]
    if not sentences:
        return list(texts)
    back = iter(translator.translate(translator.translate(sentences, src, pivot), pivot, src))
    return ["".join(next(back) if i % 2 == 0 and part.strip() else part for i, part in enumerate(split))
            for split in parts]
