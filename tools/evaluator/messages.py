"""Parsers for the evaluator's error texts (its own lines, written by child.py and harness.py, and the
torch messages they wrap). The rule fixes and the repair hints both read errors here, so a change to a
format breaks one place."""
from __future__ import annotations

import re

# child.py's line under a failing forward: the module's path, its class, and the shape it was given.
MODULE = re.compile(r"in module '([\w.]+)' = (\w+)(?:\(.*\))?, called with input shape \(([\d, ]+)\)")
MATMUL = re.compile(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x\d+\)")
CHANNELS = re.compile(r"to have \d+ channels, but got \d+ channels|running_mean should contain \d+ elements")
NO_ATTR = re.compile(r"'(\w+)' object has no attribute '(\w+)'")
ASSIGN_FN = re.compile(r"cannot assign '[\w.]*?(\w+)' as child module '(\w+)'")
NO_INPUT = re.compile(r"(\w+)\(\) missing 1 required positional argument: 'input'")
GROUPS = re.compile(r"(in|out)_channels must be divisible by groups")
TOO_SMALL = re.compile(r"Output size is too small|Kernel size can't be greater than actual input size", re.I)
NO_MODULE_ATTR = re.compile(r"module '(torch\.nn(?:\.functional)?)' has no attribute '(\w+)'")
INPLACE = re.compile(r"modified by an inplace operation")
FORBIDDEN_MODULE = re.compile(r"forbidden: line (\d+): [\w.]+: module '[\w.]+' is not allowed")
DEVICE_KW = re.compile(r"got an unexpected keyword argument 'device'")
UNEXPECTED_KW = re.compile(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'")
RANK = re.compile(r"expected \d+D (?:or \d+D )?input \(got \d+D input\)")
SPATIAL = re.compile(r"Sizes of tensors must match except in dimension 1\. Expected size (\d+) but got size (\d+)"
                     r"|size of tensor a \((\d+)\) must match the size of tensor b \((\d+)\) at non-singleton dimension [23]")
UNINITIALIZED = re.compile(r"Can't access the shape of an uninitialized parameter")
OUTPUT = re.compile(r"output shape: expected \((\d+), (\d+)\) \(batch, classes\) for input \([\d, ]+\), got \(([\d, ]+)\)")
UNDEFINED = re.compile(r"NameError: name '(\w+)' is not defined")
_LINE = re.compile(r'File "<candidate>", line (\d+)')
_OVER = re.compile(r"([\d,]+) (parameters|FLOPs) (?:per sample )?exceed the budget of ([\d,]+)")
_SLOW = re.compile(r"projected epoch time ([\d.]+)s exceeds the budget of ([\d.]+)s")


def budget_excess(error: str) -> dict[str, tuple[float, float]]:
    """{'parameters' | 'FLOPs' | 'epoch time': (measured, budget)} for each budget the error says was exceeded."""
    found = {what: (float(a.replace(",", "")), float(b.replace(",", ""))) for a, what, b in _OVER.findall(error)}
    for a, b in _SLOW.findall(error):
        found["epoch time"] = (float(a), float(b))
    return found


def dims(shape: str) -> list[int]:
    """'2, 16, 1, 1' (a shape as MODULE and OUTPUT capture it) -> [2, 16, 1, 1]."""
    return [int(s) for s in shape.split(",") if s.strip()]


def candidate_line(error: str) -> int | None:
    """The candidate's line in the innermost traceback frame that is the candidate's own."""
    found = _LINE.findall(error)
    return int(found[-1]) if found else None
