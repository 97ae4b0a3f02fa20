"""The built-in corpus: multilingual text with planted, documented defects and their truth.

- `corpus`: the generator (`generate_corpus`) and the truth file it writes beside the documents;
- `sentences`, `lexicon`: templates, vocabularies and the edits that make near duplicates;
- `scoring`: a curation run scored against the truth (`truth_scorer`, passed to `curate`).
"""

from __future__ import annotations

from lmforge.data.synthetic.corpus import generate_corpus
from lmforge.data.synthetic.scoring import truth_scorer

__all__ = ["generate_corpus", "truth_scorer"]
