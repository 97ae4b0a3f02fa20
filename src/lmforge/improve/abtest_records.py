"""The A/B analysis's input from the request log: one value per user and metric, per variant.

The unit is the user (the pseudonym the server records), not the request: a user's requests are
not independent of each other, and assignment is per user, so the t-tests and the sample-ratio
check count users. Per user and variant:
- `rating`: the mean feedback rating over the user's answers (no value when they rated nothing);
- `agreement`: the share of the user's answers whose class a user's label feedback confirmed
  (no value without label feedback);
- `latency_ms`: the mean time to answer (lower is better; the resource guardrail).
A user seen in more than one variant (the experiment's seed or weights changed mid-test) is
dropped and counted, since their exposure is mixed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from lmforge.improve.abtest import AbTestError, MetricSpec, VariantData
from lmforge.improve.mine import feedback_by_request
from lmforge.records import Feedback, RequestLog, Store

METRICS = [MetricSpec("rating", higher_is_better=True, primary=True),
           MetricSpec("agreement", higher_is_better=True),
           MetricSpec("latency_ms", higher_is_better=False)]


@dataclass
class Extracted:
    variants: list[VariantData]
    requests: int
    mixed_users: int


def _user_values(requests: list[RequestLog], feedback: dict[str, list[Feedback]]) -> dict[str, float]:
    ratings = [f.rating for r in requests for f in feedback[r.id] if f.rating is not None]
    labelled = [(r, f.label) for r in requests for f in feedback[r.id] if f.label is not None]
    agreement = [float(label == r.output.get("label")) for r, label in labelled]
    return {"rating": float(np.mean(ratings)) if ratings else np.nan,
            "agreement": float(np.mean(agreement)) if agreement else np.nan,
            "latency_ms": float(np.mean([r.latency_ms for r in requests]))}


def variant_data(store: Store, experiment: str, variants: list[str], weights: list[float]) -> Extracted:
    """Per-user metric values of each variant (in the order given: the control first)."""
    requests = [r for r in store.requests(experiment=experiment) if r.user and r.status == 200]
    if not requests:
        raise AbTestError(f"no logged requests of experiment {experiment!r} with a user id in {store.url}")
    unknown = sorted({r.variant for r in requests} - set(variants))
    if unknown:
        raise AbTestError(f"experiment {experiment!r} logged variants {unknown} that are not among "
                          f"{variants}")
    feedback = feedback_by_request(store, requests)
    by_user: dict[str, dict[str, list[RequestLog]]] = defaultdict(lambda: defaultdict(list))
    for r in requests:
        by_user[r.user][r.variant].append(r)
    mixed = sum(len(seen) > 1 for seen in by_user.values())
    columns: dict[str, dict[str, list[float]]] = {v: defaultdict(list) for v in variants}
    for seen in by_user.values():
        if len(seen) > 1:
            continue
        (variant, logged), = seen.items()
        for metric, value in _user_values(logged, feedback).items():
            columns[variant][metric].append(value)
    data = [VariantData(v, w, {m.name: np.asarray(columns[v][m.name], dtype=float) for m in METRICS})
            for v, w in zip(variants, weights, strict=True)]
    return Extracted(data, len(requests), mixed)
