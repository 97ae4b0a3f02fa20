"""Where synonym replacement gets its words: the `SynonymSource` interface, and WordNet.

WordNet through NLTK is the source EDA (eda_nlp) and nlpaug's SynonymAug use. Its data is a
separate download (`nltk.download("wordnet")`) that no PyPI package ships, and nothing here may
download at run time: without it `WordNetSynonyms()` raises `WordNetMissing`, which says what
to install, as soon as the step is built. The masked-LM proposer (`mlm`) needs no WordNet.
"""

from __future__ import annotations

from typing import Protocol

FUNCTION_WORDS = frozenset({
    "a", "an", "the", "and", "or", "but", "nor", "if", "then", "than", "because", "as", "while", "until",
    "so", "of", "at", "by", "for", "with", "about", "against", "between", "into", "through", "during",
    "before", "after", "above", "below", "to", "from", "up", "down", "in", "out", "on", "off", "over",
    "under", "again", "once", "here", "there", "when", "where", "why", "how", "all", "any", "both", "each",
    "few", "more", "most", "other", "some", "such", "no", "not", "only", "own", "same", "too", "very",
    "can", "will", "just", "should", "now", "i", "me", "my", "we", "our", "you", "your", "he", "him", "his",
    "she", "her", "it", "its", "they", "them", "their", "what", "which", "who", "whom", "this", "that",
    "these", "those", "am", "is", "are", "was", "were", "be", "been", "being", "have", "has", "had", "do",
    "does", "did", "would", "could", "may", "might", "must", "shall",
})
"""Closed-class English words. EDA skips stop words; WordNet has no function words, only their
homographs (a = angstrom, in = inch, it = information technology, will = volition), so
'synonyms' of these would be nonsense."""


class SynonymSource(Protocol):
    def synonyms(self, word: str, lang: str) -> list[str]:
        """Synonyms of `word` in language `lang` (ISO 639-1, as the language step writes)."""
        ...


class WordNetMissing(RuntimeError):
    """No WordNet is installed: NLTK or its wordnet data is missing."""


class WordNetSynonyms:
    """Princeton WordNet (English) through NLTK: the lemmas of every synset of the word."""

    def __init__(self) -> None:
        try:
            from nltk.corpus import wordnet

            wordnet.get_version()  # loads the corpus: a LookupError here, not mid-shard
        except ImportError:
            raise WordNetMissing("no WordNet installed: the nltk package is missing "
                                 "(pip install nltk, then python -m nltk.downloader wordnet)") from None
        except LookupError:
            raise WordNetMissing("no WordNet installed: nltk has no wordnet data (run python -m "
                                 "nltk.downloader wordnet once, where there is a network)") from None
        self._wordnet = wordnet

    def synonyms(self, word: str, lang: str) -> list[str]:
        """Sorted, so that a seeded pick does not depend on set order (string hashing is salted)."""
        key = word.casefold()
        if lang != "en" or key in FUNCTION_WORDS:
            return []
        names = {lemma.name().replace("_", " ") for synset in self._wordnet.synsets(word)
                 for lemma in synset.lemmas()}
        return sorted(name for name in names if name.casefold() != key)
