"""Static policy: every forbidden category is refused with its name and line; model code passes."""
from __future__ import annotations

import textwrap

import pytest

from nasgraph.tools.evaluator.policy import static_check

GOOD = textwrap.dedent('''
    from __future__ import annotations
    import math
    from collections import OrderedDict
    from functools import partial
    from typing import Optional
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from torch import Tensor, nn as tnn
    from torch.nn import init
    from torch.nn.modules.utils import _pair
    from torchvision.ops import StochasticDepth


    def supported_hyperparameters():
        return {"lr", "momentum", "dropout"}


    class Block(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, padding=1)
            init.kaiming_normal_(self.conv.weight)

        def forward(self, input: Tensor) -> Tensor:
            return F.relu(self.conv(input)) + input


    class Net(nn.Module):
        def __init__(self, in_shape, out_shape, prm, device):
            super().__init__()
            self.device = device
            for i in range(2):
                setattr(self, f"block{i}", Block(in_shape[1]))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(in_shape[1], out_shape[0])
            self.name = self.__class__.__name__ + str(math.pi)
            torch._assert(True, "ok")

        def train_setup(self, prm):
            self.criteria = (nn.CrossEntropyLoss().to(self.device),)
            self.optimizer = torch.optim.SGD(self.parameters(), lr=prm["lr"], momentum=prm["momentum"])

        def forward(self, x):
            for i in range(2):
                x = getattr(self, "block" + str(i))(x)
            x = getattr(self, "block%d" % 0)(x)
            if torch.cuda.is_available():
                pass
            return self.fc(torch.flatten(self.pool(x), 1))


    if __name__ == "__main__":
        print(Net((1, 1, 8, 8), (10,), {}, "cpu"))
''')


def test_model_code_passes():
    assert static_check(GOOD) is None


def test_syntax_error_names_line_and_source():
    code = "import torch\n\nclass Net(torch.nn.Module):\n    def forward(self, x)\n        return x\n"
    out = static_check(code)
    assert out is not None and out.status == "syntax" and out.stage == "parse"
    assert "line 4" in out.error and "def forward(self, x)" in out.error
    assert out.detail["line"] == 4


def test_null_byte_is_a_syntax_outcome():
    out = static_check("x = 1\x00")
    assert out is not None and out.status == "syntax"


@pytest.mark.parametrize("code, name", [
    # imports outside the allow-list
    ("import os", "os"),
    ("import sys", "sys"),
    ("import subprocess", "subprocess"),
    ("import socket", "socket"),
    ("import shutil", "shutil"),
    ("import ctypes", "ctypes"),
    ("import importlib", "importlib"),
    ("from pathlib import Path", "pathlib"),
    ("import multiprocessing", "multiprocessing"),
    ("import threading", "threading"),
    ("import signal", "signal"),
    ("import pickle", "pickle"),
    ("import builtins", "builtins"),
    ("import io", "io"),
    ("import numpy as np", "numpy"),
    ("from . import sibling", "."),
    ("import os.path as p", "os.path"),
    ("from torch import *", "from torch import *"),
    # forbidden builtins, called or merely referenced
    ("eval('1')", "eval"),
    ("exec('x=1')", "exec"),
    ("open('f', 'w')", "open"),
    ("compile('1', 'f', 'eval')", "compile"),
    ("__import__('os')", "__import__"),
    ("g = globals()", "globals"),
    ("l = locals()", "locals"),
    ("v = vars()", "vars"),
    ("breakpoint()", "breakpoint"),
    ("x = input()", "input"),
    ("f = eval", "eval"),
    ("g = getattr", "getattr"),
    # getattr-style reflection
    ("getattr(object, '__subclasses__')", "getattr(..., '__subclasses__')"),
    ("import torch\ngetattr(torch, 'load')", "torch.load"),
    ("import torch\nname = 'hub'\ngetattr(torch, name)", "getattr(torch, ...)"),
    ("x = object()\nn = '__cl' + 'ass__'\ngetattr(x, n)", "getattr(..., <computed>)"),
    ("x = object()\ngetattr(x, '_' + '_class__')", "getattr(..., <computed>)"),
    # dunder escapes
    ("x = ().__class__.__bases__[0].__subclasses__()", "__subclasses__"),
    ("def f(): pass\ng = f.__globals__", "__globals__"),
    ("b = __builtins__", "__builtins__"),
    ("def f(): pass\nc = f.__code__", "__code__"),
    ("m = int.__mro__", "__mro__"),
    ("d = object.__dict__", "__dict__"),
    ("s = '{0.__class__}'.format(1)", "str.format"),
    # frame walking
    ("def g():\n    yield 1\nf = g().gi_frame", "gi_frame"),
    ("try:\n    1/0\nexcept Exception as e:\n    t = e.__traceback__", "__traceback__"),
    # torch escape hatches
    ("import torch\ntorch.hub.load('a', 'b')", "torch.hub.load"),
    ("import torch\nm = torch.load('w.pt')", "torch.load"),
    ("import torch\ntorch.save({}, 'w.pt')", "torch.save"),
    ("import torch.utils.cpp_extension", "torch.utils.cpp_extension"),
    ("import torch\ntorch.multiprocessing.Process", "torch.multiprocessing.Process"),
    ("import torch\ntorch.distributed.init_process_group()", "torch.distributed.init_process_group"),
    ("import torch\ntorch.ops.aten.add", "torch.ops.aten.add"),
    ("import torch\ntorch.classes.foo", "torch.classes.foo"),
    ("import torch\ntorch._C._get_tracing_state()", "torch._C._get_tracing_state"),
    ("import torch\nf = torch.compile", "torch.compile"),
    ("import torch\nf = torch.jit.script", "torch.jit.script"),
    ("from torch import hub", "torch.hub"),
    ("from torch import _C", "torch._C"),
    ("import torch as t\nx = t.hub", "torch.hub"),
    ("import torch\nt = torch\nx = t.ops", "torch.ops"),
    ("import torch.nn as nn\nx = nn.modules.module.torch.jit", "jit"),
    # module escapes through allowed modules' attributes
    ("import torch\ntorch.os.system('id')", "os"),
    ("import torch.nn.functional as F\nF.sys.exit(0)", "sys"),
    ("import torch\nx = torch.nn.Module()\nx.compile()", "compile"),
    ("import operator\nf = operator.attrgetter('x')", "attrgetter"),
    ("import typing\ntyping.get_type_hints(int)", "get_type_hints"),
    ("import random\nrandom._os.system('id')", "random._os.system"),
    ("import collections\ns = collections._sys", "collections._sys"),
    ("import enum\nf = enum.bltns.open", "enum.bltns.open"),
    ("import copy\nc = copy.types", "types"),
    ("from random import _os", "random._os"),
    ("import torch\nx = torch.zeros(1)\nx.numpy().tofile('f')", "tofile"),
    ("import torch\ntorch.cuda.memory._dump_snapshot('f')", "torch.cuda.memory._dump_snapshot"),
    ("import torch\nimport torch.testing", "torch.testing"),
])
def test_forbidden(code, name):
    out = static_check(code)
    assert out is not None, code
    assert out.status == "forbidden" and out.stage == "policy"
    names = [v["name"] for v in out.detail["violations"]]
    assert name in names, (names, out.error)
    assert f"line {out.detail['violations'][0]['line']}" in out.error


def test_error_names_line_and_source_of_each_violation():
    code = "import torch\n\nx = 1\nimport os\ny = eval('2')\n"
    out = static_check(code)
    assert out is not None and out.status == "forbidden"
    assert "line 4: os" in out.error and "import os" in out.error
    assert "line 5: eval" in out.error and "y = eval('2')" in out.error


def test_violation_list_is_capped():
    code = "\n".join(f"import os{i}" for i in range(20))
    out = static_check(code)
    assert out is not None and "... and 15 more" in out.error
    assert len(out.error.splitlines()) <= 11


def test_torchvision_style_jit_markers_are_fine():
    code = ("import torch\nimport torch.nn as nn\n\nclass B(nn.Module):\n    @torch.jit.unused\n"
            "    def f(self, x):\n        return x\n\n    def forward(self, x):\n"
            "        if torch.jit.is_scripting():\n            return x\n        torch._assert(True, 'x')\n"
            "        return self.f(x)\n")
    assert static_check(code) is None
    assert static_check("import torch\ns = torch.jit.script").status == "forbidden"


def test_input_as_parameter_name_is_fine():
    code = "import torch\ndef f(input):\n    return input + 1\n"
    assert static_check(code) is None


def test_computed_getattr_with_literal_letter_prefix_is_fine():
    code = "class A:\n    pass\na = A()\nfor i in range(3):\n    setattr(a, f'layer{i}', i)\n    getattr(a, 'layer{}'.format(i))\n"
    assert static_check(code) is None


# ---------------------------------------------------------------- code a person hands in (policy_handed.py)
# Lines as they stand in LEMUR image-classification files: model code the strict policy refuses.
CORPUS_SNIPPETS = {
    "torchvision private helper": "from torchvision.models._utils import _make_divisible, _ovewrite_named_param\n"
                                  "c = _make_divisible(32 * 0.75, 8)\n",
    "re.compile": "import re\n"
                  'pattern = re.compile(r"^(.*denselayer\\d+\\.(?:norm|relu|conv))\\.((?:[12])\\.(?:weight|bias))$")\n',
    "__dict__ in extra_repr": "class Block:\n    def extra_repr(self):\n        s = '(in_channels={in_channels}'\n"
                              "        s += ')'\n        return s.format(**self.__dict__)\n",
    "torch.amp autocast": "from torch.amp import autocast, GradScaler\n\ndef autocast_ctx(enabled=True):\n"
                          '    return autocast("cuda", enabled=enabled)\n',
    "torchvision usage log": "from types import FunctionType\n\ndef _log_api_usage_once(obj):\n"
                             "    module = obj.__module__\n    name = obj.__class__.__name__\n"
                             "    if isinstance(obj, FunctionType):\n        name = obj.__name__\n"
                             '    torch._C._log_api_usage_once(f"{module}.{name}")\n',
    "os.environ read": "import os\n_USE_FUSED_ATTN = int(os.environ.get('TIMM_FUSED_ATTN', '0'))\n",
    "numpy and gc": "import numpy as np\nimport gc\nimport torch.nn as nn\n"
                    "nn.init.kaiming_uniform_(nn.Linear(2, 2).weight, a=np.sqrt(5))\ngc.collect()\n",
    "star import": "from collections import *\nd = OrderedDict()\n",
    "a LEMUR-internal import": "from ab.nn.util.Util import export_torch_weights\n",
    "relative import": "from .blocks import Bottleneck\n",
}


@pytest.mark.parametrize("what", CORPUS_SNIPPETS)
def test_real_model_code_is_refused_for_generated_and_allowed_when_handed_in(what):
    code = "import torch\n" + CORPUS_SNIPPETS[what]
    out = static_check(code)
    assert out is not None and out.status == "forbidden", what
    assert static_check(code, "handed") is None, static_check(code, "handed").error


@pytest.mark.parametrize("code, name", [
    # the one subprocess use in the corpus (a torch-only file that shells out to pip)
    ("import subprocess\nout = subprocess.Popen(('pip', 'freeze'), stdout=subprocess.PIPE)", "subprocess"),
    ("import socket\ns = socket.socket()", "socket"),
    ("import os\nos.system('id')", "os.system"),
    ("import os\nos.fork()", "os.fork"),
    ("from os import system", "os.system"),
    ("import os as o\nf = o.popen", "os.popen"),
    ("import torch\ntorch.os.system('id')", "torch.os.system"),
    ("import random\nrandom._os.remove('x')", "random._os.remove"),
    ("import os\ngetattr(os, 'sys' + 'tem')('id')", "getattr(os, ...)"),
    ("import os\ngetattr(os, 'system')('id')", "os.system"),
    ("eval('1 + 1')", "eval"),
    ("exec('import os')", "exec"),
    ("c = compile('1', 'f', 'eval')", "compile"),
    ("__import__('os').system('id')", "__import__"),
    ("g = globals()", "globals"),
    ("v = vars()", "vars"),
    ("import os\nv = vars(os)", "vars"),
    ("x = ().__class__.__bases__[0].__subclasses__()", "__subclasses__"),
    ("def f(): pass\ng = f.__globals__", "__globals__"),
    ("b = __builtins__", "__builtins__"),
    ("s = '{0.__globals__}'.format(f)", "str.format"),
    ("def g():\n    yield 1\nfr = g().gi_frame", "gi_frame"),
    ("import sys\nm = sys.modules['os']", "sys.modules"),
    ("import pickle\npickle.loads(b'')", "pickle"),
    ("import importlib\nimportlib.import_module('os')", "importlib"),
    ("import ctypes", "ctypes"),
    ("import torch\ntorch.ops.load_library('x.so')", "torch.ops.load_library"),
    ("import torch\ntorch.hub.load('a', 'b')", "torch.hub.load"),
    ("from torch.hub import load_state_dict_from_url", "torch.hub"),
    ("import torch\nm = torch.load('w.pt')", "torch.load"),
    ("import urllib.request", "urllib.request"),
    ("import shutil\nshutil.rmtree('/')", "shutil"),
    ("import os\nos.remove('/etc/passwd')", "os.remove"),
    ("open('/tmp/x', 'w').write('x')", "open"),
    ("open('../x', 'a')", "open"),
    ("p = 'x'\nopen(p, 'wb')", "open"),
    ("f = open", "open"),
    ("from os import *", "from os import *"),
    ("import numpy as np\nnp.load('x.npy', allow_pickle=True)", "numpy.load"),
])
def test_hostile_code_is_refused_for_both_origins(code, name):
    for origin in ("generated", "handed"):
        out = static_check(code, origin)
        assert out is not None and out.status == "forbidden", (origin, code)
    names = [v["name"] for v in static_check(code, "handed").detail["violations"]]
    assert name in names, (names, static_check(code, "handed").error)


def test_handed_in_code_may_read_files_and_write_inside_the_working_folder():
    code = "data = open('/etc/hostname').read()\nwith open('log.txt', 'w') as f:\n    f.write(data)\n"
    assert static_check(code, "handed") is None


def test_handed_in_refusals_say_why():
    out = static_check("import subprocess\n", "handed")
    assert "starts processes" in out.error and out.diagnosis.kind == "forbidden_import"
    out = static_check("import torch\ntorch.hub.load('a', 'b')\n", "handed")
    assert "reaches the network" in out.error and out.diagnosis.kind == "forbidden"
