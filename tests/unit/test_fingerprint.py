"""Canonical ids ignore what does not change the network and change with what does; novelty is 1 - Jaccard."""
from __future__ import annotations

import json
import random

import pytest

from nasgraph.tools.fingerprint import (
    NUM_PERM,
    NoveltyIndex,
    canonical_id,
    minhash,
    minhash_from_bytes,
    minhash_to_bytes,
    normalize,
    shingles,
)

BASE = '''
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        channels = in_shape[1]
        self.conv1 = nn.Conv2d(channels, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(prm.get("dropout", 0.2))
        self.fc = nn.Linear(64, out_shape[0])

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        x = self.pool(x).flatten(1)
        return self.fc(self.drop(x))
'''

# Same network: comments, a docstring, other blank lines/quotes/wrapping, renamed locals and args,
# annotations.
SAME = '''
"""A module docstring."""
import torch
import torch.nn as nn
class Net(nn.Module):
    """Two convs and a head."""

    def __init__(me, shape_in: tuple, shape_out, hp: dict, dev) -> None:
        super().__init__()   # always first
        c: int = shape_in[1]
        me.conv1 = nn.Conv2d(c, 32, 3,
                             padding=1)
        me.bn1 = nn.BatchNorm2d(32)
        # second stage
        me.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        me.pool = nn.AdaptiveAvgPool2d(1)
        me.drop = nn.Dropout(hp.get('dropout', 0.2))
        me.fc = nn.Linear(64, shape_out[0])
    def forward(me, inp):
        """Forward pass."""
        inp = torch.relu(me.bn1(me.conv1(inp)))
        inp = torch.relu(me.conv2(inp))

        inp = me.pool(inp).flatten(1)
        return me.fc(me.drop(inp))
'''

VERY_DIFFERENT = '''
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.a = nn.Conv2d(cin, cout, 1, bias=False)
        self.b = nn.Conv2d(cout, cout, 3, stride=stride, padding=1, groups=cout, bias=False)
        self.n = nn.GroupNorm(4, cout)
        self.skip = nn.Identity() if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride=stride)

    def forward(self, t):
        return F.gelu(self.n(self.b(self.a(t)))) + self.skip(t)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        widths = [16, 24, 48, 96]
        layers, cin = [], in_shape[1]
        for i, w in enumerate(widths):
            layers.append(Block(cin, w, 2 if i else 1))
            cin = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(cin, out_shape[0]))

    def forward(self, t):
        return self.head(self.body(t))
'''


def test_invariant_to_comments_docstrings_formatting_and_local_renames():
    assert canonical_id(SAME) == canonical_id(BASE)
    assert normalize(SAME) == normalize(BASE)


def test_normalized_code_is_valid_python_with_numbered_locals():
    src = normalize(BASE)
    compile(src, "<normalized>", "exec")
    assert "def forward(v0, v1):" in src
    assert "self" not in src and "channels" not in src
    assert "self.conv1" not in src and "v0.conv1" in src  # attribute names are structure


@pytest.mark.parametrize("change", [
    ("Conv2d(32, 64, 3", "Conv2d(32, 96, 3"),             # channel count
    ("nn.Linear(64, out", "nn.Linear(96, out"),
    ("torch.relu(self.conv2(x))", "torch.relu(self.bn1(self.conv2(x)))"),
    ("self.pool = nn.AdaptiveAvgPool2d(1)", "self.pool = nn.AdaptiveMaxPool2d(1)"),  # different layer
    ("self.conv1 =", "self.first =")                       # attribute names are structure
])
def test_architectural_changes_change_the_id(change):
    changed = BASE.replace(*change)
    assert changed != BASE
    assert canonical_id(changed) != canonical_id(BASE)


def test_added_layer_changes_the_id():
    added = BASE.replace("        self.pool =", "        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)\n        self.pool =")
    added = added.replace("x = self.pool(x)", "x = torch.relu(self.conv3(x))\n        x = self.pool(x)")
    assert canonical_id(added) != canonical_id(BASE)


def test_reusing_a_name_or_taking_a_new_one_is_the_same_dataflow():
    reuse = "def forward(self, x):\n    x = self.a(x)\n    x = self.b(x)\n    return self.c(x)\n"
    fresh = "def forward(self, inp):\n    h = self.a(inp)\n    out = self.b(h)\n    return self.c(out)\n"
    rewired = "def forward(self, inp):\n    h = self.a(inp)\n    out = self.b(inp)\n    return self.c(out)\n"
    assert canonical_id(reuse) == canonical_id(fresh)
    assert canonical_id(rewired) != canonical_id(fresh)  # a different graph: b reads the input


def test_names_bound_in_branches_keep_one_number():
    a = "def f(x):\n    y = g(x)\n    if y:\n        y = h(y)\n    return y\n"
    b = "def f(x):\n    z = g(x)\n    if z:\n        z = h(z)\n    return z\n"
    c = "def f(x):\n    z = g(x)\n    if z:\n        w = h(z)\n    return z\n"
    assert canonical_id(a) == canonical_id(b) != canonical_id(c)
    compile(normalize(a), "<n>", "exec")


def test_globals_and_imported_names_are_not_renamed():
    a = "import torch\nWIDTH = 8\ndef f(x):\n    return torch.zeros(WIDTH) + x\n"
    b = "import torch\nWIDTH = 8\ndef f(y):\n    return torch.zeros(WIDTH) + y\n"
    c = "import torch\nSIZE = 8\ndef f(y):\n    return torch.zeros(SIZE) + y\n"
    assert canonical_id(a) == canonical_id(b)
    assert canonical_id(a) != canonical_id(c)
    assert "torch.zeros(WIDTH)" in normalize(a)


def test_global_declaration_and_closures_keep_meaning():
    src = ("COUNT = 0\n"
           "def outer(a):\n"
           "    global COUNT\n"
           "    COUNT = a\n"
           "    def inner(b):\n"
           "        return a + b\n"
           "    return inner\n")
    out = normalize(src)
    assert "COUNT = v0" in out                 # the global stays a global
    assert "def inner(v1):" in out and "return v0 + v1" in out  # the closure sees the outer local


def test_syntax_error_raises():
    with pytest.raises(SyntaxError):
        canonical_id("class Net(nn.Module:\n    pass")


def test_shingles_and_minhash_work_on_unparsable_code():
    bad = "class Net(nn.Module:\n    def forward(self, x): return x"
    assert shingles(bad)
    assert minhash(bad).jaccard(minhash(bad)) == 1.0


def test_shingles_ignore_comments_and_tiny_inputs():
    assert shingles(BASE) == shingles(SAME)
    assert shingles("x = 1") == {"\x1f".join(["x", "=", "1", "\n"])}
    assert shingles("") == set()


def test_minhash_bytes_round_trip():
    m = minhash(BASE)
    m2 = minhash_from_bytes(minhash_to_bytes(m))
    assert m.jaccard(m2) == 1.0
    assert len(minhash_to_bytes(m)) == 128 * 4


def test_novelty_identical_near_and_far():
    idx = NoveltyIndex()
    idx.add("base", BASE)
    near = BASE.replace("Conv2d(32, 64, 3", "Conv2d(32, 48, 3").replace("Linear(64,", "Linear(48,")
    assert idx.novelty(SAME) == (0.0, "base")
    near_novelty, key = idx.novelty(near)
    assert key == "base" and 0.0 < near_novelty < 0.35
    far_novelty, _ = idx.novelty(VERY_DIFFERENT)
    assert far_novelty > 0.8


def test_empty_index_is_fully_novel():
    assert NoveltyIndex().novelty(BASE) == (1.0, None)


def _variant(i: int) -> str:
    rng = random.Random(i)
    layers = "\n".join(f"        self.l{j} = nn.Conv2d({rng.choice([8, 16, 32, 64])}, "
                       f"{rng.choice([8, 16, 32, 64])}, {rng.choice([1, 3, 5])})" for j in range(rng.randint(2, 8)))
    act = rng.choice(["relu", "gelu", "silu", "tanh"])
    return (f"import torch.nn as nn\nclass Net{i}(nn.Module):\n    def __init__(self, a, b, c, d):\n"
            f"        super().__init__()\n{layers}\n    def forward(self, x):\n        return nn.functional.{act}(x)\n")


@pytest.mark.parametrize("scan_below", [10_000, 1])  # pure scan, and LSH candidates first
def test_nearest_key_is_right_among_many(scan_below):
    idx = NoveltyIndex(scan_below=scan_below)
    codes = {f"k{i}": _variant(i) for i in range(60)}
    for key, code in codes.items():
        idx.add(key, code)
    idx.add("base", BASE)
    idx.add("far", VERY_DIFFERENT)
    assert len(idx) == 62
    for key in ("k7", "k33", "base", "far"):
        code = codes.get(key, {"base": BASE, "far": VERY_DIFFERENT}.get(key))
        assert idx.novelty(code) == (0.0, key)
    # A near copy of "far" finds "far", through LSH or the scan alike.
    novelty, key = idx.novelty(VERY_DIFFERENT.replace("[16, 24, 48, 96]", "[16, 32, 48, 96]"))
    assert key == "far" and novelty < 0.2


@pytest.mark.parametrize("scan_below", [10_000, 1])
def test_excluded_keys_are_not_rivals(scan_below):
    # A repaired design is measured against earlier designs, not against the drafts it came from.
    idx = NoveltyIndex(scan_below=scan_below)
    idx.add("draft", BASE)
    idx.add("far", VERY_DIFFERENT)
    assert idx.novelty(SAME, exclude=["draft"])[1] == "far"
    assert idx.novelty(SAME, exclude=["draft"])[0] > 0.5
    assert idx.novelty(SAME, exclude=["draft", "far", "unknown"]) == (1.0, None)
    assert idx.novelty(SAME, exclude=["unknown"]) == (0.0, "draft")


def test_readding_a_key_is_a_noop_and_bad_signature_rejected():
    idx = NoveltyIndex()
    idx.add("a", BASE)
    idx.add("a", VERY_DIFFERENT)
    assert len(idx) == 1 and idx.novelty(BASE) == (0.0, "a")
    with pytest.raises(ValueError):
        idx.add_minhash("b", minhash(BASE, num_perm=64))


def test_index_scan_agrees_with_datasketch_among_thousands():
    # Speed is in bench/novelty.py; here the vectorised scan must give datasketch's own answer.
    import numpy as np
    idx = NoveltyIndex()
    rng = np.random.default_rng(0)
    stored = [minhash_from_bytes(rng.integers(0, 2**32, 128, dtype=np.uint64).astype("<u4").tobytes())
              for _ in range(3000)]
    for i, m in enumerate(stored):
        idx.add_minhash(f"r{i}", m)
    idx.add("base", BASE)
    near = minhash(BASE.replace("Conv2d(32, 64, 3", "Conv2d(32, 48, 3"))
    novelty, key = idx.novelty_of(near)
    assert key == "base" and novelty == pytest.approx(1.0 - near.jaccard(minhash(BASE)))
    random_best = max(near.jaccard(m) for m in stored)
    assert idx.novelty_of(near, exclude=["base"])[0] == pytest.approx(1.0 - random_best)


def test_a_candidate_carries_its_identity_through_the_checkpoint():
    from nasgraph.tools.candidate import Candidate, architecture_id

    code = "import torch.nn as nn\n\nclass Net(nn.Module):\n    def forward(self, x):\n        return x\n"
    cand = Candidate.of(code)
    assert cand.parsed and cand.arch_id == canonical_id(code) == architecture_id(code)
    assert len(cand.signature) == NUM_PERM and cand.minhash.jaccard(minhash(code)) == 1.0
    back = Candidate.from_state(json.loads(json.dumps(cand.to_state())))  # what the SQLite checkpoint keeps
    assert back == cand
    broken = Candidate.of("def f(:\n")
    assert not broken.parsed and broken.arch_id == architecture_id("def f(:\n  ") != cand.arch_id
