"""Novelty against the LEMUR corpus: a MinHash index over its model files.

"Absent from the corpus" is how the self-improvement seed counts its novel designs: a design whose
MinHash–Jaccard similarity to every corpus file stays under the threshold. The signatures (same
shingles and permutations as the store's, nasgraph.tools.fingerprint) are computed once per pulled
wheel, ~10k files in about a minute, and cached beside the index as `minhash.npz`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nasgraph.tools.fingerprint import NUM_PERM, NoveltyIndex, minhash, minhash_from_bytes
from nasgraph.tools.lemur.index import read_meta
from nasgraph.tools.lemur.layout import MODELS_DIR, index_path
from nasgraph.tools.lemur.query import LemurNotPulled

CACHE = "minhash.npz"


def _wheel_sha(root: Path) -> str:
    meta = read_meta(index_path(root))
    if not meta:
        raise LemurNotPulled(f"no LEMUR index in {root}: run `nasgraph lemur pull` first")
    return str(meta.get("wheel_sha256", ""))


def _signatures(root: Path, wheel_sha: str) -> tuple[list[str], np.ndarray]:
    cache = root / CACHE
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if str(z["wheel_sha256"]) == wheel_sha and z["signatures"].shape[1] == NUM_PERM:
                return [str(n) for n in z["names"]], z["signatures"]
    files = sorted((root / MODELS_DIR).glob("*.py"))
    names = [f.stem for f in files]
    sigs = np.stack([np.asarray(minhash(f.read_text(errors="replace")).hashvalues, dtype=np.uint32) for f in files]) \
        if files else np.empty((0, NUM_PERM), dtype=np.uint32)
    tmp = root / (CACHE + ".tmp.npz")
    np.savez(tmp, names=np.array(names), signatures=sigs, wheel_sha256=np.array(wheel_sha))
    os.replace(tmp, cache)
    return names, sigs


def corpus_index(root: Path) -> NoveltyIndex:
    """Every LEMUR model file's signature, keyed `lemur:<model name>`."""
    root = Path(root)
    names, sigs = _signatures(root, _wheel_sha(root))
    index = NoveltyIndex(scan_below=len(names) + 1)  # an exact scan: ~1 ms per query at this size
    for name, sig in zip(names, sigs):
        index.add_minhash(f"lemur:{name}", minhash_from_bytes(sig.astype("<u4").tobytes()))
    return index
