"""Block validation in the sandbox: one worker process, one confined child per block."""
from __future__ import annotations

import os
import signal

import pytest

from nasgraph.rag_index.validate import Job, Validator

GOOD = '''
from typing import Optional
import torch
import torch.nn as nn


class Gate(nn.Module):
    """Channel gate."""

    def __init__(self, channels: int, reduction: int = 4, act: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))
'''
PRESENTED = '''
import torch
import torch.nn as nn


class Gate(nn.Module):

    def __init__(self, channels, reduction=4, act=None):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))
'''
IMPORT_ERROR = "import torch.nn as nn\nraise ImportError('needs a package that is not here')\n"
NEEDS_SPEC = '''
import torch.nn as nn


class FromSpec(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in spec["pairs"])
'''
HANGS = '''
import torch.nn as nn


class Hangs(nn.Module):
    def __init__(self):
        super().__init__()
        while True:
            pass
'''
CRASHES = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"


@pytest.fixture(scope="module")
def validator():
    with Validator(timeout_s=3.0, memory_mb=1024) as v:
        yield v


def test_good_block_is_instantiated_and_forward_checked(validator):
    v = validator.validate_one(Job("good", GOOD, "Gate", presented=PRESENTED))
    assert v.executed and v.instantiable and v.forward_checked and v.failure is None
    assert v.init_args == {"channels": 16} and v.params == 16 * 4 + 4 + 4 * 16 + 16
    assert v.input_shape == [2, 16, 32, 32] and v.output_shape == [2, 16, 32, 32]
    assert v.presented_ok


def test_presented_text_that_behaves_differently_is_flagged(validator):
    broken = PRESENTED.replace("channels // reduction, channels", "channels // reduction, channels + 1")
    v = validator.validate_one(Job("good2", GOOD, "Gate", presented=broken))
    assert v.forward_checked and not v.presented_ok and "RuntimeError" in v.presented_error


def test_block_raising_at_import_is_an_exec_error(validator):
    v = validator.validate_one(Job("imp", IMPORT_ERROR, "X"))
    assert not v.executed and v.failure == "exec_error" and "ImportError" in v.error and "block line 2" in v.error


def test_missing_class_is_reported(validator):
    v = validator.validate_one(Job("nocls", "import torch.nn as nn\n", "Ghost"))
    assert not v.executed and v.failure == "no_class"


def test_required_args_it_cannot_infer_leave_it_executable_but_not_instantiable(validator):
    v = validator.validate_one(Job("spec", NEEDS_SPEC, "FromSpec"))
    assert v.executed and not v.instantiable and v.note == "init_error" and "TypeError" in v.error


def test_hanging_block_times_out_and_the_parent_carries_on(validator):
    v = validator.validate_one(Job("hang", HANGS, "Hangs"))
    assert not v.executed and v.failure == "timeout"
    again = validator.validate_one(Job("after-hang", GOOD, "Gate"))
    assert again.forward_checked


def test_crashing_block_is_reported_and_the_parent_carries_on(validator):
    v = validator.validate_one(Job("crash", CRASHES, "X"))
    assert not v.executed and v.failure == "crashed" and "SIGKILL" in v.error
    assert validator.validate_one(Job("after-crash", GOOD, "Gate")).forward_checked


def test_dead_worker_is_restarted(validator):
    os.killpg(validator.proc.pid, signal.SIGKILL)
    validator.proc.wait()
    v = validator.validate_one(Job("after-restart", GOOD, "Gate"))
    assert v.forward_checked


def test_children_run_confined(validator):
    probe = '''
import os, resource
import torch.nn as nn
class Where(nn.Module):
    def __init__(self):
        super().__init__()
        raise RuntimeError(f"uid={os.getuid()} cwd={os.getcwd()} env={sorted(os.environ)[:3]} "
                           f"cpu={resource.getrlimit(resource.RLIMIT_CPU)[0]}")
'''
    v = validator.validate_one(Job("where", probe, "Where"))
    assert v.executed and not v.instantiable
    assert "nasgraph-rag-" in v.error and "cpu=11" in v.error  # its own workdir; CPU limit 2 x 3 s + 5
    if os.geteuid() == 0:
        assert "uid=0 " not in v.error
