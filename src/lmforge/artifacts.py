"""On-disk contracts shared by every stage: atomic writes, manifests, run folders.

An artifact is a plain folder with a `manifest.json` saying what made it (stage, resolved
config, parents with their sha256, package version, time) and the sha256 of its own files.
Writers go through a temporary name and `os.replace`, so a crash never leaves a half-written
file or folder where a reader would take it for a complete one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from lmforge.errors import READ_ERRORS, LmforgeError, unreadable

MANIFEST = "manifest.json"
_UMASK = os.umask(0)
os.umask(_UMASK)


class ArtifactError(LmforgeError):
    """An artifact folder that is missing, incomplete or of the wrong kind."""


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """An OSError while creating `path` (no permission, a parent that is a file, a full disk)
    becomes an ArtifactError naming it: where output goes is the user's choice. Wrap only the
    creating, not work whose own OSErrors mean something else."""
    try:
        yield
    except (FileExistsError, NotADirectoryError):
        raise ArtifactError(f"{path}: cannot write here (part of the path is a file, not a folder)") from None
    except OSError as err:
        raise ArtifactError(f"{path}: cannot write here ({err.strerror or err})") from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts are shared like any file
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; it becomes `path` only if the block succeeds."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ArtifactError(f"{path}: already exists; remove it or choose another name")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        tmp.chmod(0o777 & ~_UMASK)
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lmforge")
    except PackageNotFoundError:
        return "0+unknown"


def write_manifest(
    folder: str | Path,
    stage: str,
    config: dict[str, Any] | None = None,
    parents: list[str | Path] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Record how `folder` was made. Parents are artifact folders (or files) it was made from."""
    folder = Path(folder)
    files = {
        str(p.relative_to(folder)): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }
    manifest = {
        "stage": stage,
        "lmforge_version": _package_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config or {},
        "parents": [_parent_entry(Path(p)) for p in parents or []],
        "files": files,
        **(extra or {}),
    }
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def _parent_entry(parent: Path) -> dict[str, str]:
    """A parent is pinned by the sha256 of its manifest (folders) or of itself (files)."""
    target = parent / MANIFEST if parent.is_dir() else parent
    digest = sha256_file(target) if target.is_file() else "missing"
    return {"path": str(parent.resolve()), "sha256": digest}


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of an artifact folder; a folder without one is not an artifact (or unfinished)."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        raise ArtifactError(f"{folder}: not an lmforge artifact (no {MANIFEST})") from None
    except READ_ERRORS as err:
        raise ArtifactError(unreadable(path, err, "an artifact manifest")) from None
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path}:{err.lineno}: manifest is not valid JSON ({err.msg})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    return manifest


RUN_SUBDIRS = ("datasets", "tokenizers", "checkpoints", "models", "exports", "logs", "report")


def run_layout(root: str | Path, name: str) -> dict[str, Path]:
    """The folders of `runs/<name>/` as docs/architecture.md lays them out (created on demand)."""
    base = Path(root) / name
    layout = {sub: base / sub for sub in RUN_SUBDIRS}
    layout["root"] = base
    for path in layout.values():
        path.mkdir(parents=True, exist_ok=True)
    return layout


def tokenizer_file(path: str | Path) -> Path:
    """The tokenizer.json of a tokenizer folder or a model folder, or the file itself."""
    path = Path(path)
    found = path / "tokenizer.json" if path.is_dir() else path
    if not found.is_file():
        raise ArtifactError(f"{path}: no tokenizer.json found (expected a tokenizer folder, a model folder "
                            "or the file)")
    return found


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The one tokenizer reader: a tokenizer folder, a model folder, or the tokenizer.json itself.

    `tokenizers` reports a damaged file as a bare `Exception` without the path; this is where
    that becomes an `ArtifactError` naming the file.
    """
    file = tokenizer_file(path)
    try:
        return Tokenizer.from_file(str(file))
    except Exception as err:
        reason = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise ArtifactError(f"{file}: not a tokenizer file made by `lmforge tokenizer train` "
                            f"({reason})") from None
