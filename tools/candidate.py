"""A design's identity, computed once from its code and passed on: the architecture id that
de-duplicates it and the MinHash signature that measures its novelty.

The node that writes a draft builds its `Candidate`; the checks, the novelty query, the cache lookup
and the store all read these fields instead of parsing and hashing the same text again. `to_state` /
`from_state` carry it through the LangGraph checkpoint as plain JSON.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasketch import MinHash

from . import fingerprint as fp


@dataclass(frozen=True)
class Candidate:
    code: str
    arch_id: str
    parsed: bool                  # False: the id is a hash of the raw text (code that does not parse)
    signature: tuple[int, ...]    # MinHash hash values (fingerprint.NUM_PERM of them)

    @classmethod
    def of(cls, code: str) -> Candidate:
        arch_id, parsed = _identify(code)
        return cls(code, arch_id, parsed, tuple(int(v) for v in fp.minhash(code).hashvalues))

    @property
    def minhash(self) -> MinHash:
        return fp.minhash_from_bytes(self.signature_bytes)

    @property
    def signature_bytes(self) -> bytes:
        return np.asarray(self.signature, dtype="<u4").tobytes()

    def to_state(self) -> dict[str, Any]:
        return {"code": self.code, "arch_id": self.arch_id, "parsed": self.parsed, "signature": list(self.signature)}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> Candidate:
        return cls(d["code"], d["arch_id"], d["parsed"], tuple(d["signature"]))


def _identify(code: str) -> tuple[str, bool]:
    try:
        return fp.canonical_id(code), True
    except (SyntaxError, ValueError, RecursionError):
        # Unparsable code is still stored (a syntax-error outcome) under a hash of its raw text.
        raw = "\n".join(line.rstrip() for line in code.strip().splitlines())
        return hashlib.sha256(("unparsed\0" + raw).encode("utf-8")).hexdigest()[:16], False


def architecture_id(code: str) -> str:
    """The id `Candidate.of(code)` gets, without the signature; for readers that need only the id."""
    return _identify(code)[0]
