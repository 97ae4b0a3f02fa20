from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.config import ConfigError, commented_yaml, load, parse_overrides
from lmforge.pipeline import RunConfig
from lmforge.train import PretrainConfig

REPO = Path(__file__).resolve().parents[2]


def test_overrides_nest_and_parse_yaml_scalars():
    assert parse_overrides(["train.lr=3e-4", "train.steps=10", "model.preset=small", "name=x"]) == {
        "train": {"lr": 3e-4, "steps": 10}, "model": {"preset": "small"}, "name": "x"}


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["train.lr"])


def test_unknown_key_names_the_key_and_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        load(RunConfig, overrides=["train.lrr=1"])
    message = str(err.value)
    assert "'train.lrr'" in message and "lr" in message and "warmup_fraction" in message


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match="train.steps"):
        load(RunConfig, overrides=["train.steps=many"])


def test_unknown_preset_lists_valid_presets():
    with pytest.raises(ConfigError, match="valid presets: .*tiny"):
        load(RunConfig, overrides=["model.preset=huge"])


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: no such file .expected a YAML config file."):
        load(RunConfig, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=f"{tmp_path}: is a folder"):
        load(RunConfig, tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: not valid YAML"):
        load(RunConfig, bad)


def test_set_value_that_is_not_yaml_is_named():
    with pytest.raises(ConfigError, match=r"--set 'corpus.sources=\[a': the value is not valid YAML"):
        parse_overrides(["corpus.sources=[a"])


def test_typed_values_arrive_as_given_and_win(tmp_path):
    """Options reach a config as values, never as YAML text: quotes, spaces, `#` and `: ` survive."""
    odd = tmp_path / "it's a #1: path"
    config = tmp_path / "run.yaml"
    config.write_text("name: from-file\nroot: from-file\n")
    cfg = load(RunConfig, config, ["root=from-set", "name=from-set", "corpus.seed=3"],
               {"root": odd, "corpus": {"sources": [odd]}})
    assert cfg.root == odd and cfg.corpus.sources == [odd]
    assert cfg.name == "from-set" and cfg.corpus.seed == 3  # values merge, section by section


def test_micro_batch_must_divide_batch():
    with pytest.raises(ConfigError, match="micro_batch_size=3 must divide batch_size=8"):
        load(RunConfig, overrides=["train.batch_size=8", "train.micro_batch_size=3"])


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    kind = RunConfig if path.parent.name == "configs" else PretrainConfig
    load(kind, path)


def test_quickstart_yaml_spells_out_the_defaults_of_lmforge_run():
    assert load(RunConfig, REPO / "configs" / "quickstart.yaml") == RunConfig()


def test_commented_yaml_round_trips_and_carries_help(tmp_path):
    cfg = load(RunConfig, overrides=["train.lr=3e-4", "model.position=rotary"])
    text = commented_yaml(cfg)
    assert "# Peak learning rate, reached at the end of warm-up." in text
    path = tmp_path / "resolved.yaml"
    path.write_text(text)
    assert load(RunConfig, path) == cfg
