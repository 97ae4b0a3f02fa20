"""`build_report`: one self-contained page from a run folder's artifacts, whatever stages it has.

The fake run (conftest.py) has every artifact the report reads; each test checks the figures a
section must show, or what the page does with a partial, re-run or damaged run.
"""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

from browser import check_page
from PIL import Image

from lmforge.report import build_report

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
PNG = b"\x89PNG\r\n\x1a\n"
SECTION_IDS = ["stages", "data", "pretraining", "finetuning", "compression", "export", "serving", "abtest",
               "lineage"]


def sections(page: str) -> dict[str, str]:
    found = dict(re.findall(r'<section id="([a-z]+)">(.*?)</section>', page, flags=re.S))
    assert list(found) == SECTION_IDS
    return found


class Links(HTMLParser):
    """Every src and href of the page, and the src of every <img>."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href"):
                self.links.append(value or "")
                if tag == "img":
                    self.images.append(value or "")


def append_stage(run: Path, record: dict) -> None:
    with (run / "logs/stages.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def test_a_full_run_shows_every_section_s_figures(make_run):
    run = make_run()
    path = build_report(run)
    assert path == run / "report" / "index.html"
    assert sorted(p.name for p in path.parent.iterdir()) == ["index.html"]  # no temporary file left
    page = path.read_text(encoding="utf-8")
    assert "<title>lmforge run fake</title>" in page
    assert "not run yet" not in page and "could not show" not in page
    shown = sections(page)
    for section, figures in {
        "stages": ["compress-report", "decision: promote candidate", "<strong>total</strong>", ">18<"],
        "data": ["<dd>120</dd>", "<dd>37</dd>", "83 (69.2% of the input)", "lang_below_threshold", "16.7%"],
        "pretraining": ["<dd>40</dd>", "992.3 -&gt; 29.96", "181.3"],
        "finetuning": ["models/fake-classify", "accuracy 0.8125, macro_f1 0.7911", "best step", "+0.23",
                       "from scratch", "accuracy 0.7734", "1.234", "0.3438"],
        "compression": ["fake-classify-int8-dynamic", "3.08x smaller", "1.60x", "-0.0078"],
        "export": ["exports/fake-classify/onnx", "logits 1.5e-06", "fake_classify_torch", "max batch size 8"],
        "serving": ["47.25", "32.52", "positive 150, negative 41", "latency p99 (ms)"],
        "abtest": ["Decision: promote candidate.", "fake-ab", "95% CI", "Holm p", "better",
                   "promoted candidate, serving version ab12cd34", "candidate - control"],
        "lineage": ["models/fake-classify-int8-dynamic</td><td>quantize</td><td>models/fake-classify</td>",
                    "datasets/curated<br>tokenizers/default"],
    }.items():
        missing = [figure for figure in figures if figure not in shown[section]]
        assert missing == [], f"section {section} lacks {missing}"


def test_every_image_is_an_inline_png_and_nothing_is_fetched(make_run):
    parser = Links()
    parser.feed(build_report(make_run()).read_text(encoding="utf-8"))
    # funnel, curves, pretrained vs scratch, Pareto, latency histogram, A/B intervals
    assert len(parser.images) == 6
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png.startswith(PNG)
        with Image.open(io.BytesIO(png)) as image:
            image.load()  # the whole image decodes, not just its header
            assert image.width > 100 and image.height > 100
    assert [link for link in parser.links if not link.startswith(("data:", "#"))] == []


def test_strings_from_artifacts_are_escaped(make_run):
    run = make_run(["corpus", "curate"])
    stats = json.loads((run / "datasets/curated/stats.json").read_text())
    stats["removed_by_reason"]['<img src=x onerror="alert(1)">'] = 3
    (run / "datasets/curated/stats.json").write_text(json.dumps(stats))
    append_stage(run, {"stage": "tasks", "seconds": 1.0, "figure": "<script>alert('x')</script>",
                       "artifacts": {}})
    page = build_report(run).read_text(encoding="utf-8")
    assert "<script" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in sections(page)["data"]


def test_labels_with_dollar_signs_are_drawn_as_text(make_run):
    """Matplotlib would read '$...$' as a formula and fail on an unknown command."""
    run = make_run(["curate"])
    stats = json.loads((run / "datasets/curated/stats.json").read_text())
    stats["removed_by_reason"] = {r"costs $\nosuchcommand$ each": 4}
    (run / "datasets/curated/stats.json").write_text(json.dumps(stats))
    data = sections(build_report(run).read_text(encoding="utf-8"))["data"]
    assert "could not show" not in data and "data:image/png" in data


def test_the_last_record_of_a_re_run_stage_wins(make_run):
    run = make_run(["corpus", "curate"])
    append_stage(run, {"stage": "curate", "seconds": 4.0, "figure": "kept 90 of 120",
                       "artifacts": {"dataset": "datasets/curated"}})
    stages = sections(build_report(run).read_text(encoding="utf-8"))["stages"]
    assert "kept 90 of 120" in stages and "kept 83 of 120" not in stages
    assert stages.count("<td>curate</td>") == 1
    assert re.search(r"<strong>total</strong></td><td class=\"num\">5.5<", stages)


def test_a_partial_run_says_what_has_not_run_yet(make_run):
    shown = sections(build_report(make_run(["corpus", "curate", "tokenizer", "pretrain"])).read_text())
    assert "could not show" not in "".join(shown.values())
    for section in ("stages", "data", "pretraining", "lineage"):
        assert "not run yet" not in shown[section], section
    for section, stages in {"finetuning": ["finetune", "multitask"], "compression": ["compress-report"],
                            "export": ["export"], "serving": ["serve"], "abtest": ["abtest"]}.items():
        said = [stage for stage in stages if f"not run yet (no <code>{stage}</code> stage" in shown[section]]
        assert said == stages, section
        assert "<img" not in shown[section]


def test_a_run_folder_with_nothing_in_it_yet(tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    shown = sections(build_report(run).read_text(encoding="utf-8"))
    assert [name for name, body in shown.items() if "not run yet" not in body] == []


def test_missing_and_malformed_artifacts_cost_only_their_section(make_run):
    run = make_run()
    (run / "serving/metrics.json").unlink()
    (run / "datasets/curated/stats.json").write_text("{")
    with (run / "logs/stages.jsonl").open("a") as index:
        index.write('{"stage": "ewc", "seco')  # a stage killed while its line was written
    shown = sections(build_report(run).read_text(encoding="utf-8"))
    assert "could not show this section" in shown["serving"] and "no such file" in shown["serving"]
    assert "not valid JSON" in shown["data"] and "stats.json" in shown["data"]
    assert "stages.jsonl:13: not valid JSON" in shown["stages"] and "decision: promote" in shown["stages"]
    assert [name for name, body in shown.items() if "could not show" in body] == ["data", "serving"]


def test_lineage_is_relative_to_the_run_and_leaves_checkpoints_out(make_run):
    run = make_run()
    lineage = sections(build_report(run).read_text(encoding="utf-8"))["lineage"]
    assert str(run) not in lineage
    assert "checkpoints" not in lineage and "step_40" not in lineage
    assert lineage.count("<tr>") == 1 + 12  # header + every manifest but the checkpoint's


def test_the_page_in_a_browser(make_run):
    check_page(build_report(make_run()), ARTIFACTS / "report_page.png")
