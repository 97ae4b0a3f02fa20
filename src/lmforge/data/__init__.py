"""Documents and the data they come from: readers, the built-in corpus, and curation (`curate`)."""

from __future__ import annotations

from lmforge.data.documents import DataError, read_documents, write_documents
from lmforge.data.readers import Malformed, iter_sources
from lmforge.data.synthetic import generate_corpus

__all__ = ["DataError", "Malformed", "generate_corpus", "iter_sources", "read_documents", "write_documents"]
