"""Documents and the data they come from, one sub-package per concern.

- `sources`: readers of every input format (JSONL, Parquet, txt, WARC/WET, `hf:` datasets)
- `curate`: `lmforge curate`, raw sources -> a cleaned, deduplicated, anonymised dataset
- `synthetic`: the built-in corpus with its planted truth, and scoring a curation against it
- `augment`: EDA, masked-LM synonyms and back-translation (used by curation's augment step)
- `text`: the one word splitter; `documents`: the document record, strict reading and writing

Who imports whom (pyproject's import-linter contract): synthetic -> curate -> augment, documents
-> sources, text; curation never imports synthetic.
"""

from __future__ import annotations

from lmforge.data.documents import DataError, read_documents, write_documents

__all__ = ["DataError", "read_documents", "write_documents"]
