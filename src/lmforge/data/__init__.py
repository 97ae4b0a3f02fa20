"""Documents and the data they come from: reading and writing, and the built-in corpus."""

from __future__ import annotations

from lmforge.data.documents import DataError, read_documents, write_documents
from lmforge.data.synthetic import generate_corpus

__all__ = ["DataError", "generate_corpus", "read_documents", "write_documents"]
