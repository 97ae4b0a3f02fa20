"""`lmforge curate`: raw sources -> a cleaned, deduplicated, anonymised dataset artifact.

- `runner`: the stages (ingest, filter, dedup, finish) and the output folder;
- `executors`, `ray_executor`: where the parallel tasks run (worker processes, Ray);
- `steps`: the per-document steps; `dedup`: exact and near deduplication, all of it;
- `shards`, `stats`, `report`: one shard's files, the accounting, the Markdown report;
- `langid`: the language detectors behind the language step.
Curation reads its input through `lmforge.data.sources` and knows nothing of the built-in
corpus: scoring against its truth is a `Scorer` the caller passes (see `report`).
"""

from __future__ import annotations

from lmforge.data.curate.report import Scorer, Scores
from lmforge.data.curate.runner import CurateConfig, CurateResult, CurationSettings, curate

__all__ = ["CurateConfig", "CurateResult", "CurationSettings", "Scorer", "Scores", "curate"]
