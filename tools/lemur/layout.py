"""Where the LEMUR corpus lives under the home folder, and the base of its errors.

    <home>/lemur/nn/<model>.py      the model files, extracted as they are in the wheel
    <home>/lemur/index.sqlite       models, training records and summaries (see `index.py`)
    <home>/lemur/.pull.lock         serialises concurrent pulls

The bottom module of `nasgraph.tools.lemur`: the others import it, it imports none of them.
"""
from __future__ import annotations

from pathlib import Path

from nasgraph.errors import NasgraphError

INDEX = "index.sqlite"
MODELS_DIR = "nn"
LOCK = ".pull.lock"
# Names of work folders a pull leaves behind only when it is killed; the next pull removes them.
TEMP_PREFIXES = (".download-", ".build-")


class LemurError(NasgraphError):
    """The LEMUR corpus cannot be fetched, verified, indexed or read; the message says what to do."""


def lemur_dir(home: Path) -> Path:
    return Path(home).expanduser() / "lemur"


def index_path(root: Path) -> Path:
    return Path(root) / INDEX
