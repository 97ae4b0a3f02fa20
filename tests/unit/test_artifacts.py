from __future__ import annotations

import json

import pytest

from lmforge.artifacts import atomic_dir, atomic_write_text, read_manifest, sha256_file, write_manifest


def test_failed_atomic_dir_leaves_the_old_folder_intact(tmp_path):
    target = tmp_path / "artifact"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target, overwrite=True) as tmp:
        (tmp / "a.txt").write_text("half-written")
        raise RuntimeError("crash while writing")
    assert (target / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "f.json"
    atomic_write_text(path, "1")
    atomic_write_text(path, "22")
    assert path.read_text() == "22"
    assert list(tmp_path.iterdir()) == [path]


def test_manifest_pins_files_and_parents(tmp_path):
    parent = tmp_path / "parent"
    parent.mkdir()
    write_manifest(parent, "corpus")
    child = tmp_path / "child"
    child.mkdir()
    (child / "weights.bin").write_bytes(b"\x00\x01")
    manifest = write_manifest(child, "pretrain", {"lr": 1e-3}, parents=[parent])
    assert manifest["files"]["weights.bin"] == sha256_file(child / "weights.bin")
    assert manifest["parents"][0]["sha256"] == sha256_file(parent / "manifest.json")
    assert read_manifest(child)["config"] == {"lr": 1e-3}
    assert json.loads((child / "manifest.json").read_text())["stage"] == "pretrain"
