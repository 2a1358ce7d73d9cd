"""Rule-based fixes on the failures the 1.5B generator made in real runs (errors as the evaluator
reports them), and the fixed code through the real sandboxed evaluator."""
import pytest

from nasgraph.config import load_config
from tools.autofix import find_fix
from tools.evaluator import EvalRequest, Evaluator

HEAD = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n\n"

WRONG_FLATTEN = HEAD + '''class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.conv1 = nn.Conv2d(in_shape[1], 16, 3, padding=1)  # keep this comment
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 7 * 7, 32)
        self.fc2 = nn.Linear(32, out_shape[0])
        self.to(device)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)
'''
WRONG_FLATTEN_ERR = '''File "<candidate>", line 17, in forward
    x = F.relu(self.fc1(x))
RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x3136 and 784x32)
in module 'fc1' = Linear(in_features=784, out_features=32, bias=True), called with input shape (2, 3136)
dummy input batch: (2, 1, 28, 28)'''

NOT_FLATTENED = WRONG_FLATTEN.replace("        x = torch.flatten(x, 1)\n", "")
NOT_FLATTENED_ERR = '''File "<candidate>", line 16, in forward
    x = F.relu(self.fc1(x))
RuntimeError: mat1 and mat2 shapes cannot be multiplied (448x14 and 784x32)
in module 'fc1' = Linear(in_features=784, out_features=32, bias=True), called with input shape (2, 16, 14, 14)
dummy input batch: (2, 1, 28, 28)'''

WRONG_CHANNELS = WRONG_FLATTEN.replace("self.fc1 = nn.Linear(16 * 7 * 7, 32)", "self.fc1 = nn.Linear(16 * 14 * 14, 32)") \
    .replace("nn.Conv2d(in_shape[1], 16, 3, padding=1)", "nn.Conv2d(in_shape[1], 16, 3, padding=1)\n"
             "        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)") \
    .replace("x = self.pool(F.relu(self.conv1(x)))", "x = self.pool(F.relu(self.conv2(F.relu(self.conv1(x)))))")
WRONG_CHANNELS_ERR = '''File "<candidate>", line 16, in forward
RuntimeError: Given groups=1, weight of size [16, 8, 3, 3], expected input[2, 16, 28, 28] to have 8 channels, but got 16 channels instead
in module 'conv2' = Conv2d(8, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)), called with input shape (2, 16, 28, 28)'''

NO_FLATTEN_ATTR = WRONG_FLATTEN.replace("self.fc1 = nn.Linear(16 * 7 * 7, 32)", "self.fc1 = nn.Linear(16 * 14 * 14, 32)") \
    .replace("x = torch.flatten(x, 1)", "x = self.flatten(x)")
NO_FLATTEN_ATTR_ERR = '''File "<candidate>", line 15, in forward
    x = self.flatten(x)
AttributeError: 'Net' object has no attribute 'flatten'
in module '(model)' = Net, called with input shape (2, 1, 28, 28)'''

FUNCTION_AS_LAYER = NO_FLATTEN_ATTR.replace("        self.pool = nn.MaxPool2d(2)\n",
                                            "        self.pool = nn.MaxPool2d(2)\n        self.flatten = torch.flatten\n")
FUNCTION_AS_LAYER_ERR = '''File "<candidate>", line 10, in __init__
    self.flatten = torch.flatten
TypeError: cannot assign 'torch._VariableFunctionsClass.flatten' as child module 'flatten' (torch.nn.Module or None expected)'''

BAD_GROUPS = WRONG_FLATTEN.replace("self.fc1 = nn.Linear(16 * 7 * 7, 32)", "self.fc1 = nn.Linear(16 * 14 * 14, 32)") \
    .replace("nn.Conv2d(in_shape[1], 16, 3, padding=1)", "nn.Conv2d(in_shape[1], 16, 3, padding=1, groups=16)")
BAD_GROUPS_ERR = '''File "<candidate>", line 8, in __init__
    self.conv1 = nn.Conv2d(in_shape[1], 16, 3, padding=1, groups=16)  # keep this comment
ValueError: in_channels must be divisible by groups'''

POOL_TOO_SMALL = WRONG_FLATTEN.replace("x = self.pool(F.relu(self.conv1(x)))",
                                       "x = self.pool(F.relu(self.conv1(x)))\n        x = self.pool5(x)") \
    .replace("        self.pool = nn.MaxPool2d(2)\n", "        self.pool = nn.MaxPool2d(2)\n        self.pool5 = nn.MaxPool2d(32)\n") \
    .replace("self.fc1 = nn.Linear(16 * 7 * 7, 32)", "self.fc1 = nn.Linear(16 * 14 * 14, 32)")
POOL_TOO_SMALL_ERR = '''File "<candidate>", line 16, in forward
RuntimeError: Given input size: (16x14x14). Calculated output size: (16x0x0). Output size is too small
in module 'pool5' = MaxPool2d(kernel_size=32, stride=32, padding=0, dilation=1, ceil_mode=False), called with input shape (2, 16, 14, 14)'''

CASES = {
    "lazy_linear": (WRONG_FLATTEN, WRONG_FLATTEN_ERR, "nn.LazyLinear(32)"),
    "flatten_before_linear": (NOT_FLATTENED, NOT_FLATTENED_ERR, "x = torch.flatten(x, 1)\n        x = F.relu(self.fc1(x))"),
    "lazy_conv2d": (WRONG_CHANNELS, WRONG_CHANNELS_ERR, "nn.LazyConv2d(16, 3, padding=1)"),
    "define_attribute": (NO_FLATTEN_ATTR, NO_FLATTEN_ATTR_ERR, "super().__init__()\n        self.flatten = nn.Flatten()"),
    "function_to_layer": (FUNCTION_AS_LAYER, FUNCTION_AS_LAYER_ERR, "self.flatten = nn.Flatten()"),
    "drop_groups": (BAD_GROUPS, BAD_GROUPS_ERR, "nn.Conv2d(in_shape[1], 16, 3, padding=1)  # keep this comment"),
    "drop_pool": (POOL_TOO_SMALL, POOL_TOO_SMALL_ERR, "self.pool5 = nn.Identity()"),
}


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_applies_and_keeps_the_rest(rule):
    code, error, expected = CASES[rule]
    fix = find_fix(code, error)
    assert fix is not None and fix.rule == rule, fix
    assert expected in fix.code
    assert "# keep this comment" in fix.code  # a fix edits the offending layer only
    assert fix.description


def test_an_init_argument_used_as_an_attribute_is_stored():
    # Seen from the 1.5B model: self.in_shape read in __init__ though never assigned.
    code = WRONG_FLATTEN.replace("self.fc1 = nn.Linear(16 * 7 * 7, 32)",
                                 "self.fc1 = nn.Linear(16 * (self.in_shape[2] // 2) ** 2, 32)")
    error = ('File "<candidate>", line 10, in __init__\n'
             "AttributeError: 'Net' object has no attribute 'in_shape'")
    fix = find_fix(code, error)
    assert fix is not None and fix.rule == "define_attribute"
    assert "super().__init__()\n        self.in_shape = in_shape\n" in fix.code


def test_no_rule_for_unknown_errors_or_broken_code():
    assert find_fix(WRONG_FLATTEN, "ZeroDivisionError: division by zero") is None
    assert find_fix("def broken(:", WRONG_FLATTEN_ERR) is None
    # the module named in the error is not built as `self.fc1 = nn.Linear(...)`: nothing to edit
    assert find_fix(WRONG_FLATTEN.replace("self.fc1 =", "self.head ="), WRONG_FLATTEN_ERR) is None


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory):
    cfg = load_config(home=tmp_path_factory.mktemp("home"), evaluator={"threads": 1})
    with Evaluator(cfg.data_dir) as ev:
        yield cfg, ev


@pytest.mark.parametrize("rule", sorted(CASES))
def test_fixed_code_builds_runs_and_is_measured(rule, evaluator):
    cfg, ev = evaluator
    code, _, _ = CASES[rule]
    before = ev.evaluate(EvalRequest.from_config(cfg.evaluator, code=code, dataset="mnist-5k", max_flops=1))
    assert before.status != "over_budget"  # the case really fails in the sandbox
    fixed = find_fix(code, CASES[rule][1]).code
    # A FLOP budget of 1 stops the candidate right after build, forward shape check and measurement.
    after = ev.evaluate(EvalRequest.from_config(cfg.evaluator, code=fixed, dataset="mnist-5k", max_flops=1))
    assert after.status == "over_budget" and after.stage == "measure", after.error
    assert after.params and after.params > 0
