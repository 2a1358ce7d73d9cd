"""SEARCH/REPLACE edit blocks in a chat reply, applied to the module they edit.

A child of a parent design can be asked for as edits instead of a whole module (`loop.child_format =
"edit"`): a few changed lines are a fraction of the tokens. Small models copy the SEARCH lines with
their indentation shifted or trailing spaces changed, and decorate the markers, so a block is matched
line by line ignoring surrounding whitespace, and the replacement re-indented by the shift. They also
misremember a number in one line of a longer block (`Conv2d(128, 128` for the parent's `Conv2d(64, 128`):
such a block still applies at the one place it nearly matches, and its unchanged context lines keep the
parent's text. A block that matches nowhere is skipped and counted: the caller sees how many applied.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

_SEARCH = re.compile(r"^\s*<{3,}\s*SEARCH\s*$", re.I)
_DIVIDER = re.compile(r"^\s*={3,}(.*)$")
_REPLACE = re.compile(r"^\s*>{3,}\s*REPLACE\s*$", re.I)
_FENCE = re.compile(r"^\s*```")
# A near match: every SEARCH line but one equal to the module's, that one this similar (difflib ratio), in a
# block this long, at exactly one place. Shorter blocks are too easily someone else's line (conv2 for conv3).
NEAR_RATIO = 0.85
NEAR_MIN_LINES = 3


@dataclass(frozen=True)
class Edit:
    search: list[str]
    replace: list[str]


@dataclass(frozen=True)
class Applied:
    code: str
    blocks: int   # edit blocks found in the reply
    applied: int  # of them, those whose SEARCH lines were found and replaced by other lines
    copies: int   # of them, those found but replaced by the same lines (a copy, no edit)
    missed: tuple[Edit, ...]  # of them, those whose SEARCH lines were found nowhere


def parse_edits(reply: str) -> list[Edit]:
    """Every SEARCH/=======/REPLACE block, in order; fences and prose around them are ignored. The 1.5B
    model often ends its last block without the REPLACE marker, writes the first new line on the divider's
    line, or repeats the SEARCH lines after the divider and a second one: a block whose divider was seen ends
    at REPLACE, a fence, the next SEARCH or the end, and its replacement is what follows its last divider."""
    edits: list[Edit] = []
    search: list[str] | None = None
    replace: list[str] | None = None

    def close() -> None:
        if search is not None and replace is not None and any(s.strip() for s in search):
            edits.append(Edit(search, replace))

    for line in reply.splitlines():
        divider = _DIVIDER.match(line)
        if _SEARCH.match(line):
            close()
            search, replace = [], None
        elif search is not None and divider:
            # A second divider: the 1.5B model copied the SEARCH lines again before the new ones.
            replace = [divider.group(1)] if divider.group(1).strip() else []
        elif replace is not None and (_REPLACE.match(line) or _FENCE.match(line)):
            close()
            search, replace = None, None
        elif replace is not None:
            replace.append(line)
        elif search is not None:
            search.append(line)
    close()
    return edits


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _find(lines: list[str], want: list[str]) -> int | None:
    """Index of the first run of `lines` equal to `want` (stripped SEARCH lines), ignoring indentation."""
    for i in range(len(lines) - len(want) + 1):
        if all(lines[i + k].strip() == w for k, w in enumerate(want)):
            return i
    return None


def _find_near(lines: list[str], want: list[str]) -> int | None:
    """Index of the one run of `lines` that `want` nearly matches (see NEAR_RATIO), or None."""
    if len(want) < NEAR_MIN_LINES:
        return None
    found = []
    for i in range(len(lines) - len(want) + 1):
        odd = [k for k, w in enumerate(want) if lines[i + k].strip() != w]
        if len(odd) == 1 and difflib.SequenceMatcher(None, lines[i + odd[0]].strip(),
                                                     want[odd[0]]).ratio() >= NEAR_RATIO:
            found.append(i)
    return found[0] if len(found) == 1 else None


def _apply_one(code: str, edit: Edit) -> str | None:
    lines = code.splitlines()
    search = _trimmed(edit.search)
    want = [s.strip() for s in search]
    if not want:
        return None
    at, near = _find(lines, want), False
    if at is None:
        at, near = _find_near(lines, want), True
        if at is None:
            return None
    # Re-indent the replacement by how far the model's copy was shifted from the module's lines (none
    # when it copied them exactly).
    have, gave = _indent(lines[at]), _indent(search[0])
    shifted = [(have + r[len(gave):] if r.startswith(gave) else have + r.lstrip()) if r.strip() else r
               for r in edit.replace]
    if near:
        # Where the REPLACE repeats the model's (misremembered) SEARCH lines it keeps them, so those keep
        # the module's text; only the lines it wrote new or changed are its.
        old = lines[at:at + len(search)]
        ops = difflib.SequenceMatcher(None, want, [r.strip() for r in edit.replace], autojunk=False)
        shifted = [line for tag, i1, i2, j1, j2 in ops.get_opcodes()
                   for line in (old[i1:i2] if tag == "equal" else shifted[j1:j2])]
    return "\n".join(lines[:at] + shifted + lines[at + len(search):]) + ("\n" if code.endswith("\n") else "")


def _trimmed(lines: list[str]) -> list[str]:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]


def apply_edits(code: str, reply: str) -> Applied:
    """`code` with every block of `reply` that matches applied, in order, each to the result of the last."""
    edits = parse_edits(reply)
    applied = copies = 0
    missed: list[Edit] = []
    for edit in edits:
        out = _apply_one(code, edit)
        if out is None:
            missed.append(edit)
        elif out == code:  # a block that copies its lines unchanged is no edit
            copies += 1
        else:
            code, applied = out, applied + 1
    return Applied(code, len(edits), applied, copies, tuple(missed))
