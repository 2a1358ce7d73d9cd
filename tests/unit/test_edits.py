"""SEARCH/REPLACE edits of a parent module, as the 1.5B model writes them: markers decorated, lines
re-indented, fences around, blocks that match nothing."""
from nasgraph.agents.edits import Edit, apply_edits, parse_edits

PARENT = """import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.conv1 = nn.Conv2d(in_shape[1], 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, out_shape[0])

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
"""


def test_exact_blocks_apply_in_order():
    reply = """Here are the edits:
```python
<<<<<<< SEARCH
        self.conv1 = nn.Conv2d(in_shape[1], 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
=======
        self.conv1 = nn.Conv2d(in_shape[1], 48, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(48)
>>>>>>> REPLACE
<<<<<<< SEARCH
        self.fc = nn.Linear(32, out_shape[0])
=======
        self.fc = nn.Linear(48, out_shape[0])
>>>>>>> REPLACE
```"""
    done = apply_edits(PARENT, reply)
    assert (done.blocks, done.applied) == (2, 2)
    assert "Conv2d(in_shape[1], 48" in done.code and "BatchNorm2d(48)" in done.code and "Linear(48," in done.code
    assert "32" not in done.code.split("def forward")[0].split("super().__init__()")[1]
    compile(done.code, "<child>", "exec")


def test_shifted_indentation_and_decorated_markers_still_apply():
    reply = """<<<<<<<< SEARCH
self.fc = nn.Linear(32, out_shape[0])
======
self.drop = nn.Dropout(0.2)
self.fc = nn.Linear(32, out_shape[0])
>>>>>>>> REPLACE"""
    done = apply_edits(PARENT, reply)
    assert done.applied == 1
    assert "        self.drop = nn.Dropout(0.2)\n        self.fc = nn.Linear(32" in done.code
    compile(done.code, "<child>", "exec")


def test_a_block_that_matches_nothing_is_counted_not_applied():
    reply = """<<<<<<< SEARCH
        self.conv9 = nn.Conv2d(1, 2, 3)
=======
        self.conv9 = nn.Conv2d(1, 4, 3)
>>>>>>> REPLACE"""
    done = apply_edits(PARENT, reply)
    assert (done.blocks, done.applied, done.copies, done.code) == (1, 0, 0, PARENT)
    assert done.missed == (Edit(["        self.conv9 = nn.Conv2d(1, 2, 3)"], ["        self.conv9 = nn.Conv2d(1, 4, 3)"]),)


def test_incomplete_and_empty_blocks_are_not_edits():
    assert parse_edits("no blocks here") == []
    assert parse_edits("<<<<<<< SEARCH\n=======\nx = 1\n>>>>>>> REPLACE") == []  # nothing to find
    assert parse_edits("<<<<<<< SEARCH\nx = 1\n") == []  # cut before the divider


def test_a_block_without_its_replace_marker_ends_at_the_fence_or_the_end():
    reply = "```python\n<<<<<<< SEARCH\nx = 1\n=======y = 2\nz = 3\n```\nThat adds z."
    assert parse_edits(reply) == [Edit(["x = 1"], ["y = 2", "z = 3"])]
    assert parse_edits("<<<<<<< SEARCH\nx = 1\n=======\nx = 2") == [Edit(["x = 1"], ["x = 2"])]


def test_a_repeated_divider_and_an_unchanged_copy():
    reply = "<<<<<<< SEARCH\nx = 1\n=======\nx = 1\n=======\nx = 1\ny = 2\n>>>>>>> REPLACE"
    assert parse_edits(reply) == [Edit(["x = 1"], ["x = 1", "y = 2"])]
    same = "<<<<<<< SEARCH\n        self.bn1 = nn.BatchNorm2d(32)\n=======\n        self.bn1 = nn.BatchNorm2d(32)\n>>>>>>> REPLACE"
    done = apply_edits(PARENT, same)
    assert (done.code, done.blocks, done.applied, done.copies, done.missed) == (PARENT, 1, 0, 1, ())  # a copy is no edit


def test_a_block_with_one_misremembered_line_applies_where_it_nearly_matches_and_keeps_the_parents_line():
    # As the 1.5B wrote it: the stage's first conv recalled as 64 channels where the parent has 32.
    reply = """<<<<<<< SEARCH
        self.conv1 = nn.Conv2d(in_shape[1], 64, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, out_shape[0])
=======
        self.conv1 = nn.Conv2d(in_shape[1], 64, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(32, out_shape[0])
>>>>>>> REPLACE"""
    done = apply_edits(PARENT, reply)
    assert (done.applied, done.missed) == (1, ())
    assert ("        self.conv1 = nn.Conv2d(in_shape[1], 32, 3, padding=1)\n        self.bn1 = nn.BatchNorm2d(32)\n"
            "        self.drop = nn.Dropout(0.2)\n        self.fc = nn.Linear(32") in done.code
    assert "64" not in done.code
    # the same block, copied without indentation: the parent's lines keep theirs, the new line gets it
    flat = "\n".join(line.strip() for line in reply.splitlines())
    assert apply_edits(PARENT, flat).code == done.code


def test_a_near_match_that_is_short_loose_or_in_two_places_is_not_applied():
    two_lines = """<<<<<<< SEARCH
        self.bn1 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(64, out_shape[0])
=======
        self.fc = nn.Linear(64, out_shape[0])
>>>>>>> REPLACE"""
    two_wrong = """<<<<<<< SEARCH
        self.conv1 = nn.Conv2d(in_shape[1], 64, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(64)
        self.fc = nn.Linear(32, out_shape[0])
=======
        self.fc = nn.Linear(32, out_shape[0])
>>>>>>> REPLACE"""
    for reply in (two_lines, two_wrong):
        done = apply_edits(PARENT, reply)
        assert (done.applied, len(done.missed), done.code) == (0, 1, PARENT)
    twice = "self.a = nn.ReLU()\nself.b = nn.ReLU()\n" * 2 + "self.a = nn.ReLU()\n"
    reply = ("<<<<<<< SEARCH\nself.a = nn.ReLU()\nself.b = nn.ReLU()\nself.a = nn.GELU()\n=======\nself.c = nn.ReLU()\n"
             ">>>>>>> REPLACE")
    assert apply_edits(twice, reply).applied == 0
