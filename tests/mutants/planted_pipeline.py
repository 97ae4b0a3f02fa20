"""Planted bugs of the lifecycle checks (`lmforge run`): the stage runner's skip and resume rules, the
simulated reviewer and the A/B promotion. Run with `python tests/mutants/plant.py --area pipeline`."""

from plant import Planted

STAGES = "tests/unit/pipeline/test_stages.py"
LIFECYCLE = "tests/integration/test_lifecycle.py"

PLANTED = [
    Planted(
        name="pipeline-skip-without-artifacts",
        claim="a stage is skipped only when every artifact it recorded is complete",
        file="src/lmforge/pipeline/stages.py",
        find="if entry is not None and all(complete(ctx.root / p) for p in entry[\"artifacts\"].values()):",
        replace="if entry is not None:",
        tests=[f"{STAGES}::test_a_stage_whose_artifact_is_gone_runs_again"],
    ),
    Planted(
        name="pipeline-append-after-torn-line",
        claim="a stage's line after a line cut short by a kill is kept",
        file="src/lmforge/pipeline/stages.py",
        find='        handle.write(("\\n" if torn else "") + json.dumps(entry) + "\\n")',
        replace='        handle.write(json.dumps(entry) + "\\n")',
        tests=[f"{STAGES}::test_a_line_cut_short_by_a_kill_does_not_count"],
    ),
    Planted(
        name="pipeline-pretraining-restarts",
        claim="a killed run resumes pretraining from its last checkpoint",
        file="src/lmforge/pipeline/build.py",
        find="""                 resume="auto")""",
        replace="""                 resume=None)""",
        tests=[f"{LIFECYCLE}::test_a_killed_run_resumes_to_the_same_models"],
    ),
    Planted(
        name="pipeline-reviewer-echoes-the-model",
        claim="the simulated reviewer answers with the truth of each request, not the model's answer",
        file="src/lmforge/pipeline/improvement.py",
        find="                label = truth[item.request_id]",
        replace='                label = item.prediction["label"]',
        tests=[f"{LIFECYCLE}::test_served_traffic_feedback_and_corrections_are_in_the_records"],
    ),
    Planted(
        name="pipeline-promotes-any-decision",
        claim="a variant is promoted only when the analysis decides to promote it",
        file="src/lmforge/pipeline/improvement.py",
        find='        if s.promote and analysis.decision.startswith("promote "):\n'
             '            variant = analysis.decision.removeprefix("promote ")',
        replace='        if s.promote:\n            variant = f"{EXPERIMENT}-v2"',
        tests=[f"{LIFECYCLE}::test_ab_decision_and_promotion_agree"],
    ),
]
