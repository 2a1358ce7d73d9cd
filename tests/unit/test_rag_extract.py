"""Scope closure on small fixture packages: the closed text must run on its own, without the package."""
from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from nasgraph.rag_index.extract import ClosureError, Target, close
from nasgraph.rag_index.present import describe, present

FILES = {
    "__init__.py": "from .layers import Block as ExportedBlock\n",
    "consts.py": """
        SCALE = 2


        def helper(c):
            return c * SCALE
    """,
    "utils.py": """
        import os


        def _log_api_usage_once(obj):
            os.environ.get("TRACKING")  # telemetry: must not follow the block
    """,
    "layers.py": """
        import torch
        import torch.nn as nn

        from .consts import SCALE, helper
        from .utils import _log_api_usage_once

        WIDTH = 4
        try:
            from math import inf as LIMIT
        except ImportError:
            LIMIT = 1e9


        def make_conv(c_in, c_out):
            return nn.Conv2d(c_in, c_out, 3, padding=1)


        class Base(nn.Module):
            def __init__(self, c):
                super().__init__()
                self.c = c


        class Block(Base):
            factor = SCALE

            def __init__(self, c=WIDTH):
                super().__init__(c)
                _log_api_usage_once(self)
                self.conv = make_conv(c, helper(c))

            def forward(self, x):
                return torch.clamp(self.conv(x) * self.factor, max=LIMIT)


        class Unused(nn.Module):
            pass
    """,
    "other.py": """
        import torch.nn as nn

        from . import ExportedBlock as B
        from .consts import *


        class UsesAlias(nn.Module):
            def __init__(self):
                super().__init__()
                self.b = B()
                self.k = SCALE

            def forward(self, x):
                return self.b(x)
    """,
    "clash.py": """
        import torch.nn as nn

        from .consts import helper as consts_helper


        def helper(c):
            return c + 1


        class Clash(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b = helper(1), consts_helper(1)
    """,
    "broken.py": """
        import torch.nn as nn


        class Broken(nn.Module):
            def __init__(self):
                super().__init__()
                self.x = undefined_name
    """,
}


@pytest.fixture()
def pkg(tmp_path, monkeypatch):
    name = f"rag_fixture_{uuid.uuid4().hex[:8]}"
    root = tmp_path / name
    root.mkdir()
    for fname, text in FILES.items():
        (root / fname).write_text(textwrap.dedent(text).lstrip())
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[mod]


def run_alone(code: str, pkg: str, monkeypatch) -> dict:
    """exec the closed text in a fresh namespace, with the fixture package made unimportable."""
    for mod in [m for m in sys.modules if m == pkg or m.startswith(pkg + ".")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not (Path(p) / pkg).exists()])
    ns: dict = {"__name__": "closed_block"}
    exec(compile(code, "<closed>", "exec"), ns)
    return ns


def test_closure_inlines_constants_helpers_parents_and_relative_imports(pkg, monkeypatch):
    import torch

    block = close(Target(f"{pkg}.layers", "Block", "fixture"))
    code = block.code
    assert "SCALE = 2" in code and "def helper" in code and "WIDTH = 4" in code  # module-level + relative import
    assert "class Base(nn.Module)" in code and code.index("class Base") < code.index("class Block")
    assert "def make_conv" in code and "LIMIT = 1e9" in code                     # try/except binding kept whole
    body = code.split("\n", 1)[1]  # below the header comment that names the source
    assert pkg not in body and "from ." not in body                              # nothing imports the package
    assert "_log_api_usage_once" not in code and "import os" not in code         # telemetry dropped
    assert "class Unused" not in code                                            # only what is needed
    assert block.torch_only and set(block.imports) == {"torch", "torch.nn"}
    ns = run_alone(code, pkg, monkeypatch)
    out = ns["Block"]()(torch.zeros(1, 4, 5, 5))
    assert out.shape == (1, 8, 5, 5)  # helper(4) = 8 channels: the inlined helper and constant really ran


def test_closure_follows_reexports_aliases_and_star_imports(pkg, monkeypatch):
    import torch

    code = close(Target(f"{pkg}.other", "UsesAlias", "fixture")).code
    assert "B = Block" in code and code.index("class Block") < code.index("B = Block") < code.index("class UsesAlias")
    ns = run_alone(code, pkg, monkeypatch)
    m = ns["UsesAlias"]()
    assert m.k == 2 and m(torch.zeros(1, 4, 3, 3)).shape == (1, 8, 3, 3)


def test_two_meanings_of_one_name_are_refused(pkg):
    with pytest.raises(ClosureError) as e:
        close(Target(f"{pkg}.clash", "Clash", "fixture"))
    assert e.value.kind == "collision" and "helper" in str(e.value)


def test_unresolvable_name_is_refused_with_its_name(pkg):
    with pytest.raises(ClosureError) as e:
        close(Target(f"{pkg}.broken", "Broken", "fixture"))
    assert e.value.kind == "unresolved" and "undefined_name" in str(e.value)


def test_missing_class_and_module_are_clear_errors(pkg):
    with pytest.raises(ClosureError, match="no top-level class Nope"):
        close(Target(f"{pkg}.layers", "Nope", "fixture"))
    with pytest.raises(ClosureError, match="no source"):
        close(Target(f"{pkg}_missing.layers", "Block", "fixture"))


def test_stored_design_text_closes_without_a_package():
    code = textwrap.dedent("""
        import torch.nn as nn

        class SE(nn.Module):
            def __init__(self, c):
                super().__init__()
                self.fc = nn.Linear(c, c)

        class Net(nn.Module):
            def __init__(self, in_shape, out_shape, prm, device):
                super().__init__()
                self.se = SE(in_shape[1])
    """)
    block = close(Target("store.abc", "Net", "store", "design", text=code))
    assert "class SE" in block.code and block.id == "store.abc.Net"
    exec(compile(block.code, "<b>", "exec"), {"__name__": "x"})


def test_torchvision_block_closes_to_torch_only_text():
    import torch

    block = close(Target("torchvision.ops.misc", "SqueezeExcitation", "torchvision", "op"))
    assert "torchvision" not in block.code.split("\n", 1)[1] and block.torch_only
    ns: dict = {"__name__": "se_block"}
    exec(compile(block.code, "<b>", "exec"), ns)
    assert ns["SqueezeExcitation"](8, 2)(torch.ones(1, 8, 4, 4)).shape == (1, 8, 4, 4)


def test_native_code_modules_stay_imported():
    block = close(Target("torchvision.ops.roi_align", "RoIAlign", "torchvision", "op"))
    assert "from torchvision.extension import" in block.code and not block.torch_only
    assert "load_library" not in block.code


def test_present_strips_docs_annotations_and_warnings_and_still_runs():
    code = textwrap.dedent('''
        import warnings
        from typing import Optional
        import torch.nn as nn

        class A(nn.Module):
            """Doc."""
            width: int = 3

            def __init__(self, c: int, act: Optional[nn.Module] = None) -> None:
                super().__init__()
                if c > 99:
                    warnings.warn("big")
                self.l = nn.Linear(c, self.width)  # comment
    ''')
    shown = present(code)
    assert "Doc." not in shown and "Optional" not in shown and "warnings" not in shown and "# comment" not in shown
    assert "width = 3" in shown
    ns: dict = {"__name__": "p"}
    exec(compile(shown, "<p>", "exec"), ns)
    assert ns["A"](4).l.out_features == 3
    text = describe("SqueezeExcitation", "torchvision.ops.misc", code)
    assert text.startswith("Squeeze Excitation (SqueezeExcitation)") and "Linear" in text
