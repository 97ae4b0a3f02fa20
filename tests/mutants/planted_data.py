"""Planted bugs of the data-curation checks: accounting by id, scoring, PII on real text, near-dedup
around its thresholds, Ray started local-only. Run with `python tests/mutants/plant.py --area data`."""

from plant import Planted

SHARDS = "tests/unit/data/test_shards.py"
CURATE_IDS = "tests/integration/test_curate.py::test_kept_and_removed_ids_are_the_input_ids_once_each"
CURATE_SOURCE_FIELDS = ("tests/integration/test_curate.py::"
                        "test_source_fields_named_like_step_metadata_do_not_confuse_the_accounting")
SCORING = "tests/unit/data/test_scoring.py"
PII = "tests/unit/data/test_step_pii.py"
PII_REAL = "tests/unit/data/test_pii_real_text.py"
NEAR = "tests/unit/data/test_near_dedup_thresholds.py"
RAY = "tests/integration/test_curate_ray.py"

PLANTED = [
    # accounting: kept ids + removed ids = input ids, each once
    Planted(
        name="accounting-by-counts",
        claim="the run-time accounting check compares ids, not counts",
        file="src/lmforge/data/curate/stats.py",
        find="    if kept + removed == expected:",
        replace="    if kept.total() + removed.total() == expected.total():",
        tests=[SHARDS],
    ),
    Planted(
        name="kept-doc-lost-another-twice",
        claim="no kept document is lost or written twice (counts still balance)",
        file="src/lmforge/data/curate/runner.py",
        find="    kept, removed, stats = run_steps(read_shard(shard), finishing_steps(cfg.steps, decisions))\n",
        replace="    kept, removed, stats = run_steps(read_shard(shard), finishing_steps(cfg.steps, decisions))\n"
                "    kept = kept[:-1] + kept[:1]\n",
        tests=[CURATE_IDS],
    ),
    Planted(
        name="published-shard-lost-and-doubled",
        claim="the published shards hold each kept document once (after the run-time check)",
        file="src/lmforge/data/curate/runner.py",
        find="        shutil.copyfile(path, folder / path.name)",
        replace="        write_shard(folder / path.name, (lambda d: d[:-1] + d[:1])(list(read_shard(path))))",
        tests=[CURATE_IDS],
    ),
    Planted(
        name="source-parent-id-taken-for-chunk",
        claim="a source record's own parent_id/chunk fields do not make it a chunk",
        file="src/lmforge/data/curate/runner.py",
        find="""    if isinstance(parent, str) and doc["id"] == f"{parent}#{meta.get('chunk')}":""",
        replace="""    if isinstance(parent, str) and "chunk" in meta:""",
        tests=[CURATE_SOURCE_FIELDS],
    ),
    # scoring against planted truth, on a hand-made dataset
    Planted(
        name="scoring-tp-counted-as-fp",
        claim="dedup precision counts a true copy whose original went earlier as a true positive",
        file="src/lmforge/data/synthetic/scoring.py",
        find="_ratio(len(predicted & planted),",
        replace="_ratio(len(predicted & eligible),",
        tests=[SCORING],
    ),
    Planted(
        name="scoring-recall-off-by-one",
        claim="dedup recall divides by the eligible planted duplicates",
        file="src/lmforge/data/synthetic/scoring.py",
        find='"recall": _ratio(len(hits), len(eligible))',
        replace='"recall": _ratio(len(hits), len(eligible) + 1)',
        tests=[SCORING],
    ),
    Planted(
        name="scoring-stray-placeholder-counted",
        claim="a placeholder with no planted value behind it lowers placeholder precision",
        file="src/lmforge/data/synthetic/scoring.py",
        find="            matched[tag] += min(found, per_placeholder[tag])",
        replace="            matched[tag] += found",
        tests=[SCORING],
    ),
    # PII on hand-written and real text
    Planted(
        name="ipv6-skips-reserved-and-link-local",
        claim="every valid IPv6 address but :: is replaced (the old behaviour skipped fe80::/10 and reserved blocks)",
        file="src/lmforge/data/curate/steps/pii.py",
        find="    return not address.is_unspecified",
        replace="    return address.ipv4_mapped is not None or not (address.is_reserved or address.is_link_local)",
        tests=[PII_REAL],
    ),
    Planted(
        name="ipv6-skips-loopback",
        claim="the loopback ::1 is replaced like any address",
        file="src/lmforge/data/curate/steps/pii.py",
        find="    return not address.is_unspecified",
        replace="    return not (address.is_unspecified or address.is_loopback)",
        tests=[PII],
    ),
    Planted(
        name="ipv6-slices-not-skipped",
        claim="a slice such as a[1::2] is not an address",
        file="src/lmforge/data/curate/steps/pii.py",
        find='"ipv6": PiiDetector(_IPV6, _ipv6, needs=":", skip=_in_subscript),',
        replace='"ipv6": PiiDetector(_IPV6, _ipv6, needs=":"),',
        tests=[PII],
    ),
    Planted(
        name="luhn-check-removed",
        claim="only Luhn-valid digit runs become <CARD>",
        file="src/lmforge/data/curate/steps/pii.py",
        find='    return luhn_valid(_NON_DIGIT.sub("", candidate))',
        replace="    return True",
        tests=[f"{PII_REAL}::test_real_digit_runs_become_cards_only_when_luhn_valid",
               "tests/unit/data/test_step_pii.py::test_look_alikes_are_left_alone"],
    ),
    Planted(
        name="phone-eats-open-bracket",
        claim="a phone number in brackets is replaced without its bracket",
        file="src/lmforge/data/curate/steps/pii.py",
        find=r'r"|(?:\(0\d{1,4}\)|0\d{1,4})(?:[ ./-]\d{2,8}){1,4}|0\d{8,11}"',
        replace=r'r"|\(?0\d{1,4}\)?(?:[ ./-]\d{2,8}){1,4}|0\d{8,11}"',
        tests=[PII_REAL],
    ),
    # near-dedup around the thresholds, on real text at planted Jaccard similarities
    Planted(
        name="verify-threshold-0.5",
        claim="candidate pairs are verified at estimated Jaccard 0.7",
        file="src/lmforge/data/curate/dedup/decide.py",
        find="VERIFY_THRESHOLD = 0.7",
        replace="VERIFY_THRESHOLD = 0.5",
        tests=[NEAR],
    ),
    Planted(
        name="bands-rows-swapped",
        claim="LSH uses 14 bands of 8 rows (50% at s = 0.685)",
        file="src/lmforge/data/curate/dedup/stage.py",
        find="MinHasher(bands=settings.bands, rows=settings.rows,",
        replace="MinHasher(bands=settings.rows, rows=settings.bands,",
        tests=[NEAR],
    ),
    Planted(
        name="shingle-size-4",
        claim="shingles are 5 words (FineWeb)",
        file="src/lmforge/data/curate/dedup/step.py",
        find="    ngram: int = Field(5, ge=1)",
        replace="    ngram: int = Field(4, ge=1)",
        tests=[NEAR],
    ),
    # Ray in tests: local only, whatever RAY_ADDRESS says
    Planted(
        name="ray-init-ignores-address",
        claim="ray_address is passed to ray.init (a bare ray.init() joins the cluster RAY_ADDRESS names)",
        file="src/lmforge/data/curate/ray_executor.py",
        find="    ray.init(address=address)",
        replace="    ray.init()",
        tests=[RAY],
    ),
]
