"""What a `--dataset` value names: a built-in set, an image folder or an `.npz` file, as one string.

A dataset travels through the whole system as a string (the config, the loop's task, the store's
rows, the request to the sandboxed child), so a user's own data is named by a canonical string too:

    fashion-mnist                    a built-in name (see nasgraph.tools.evaluator.datasets)
    /abs/path/to/folder@32           an image folder (train/<class>/*.jpg|png), resized to 32x32
    /abs/path/to/data.npz            arrays x_train, y_train, x_test, y_test, used at their own size
    own:1f0c2a9b7d3e4c51             a folder or .npz by its contents (own_data.dataset_key): what the
                                     store records, loaded from the data cache of those contents

The path is made absolute here, in the process the user started: the warm parent that loads the
data runs in a temporary folder with another HOME, where `./flowers` or `~/flowers` would name
nothing. The image size is part of the name, so results at 32 and at 64 pixels are never mixed up
in the store. The store keys a folder or .npz by its contents instead, so that the same images at
another path are the same dataset and changed images at the same path another one. People and prompts
see `short_name`, never the path. A bottom module: pathlib only, so the config can canonicalise
without importing torch.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nasgraph.errors import NasgraphError

# 32 px: CIFAR's size, what LEMUR's models were written for, and what a CPU trains in minutes.
DEFAULT_IMAGE_SIZE = 32
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 4, 512
_SIZED = re.compile(r"^(?P<path>.+)@(?P<size>\d+)$")
CONTENT_PREFIX = "own:"
_CONTENT = re.compile(rf"^{CONTENT_PREFIX}[0-9a-f]{{16}}$")


class BadDataset(NasgraphError, ValueError):
    """A user's dataset that cannot be used as given; the message names the files or the setting."""


@dataclass(frozen=True)
class DatasetRef:
    kind: Literal["name", "folder", "npz", "content"]
    path: str            # the built-in name, the absolute path of the folder / .npz, or the content key
    size: int | None     # folders only: the square side images are resized to

    @property
    def spec(self) -> str:
        """The canonical string: what the store, the loop and the sandbox carry."""
        return f"{self.path}@{self.size}" if self.kind == "folder" else self.path

    @property
    def label(self) -> str:
        """A short name for tables and file names: the folder's or file's name (and the size)."""
        if self.kind in ("name", "content"):
            return self.path
        return f"{self.short_name}@{self.size}" if self.kind == "folder" else self.short_name

    @property
    def short_name(self) -> str:
        """How prompts name it: the built-in name, or the folder's or file's own name. Never the path (a
        user's folder names are theirs) nor the size (a prompt states the input shape beside it)."""
        if self.kind in ("name", "content"):
            return self.path
        return Path(self.path).name.removesuffix(".npz")


def is_path(spec: str) -> bool:
    """A path rather than a built-in name: it has a folder separator, starts with '~' or ends in .npz.
    A bare word is always a name (a folder `mnist` in the working directory is written ./mnist)."""
    return "/" in spec or os.sep in spec or spec.startswith("~") or spec.lower().endswith(".npz")


def is_content_key(spec: str) -> bool:
    return bool(_CONTENT.match(spec))


def _check_size(size: int) -> int:
    if not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        raise BadDataset(f"image size {size} is out of range: give {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels")
    return size


def parse(spec: str, image_size: int | None = None) -> DatasetRef:
    """The dataset a string names. `image_size` (a folder's side) wins over an '@N' in the string;
    without either a folder is read at DEFAULT_IMAGE_SIZE. Nothing is read from the disk here."""
    spec = (spec or "").strip()
    if not spec:
        raise BadDataset("no dataset given: a built-in name (see `nasgraph datasets`), an image folder or an .npz")
    if is_content_key(spec):
        return DatasetRef("content", spec, None)
    if not is_path(spec):
        return DatasetRef("name", spec, None)
    size = None
    m = _SIZED.match(spec)
    if m and not Path(spec).expanduser().exists():  # a folder literally named 'x@3' stays a folder
        spec, size = m["path"], int(m["size"])
    path = str(Path(spec).expanduser().resolve())
    if path.lower().endswith(".npz"):
        if image_size is not None or size is not None:
            raise BadDataset(f"{path}: an .npz file is used at the size its arrays have; "
                             "--image-size applies to image folders")
        return DatasetRef("npz", path, None)
    return DatasetRef("folder", path, _check_size(image_size or size or DEFAULT_IMAGE_SIZE))


def canonical(spec: str, image_size: int | None = None) -> str:
    """The canonical string of `spec` (idempotent: a canonical string maps to itself)."""
    return parse(spec, image_size).spec
