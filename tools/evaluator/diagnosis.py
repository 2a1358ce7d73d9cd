"""A failed candidate's typed diagnosis, built where the facts are known.

The sandboxed child knows the exception, the candidate's own frames, and (through its forward hooks)
the module that was running and the shapes it was given; the policy knows the lines it refused; the
budget check knows the figures. They fill these fields, and the repair rules, the repair hints and the
routers read them. The error text beside it stays for people and for the LLM.

Torch's own messages are the one thing that cannot be structured at the source; `classify_message`
reads them here, and nowhere else, into a `kind` and a few fields (`got`, `expected`, `name`, ...).
A torch release that rewords a message makes that kind fall back to "other", which a test of every
kind on real failures catches.
"""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

Kind = Literal[
    "syntax",               # does not parse
    "forbidden_import",     # the policy refused a module import
    "forbidden",            # the policy refused something else (call, attribute, name)
    "linear_size",          # mat1 and mat2 cannot be multiplied: a Linear built for another input size
    "channels",             # a conv or norm built for another channel count
    "groups",               # groups do not divide the channels
    "rank",                 # a layer given an input of the wrong rank (BatchNorm2d after the flatten)
    "spatial",              # tensors of different sizes joined: name "cat" or "add" (with the dim they differ in)
    "too_small",            # a pool or kernel larger than the map it is given
    "no_attribute",         # 'Owner' object has no attribute 'name'
    "undefined_name",       # NameError
    "assign_function",      # a function assigned where a module goes (self.flatten = torch.flatten)
    "missing_input",        # a functional called without its input where a layer goes (F.relu(inplace=True))
    "no_torch_attribute",   # torch.nn / torch.nn.functional has no such name (nn.GlobalAvgPool2d)
    "unexpected_keyword",   # a callee given a keyword it does not take (device=, groups=, **prm)
    "signature",            # a function called with the wrong number of positional arguments
    "inplace",              # an in-place op autograd still needed
    "uninitialized",        # a Lazy layer's shape read before its first forward
    "output_shape",         # forward returned the wrong shape
    "not_tensor",           # forward returned something else than a tensor (None, a tuple)
    "no_forward",           # the module never defines forward
    "missing_module",       # an import of a module this environment lacks: name "timm", "ab.nn.util", ".blocks"
    "over_budget",          # parameters, FLOPs or projected epoch time beyond the budget
    "unused_layers",        # layers with weights built in __init__ that forward never uses: name lists them
    "same_as_parent",       # a child that computes exactly what its parent computes (inert.behaviour)
    "other",
]


class Diagnosis(BaseModel):
    """What failed, as fields. Empty fields are facts nobody had, not failures of their own."""

    kind: Kind = "other"
    exc_type: str = Field("", description="the exception's class name, e.g. RuntimeError")
    line: int | None = Field(None, description="the candidate's line in its innermost own frame")
    lines: list[int] = Field(default_factory=list, description="every line involved (e.g. refused imports)")
    module_path: str | None = Field(None, description="path of the running submodule, e.g. 'features.3'")
    layer_type: str | None = Field(None, description="its class name, e.g. 'Linear'")
    input_shapes: list[list[int]] = Field(default_factory=list, description="the tensor shapes it was given")
    name: str | None = Field(None, description="the attribute, name or keyword the message is about")
    owner: str | None = Field(None, description="the type that lacks `name`, or the module that lacks it")
    got: list[int] | None = Field(None, description="sizes found (output shape; joined sizes; features)")
    dim: int | None = Field(None, description="the tensor dimension at which joined sizes differ")
    expected: list[int] | None = Field(None, description="sizes wanted")
    budgets: dict[str, list[float]] = Field(
        default_factory=dict, description="{'parameters' | 'FLOPs' | 'epoch time': [measured, budget]} exceeded")

    def shape(self) -> list[int] | None:
        """The first input shape of the failing module, if known."""
        return self.input_shapes[0] if self.input_shapes else None


# ---------------------------------------------------------------- torch's messages, read in one place

_MATMUL = re.compile(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)")
_CHANNELS = re.compile(r"to have (\d+) channels, but got (\d+) channels|running_mean should contain (\d+) elements")
_GROUPS = re.compile(r"(in|out)_channels must be divisible by groups")
_RANK = re.compile(r"expected (\d+)D (?:or (\d+)D )?input \(got (\d+)D input\)")
# A conv given a flattened tensor: "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: [128, 3136]"
_CONV_RANK = re.compile(r"Expected (\d+)D \(unbatched\) or (\d+)D \(batched\) input to \w+, but got input of size: \[([\d, ]*)\]")
_CAT = re.compile(r"Sizes of tensors must match except in dimension (\d+)\. Expected size (\d+) but got size (\d+)"
                  r"(?: for tensor number \d+ in the list)?")
_ADD = re.compile(r"size of tensor a \((\d+)\) must match the size of tensor b \((\d+)\) at non-singleton dimension (\d+)")
_TOO_SMALL = re.compile(r"Output size is too small|Kernel size can't be greater than actual input size", re.I)
_NO_ATTR = re.compile(r"'(\w+)' object has no attribute '(\w+)'")
_MODULE_NO_ATTR = re.compile(r"module '([\w.]+)' has no attribute '(\w+)'")
_UNDEFINED = re.compile(r"name '(\w+)' is not defined")
_ASSIGN_FN = re.compile(r"cannot assign '[\w.]*?(\w+)' as child module '(\w+)'")
_NO_INPUT = re.compile(r"(\w+)\(\) missing 1 required positional argument: 'input'")
_SIGNATURE = re.compile(r"takes \d+ positional arguments? but \d+ (?:were|was) given|missing \d+ required positional")
_UNEXPECTED_KW = re.compile(r"(\w+)(?:\.__init__)?\(\) got an unexpected keyword argument '(\w+)'")
_INPLACE = re.compile(r"modified by an inplace operation")
_UNINITIALIZED = re.compile(r"uninitialized parameter")
_NO_FORWARD = re.compile(r'Module \[(\w+)\] is missing the required "forward" function')


_SHAPE_WORDS = re.compile(
    r"shape|size mismatch|sizes? of tensors?|must match the size|mat1 and mat2|expected input|"
    r"expected \d+d|dimension|kernel size|input size|output size|padded input|channels|groups|"
    r"view size|invalid for input of size|number of elements|broadcast|too small|non-singleton",
    re.IGNORECASE)
_MEMORY_WORDS = re.compile(r"can't allocate memory|cannot allocate memory|out of memory", re.IGNORECASE)


def is_shape_message(message: str) -> bool:
    """A torch message about shapes (the status is then shape_error when forward or training raised it)."""
    return bool(_SHAPE_WORDS.search(message))


def is_memory_message(message: str) -> bool:
    return bool(_MEMORY_WORDS.search(message))


def classify_message(exc_type: str, message: str) -> Diagnosis:
    """Kind and message-borne fields of one exception; the caller adds what it knows directly."""
    if m := _MATMUL.search(message):
        return Diagnosis(kind="linear_size", exc_type=exc_type, got=[int(m.group(2))], expected=[int(m.group(3))])
    if m := _CHANNELS.search(message):
        if m.group(3):
            return Diagnosis(kind="channels", exc_type=exc_type, expected=[int(m.group(3))])
        return Diagnosis(kind="channels", exc_type=exc_type, expected=[int(m.group(1))], got=[int(m.group(2))])
    if _GROUPS.search(message):
        return Diagnosis(kind="groups", exc_type=exc_type)
    if m := _RANK.search(message):
        wanted = [int(g) for g in m.group(1, 2) if g]
        return Diagnosis(kind="rank", exc_type=exc_type, expected=wanted, got=[int(m.group(3))])
    if m := _CONV_RANK.search(message):
        return Diagnosis(kind="rank", exc_type=exc_type, expected=[int(m.group(1)), int(m.group(2))],
                         got=[len([n for n in m.group(3).split(",") if n.strip()])])
    if m := _CAT.search(message):  # torch.cat of maps that differ in a dimension other than the joined one
        return Diagnosis(kind="spatial", exc_type=exc_type, name="cat", got=[int(m.group(2)), int(m.group(3))])
    if m := _ADD.search(message):  # an elementwise op (a residual addition) of tensors of different shapes
        return Diagnosis(kind="spatial", exc_type=exc_type, name="add", got=[int(m.group(1)), int(m.group(2))],
                         dim=int(m.group(3)))
    if _TOO_SMALL.search(message):
        return Diagnosis(kind="too_small", exc_type=exc_type)
    if _INPLACE.search(message):
        return Diagnosis(kind="inplace", exc_type=exc_type)
    if _UNINITIALIZED.search(message):
        return Diagnosis(kind="uninitialized", exc_type=exc_type)
    if m := _NO_FORWARD.search(message):
        return Diagnosis(kind="no_forward", exc_type=exc_type, owner=m.group(1))
    if m := _MODULE_NO_ATTR.search(message):
        return Diagnosis(kind="no_torch_attribute", exc_type=exc_type, owner=m.group(1), name=m.group(2))
    if m := _NO_ATTR.search(message):
        return Diagnosis(kind="no_attribute", exc_type=exc_type, owner=m.group(1), name=m.group(2))
    if exc_type == "NameError" and (m := _UNDEFINED.search(message)):
        return Diagnosis(kind="undefined_name", exc_type=exc_type, name=m.group(1))
    if m := _ASSIGN_FN.search(message):
        return Diagnosis(kind="assign_function", exc_type=exc_type, owner=m.group(1), name=m.group(2))
    if m := _NO_INPUT.search(message):
        return Diagnosis(kind="missing_input", exc_type=exc_type, name=m.group(1))
    if _SIGNATURE.search(message):
        return Diagnosis(kind="signature", exc_type=exc_type)
    if m := _UNEXPECTED_KW.search(message):
        return Diagnosis(kind="unexpected_keyword", exc_type=exc_type, owner=m.group(1), name=m.group(2))
    return Diagnosis(kind="other", exc_type=exc_type)
