"""A fake nn-dataset wheel in LEMUR's layout, and a LEMUR index built from it by the real indexer: the
fixture the LEMUR, predictor and HPO-prior tests share (no network, no real corpus)."""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

from nasgraph.tools.lemur import LemurWheel, lemur_dir
from nasgraph.tools.lemur import index as lemur_index

TRAIN = "ab/nn/stat/train"


def write_wheel(path: Path, stats: dict[str, object], models: dict[str, str], extra: bytes = b"") -> LemurWheel:
    """A wheel holding these model files (name -> code) and stat files (member path -> records), and the
    LemurWheel that pins it."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ab/nn/__init__.py", "")
        zf.writestr("ab/nn/api.py", "# not a model\n")
        zf.writestr("ab/nn/nn/__init__.py", "")
        for name, code in models.items():
            zf.writestr(f"ab/nn/nn/{name}.py", code)
        zf.writestr("ab/nn/stat/run/img-classification_AlexNet/android.json", "{}")
        zf.writestr("nn_dataset-9.9.9.dist-info/METADATA", "Name: nn-dataset\n" + extra.decode())
        for name, content in stats.items():
            zf.writestr(name, content if isinstance(content, str) else json.dumps(content))
    data = path.read_bytes()
    return LemurWheel("nn-dataset==9.9.9", "nn_dataset-9.9.9-py3-none-any.whl", len(data),
                      hashlib.sha256(data).hexdigest())


def indexed(home: Path, stats: dict[str, object], models: dict[str, str]) -> Path:
    """Such a wheel indexed into home's LEMUR folder, as `nasgraph lemur pull` would; the folder."""
    wheel = home / "nn_dataset-9.9.9-py3-none-any.whl"
    pinned = write_wheel(wheel, stats, models)
    lemur_index.build(wheel, lemur_dir(home), wheel_name=pinned.filename, wheel_sha256=pinned.sha256)
    return lemur_dir(home)
