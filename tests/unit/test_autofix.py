"""Rule-based fixes on the failures the 1.5B generator made in real runs (errors as the evaluator
reports them), and the fixed code through the real sandboxed evaluator."""
import importlib
import re
from typing import get_args

import pytest

from nasgraph.config import load_config
from nasgraph.tools.autofix import REGISTRY, find_fix
from nasgraph.tools.autofix.names import ALIASES, NN_LAYERS
from nasgraph.tools.evaluator import EvalRequest, Evaluator, static_check
from nasgraph.tools.evaluator.diagnosis import Diagnosis, Kind

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
WRONG_FLATTEN_DIAG = Diagnosis(kind='linear_size', exc_type='RuntimeError', line=17, module_path='fc1', layer_type='Linear', input_shapes=[[2, 3136]], got=[3136], expected=[784])

NOT_FLATTENED = WRONG_FLATTEN.replace("        x = torch.flatten(x, 1)\n", "")
NOT_FLATTENED_DIAG = Diagnosis(kind='linear_size', exc_type='RuntimeError', line=16, module_path='fc1', layer_type='Linear', input_shapes=[[2, 16, 14, 14]], got=[14], expected=[784])

WRONG_CHANNELS = WRONG_FLATTEN.replace("self.fc1 = nn.Linear(16 * 7 * 7, 32)", "self.fc1 = nn.Linear(16 * 14 * 14, 32)") \
    .replace("nn.Conv2d(in_shape[1], 16, 3, padding=1)", "nn.Conv2d(in_shape[1], 16, 3, padding=1)\n"
             "        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)") \
    .replace("x = self.pool(F.relu(self.conv1(x)))", "x = self.pool(F.relu(self.conv2(F.relu(self.conv1(x)))))")
WRONG_CHANNELS_DIAG = Diagnosis(kind='channels', exc_type='RuntimeError', line=16, module_path='conv2', layer_type='Conv2d', input_shapes=[[2, 16, 28, 28]], got=[16], expected=[8])

NO_FLATTEN_ATTR = WRONG_FLATTEN.replace("self.fc1 = nn.Linear(16 * 7 * 7, 32)", "self.fc1 = nn.Linear(16 * 14 * 14, 32)") \
    .replace("x = torch.flatten(x, 1)", "x = self.flatten(x)")
NO_FLATTEN_ATTR_DIAG = Diagnosis(kind='no_attribute', exc_type='AttributeError', line=16, module_path='(model)', layer_type='Net', input_shapes=[[2, 1, 28, 28]], name='flatten', owner='Net')

FUNCTION_AS_LAYER = NO_FLATTEN_ATTR.replace("        self.pool = nn.MaxPool2d(2)\n",
                                            "        self.pool = nn.MaxPool2d(2)\n        self.flatten = torch.flatten\n")
FUNCTION_AS_LAYER_DIAG = Diagnosis(kind="assign_function", exc_type="TypeError", line=10, owner="flatten", name="flatten")

BAD_GROUPS = WRONG_FLATTEN.replace("self.fc1 = nn.Linear(16 * 7 * 7, 32)", "self.fc1 = nn.Linear(16 * 14 * 14, 32)") \
    .replace("nn.Conv2d(in_shape[1], 16, 3, padding=1)", "nn.Conv2d(in_shape[1], 16, 3, padding=1, groups=16)")
BAD_GROUPS_DIAG = Diagnosis(kind='groups', exc_type='ValueError', line=8)

POOL_TOO_SMALL = WRONG_FLATTEN.replace("x = self.pool(F.relu(self.conv1(x)))",
                                       "x = self.pool(F.relu(self.conv1(x)))\n        x = self.pool5(x)") \
    .replace("        self.pool = nn.MaxPool2d(2)\n", "        self.pool = nn.MaxPool2d(2)\n        self.pool5 = nn.MaxPool2d(32)\n") \
    .replace("self.fc1 = nn.Linear(16 * 7 * 7, 32)", "self.fc1 = nn.Linear(16 * 14 * 14, 32)")
POOL_TOO_SMALL_DIAG = Diagnosis(kind='too_small', exc_type='RuntimeError', line=17, module_path='pool5', layer_type='MaxPool2d', input_shapes=[[2, 16, 14, 14]])

UNKNOWN_LAYER = WRONG_FLATTEN.replace("self.fc1 = nn.Linear(16 * 7 * 7, 32)",
                                      "self.gap = nn.GlobalAvgPool2d()\n        self.fc1 = nn.Linear(16, 32)") \
    .replace("x = torch.flatten(x, 1)", "x = torch.flatten(self.gap(x), 1)")
UNKNOWN_LAYER_DIAG = Diagnosis(kind='no_torch_attribute', exc_type='AttributeError', line=10, name='GlobalAvgPool2d', owner='torch.nn')

HELPER_DEVICE = HEAD + '''class Block(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, device=self.device)
        self.bn = nn.BatchNorm2d(c_out).to(self.device)
        self.to(self.device)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x))) + torch.zeros(1, device=self.device)


''' + WRONG_FLATTEN.removeprefix(HEAD).replace("nn.Conv2d(in_shape[1], 16, 3, padding=1)", "Block(in_shape[1], 16)") \
    .replace("16 * 7 * 7", "16 * 14 * 14")
HELPER_DEVICE_DIAG = Diagnosis(kind='no_attribute', exc_type='AttributeError', line=8, name='device', owner='Block')

LAZY_FROM_ATTRIBUTE = WRONG_FLATTEN.replace("nn.Linear(16 * 7 * 7, 32)", "nn.Linear(self.pool.out_features, 32)")
LAZY_FROM_ATTRIBUTE_DIAG = Diagnosis(kind='no_attribute', exc_type='AttributeError', line=10, name='out_features', owner='MaxPool2d')

INPLACE = WRONG_FLATTEN.replace("16 * 7 * 7", "16 * 14 * 14").replace(
    "        self.pool = nn.MaxPool2d(2)\n",
    "        self.pool = nn.MaxPool2d(2)\n        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)\n"
    "        self.act = nn.ReLU(inplace=True)\n") \
    .replace("        x = torch.flatten(x, 1)\n",
             "        y = torch.sigmoid(self.conv2(x))\n        y += x\n        x = torch.flatten(self.act(y), 1)\n")
INPLACE_DIAG = Diagnosis(kind='inplace', exc_type='RuntimeError')

WIDE = HEAD + '''class DepthwiseBlock(nn.Module):
    def __init__(self, channels=256):
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, kernel_size=3, padding=1, groups=channels)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return F.relu(self.bn(self.dw(x)))


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.conv1 = nn.Conv2d(in_shape[1], 128, kernel_size=3, padding=1)  # keep this comment
        self.bn1 = nn.BatchNorm2d(128)
        self.conv2 = nn.Conv2d(128, 256, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(256)
        self.block = DepthwiseBlock()
        self.dw = nn.Conv2d(256, 256, kernel_size=3, padding=1, groups=256)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(256 * 7 * 7, 512)
        self.bn3 = nn.BatchNorm1d(512)
        self.fc2 = nn.Linear(512, out_shape[0])
        self.to(device)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        x = self.pool(self.dw(self.block(x)))
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.bn3(self.fc1(x))))
'''
WIDE_DIAG = Diagnosis(kind='over_budget', budgets={'parameters': [6732042.0, 5000000.0], 'FLOPs': [478889984.0, 60000000.0]})

CHANNEL_LIST = HEAD + '''class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        channels = [128, 256, 512]  # keep this comment
        layers, prev = [], in_shape[1]
        for c in channels:
            layers += [nn.Conv2d(prev, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            prev = c
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(512 * 3 * 3, out_shape[0])
        self.to(device)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))
'''
TOO_SLOW_DIAG = Diagnosis(kind="over_budget", budgets={"epoch time": [250.7, 180.0]})

BARE_NAME = WRONG_FLATTEN.replace("16 * 7 * 7", "16 * 14 * 14").replace("self.pool = nn.MaxPool2d(2)", "self.pool = nn.MaxPool2d(2)\n        self.skip = Identity()") \
    .replace("x = torch.flatten(x, 1)", "x = torch.flatten(self.skip(x), 1)")
BARE_NAME_DIAG = Diagnosis(kind='undefined_name', exc_type='NameError', line=10, name='Identity')

DEVICE_KW = WRONG_FLATTEN.replace("16 * 7 * 7", "16 * 14 * 14").replace(
    "self.pool = nn.MaxPool2d(2)", "self.pool = nn.MaxPool2d(2, device=device)\n"
    "        self.act = nn.ReLU(device=device)\n        self.extra = self._conv(16, device=device)") \
    .replace("self.fc2 = nn.Linear(32, out_shape[0])", "self.fc2 = nn.Linear(32, out_shape[0], device=device)") \
    .replace("    def forward(self, x):", "    def _conv(self, c):\n        return nn.Conv2d(c, c, 1)\n\n"
             "    def forward(self, x):")
DEVICE_KW_DIAG = Diagnosis(kind='unexpected_keyword', exc_type='TypeError', line=9, name='device', owner='_MaxPoolNd')

# Seen from the 1.5B model (fm15-k): one conv applied to the image and again to its own output.
SHARED = WRONG_FLATTEN.replace("16 * 7 * 7", "16 * 14 * 14") \
    .replace("x = self.pool(F.relu(self.conv1(x)))", "x = F.relu(self.conv1(x))\n        x = self.pool(F.relu(self.conv1(x)))")
SHARED_DIAG = Diagnosis(kind='channels', exc_type='RuntimeError', line=16, module_path='conv1', layer_type='Conv2d', input_shapes=[[2, 16, 28, 28]], got=[16], expected=[1])

# Seen twice in fm15-k: an attribute name written like an f-string.
FORMAT_ATTR = WRONG_FLATTEN.replace("16 * 7 * 7", "16 * 14 * 14").replace(
    "        self.pool = nn.MaxPool2d(2)\n",
    "        self.pool = nn.MaxPool2d(2)\n        for i in range(2, 4):\n"
    "            self.conv{i} = nn.Conv2d(16, 16, 3, padding=1)\n") \
    .replace("        x = torch.flatten(x, 1)\n",
             "        for i in range(2, 4):\n            x = F.relu(self.conv{i}(x))\n        x = torch.flatten(x, 1)\n")
FORMAT_ATTR_DIAG = Diagnosis(kind='syntax', exc_type='SyntaxError', line=11)

# A layer inside nn.Sequential, named by its index (fm15-g…k: `fc_block.0`, `se1.excitation.0`).
IN_SEQUENTIAL = WRONG_FLATTEN.replace("self.fc1 = nn.Linear(16 * 7 * 7, 32)",
                                      "self.fc1 = nn.Sequential(nn.Dropout(0.1), nn.Sequential(nn.Linear(16 * 7 * 7, 32)))")
IN_SEQUENTIAL_DIAG = Diagnosis(kind='linear_size', exc_type='RuntimeError', line=17, module_path='fc1.1.0', layer_type='Linear', input_shapes=[[2, 3136]], got=[3136], expected=[784])

# Seen 11 times in six 1.5B runs: __init__ builds every layer and no forward follows.
NO_FORWARD = WRONG_FLATTEN[: WRONG_FLATTEN.index("\n    def forward")] + "\n"
NO_FORWARD_DIAG = Diagnosis(kind='no_forward', exc_type='NotImplementedError', module_path='(model)', layer_type='Net', input_shapes=[[2, 1, 28, 28]], owner='Net')

# Seen from the 1.5B model: a BatchNorm2d after the Linear it normalizes.
NORM_RANK = WRONG_FLATTEN.replace("16 * 7 * 7", "16 * 14 * 14").replace("        self.fc2 =", "        self.bn = nn.BatchNorm2d(32)\n        self.fc2 =") \
    .replace("x = F.relu(self.fc1(x))", "x = F.relu(self.bn(self.fc1(x)))")
NORM_RANK_DIAG = Diagnosis(kind='rank', exc_type='ValueError', line=18, module_path='bn', layer_type='BatchNorm2d', input_shapes=[[2, 32]], got=[2], expected=[4])

# Seen in fm15-n: inception branches with one padding for every kernel size, joined by torch.cat.
BRANCHES = HEAD + '''class Mixed(nn.Module):
    def __init__(self, c, padding=1):
        super().__init__()
        self.b1 = nn.Conv2d(c, 8, 1)
        self.b3 = nn.Conv2d(c, 8, 3, 1, padding)  # keep this comment
        self.b5 = nn.Conv2d(c, 8, kernel_size=5, padding=padding)
        self.bp = nn.MaxPool2d(3, 1)

    def forward(self, x):
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], dim=1)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[1], 8, 3, padding=1)
        self.mixed = Mixed(8)
        self.fc = nn.LazyLinear(out_shape[0])
        self.to(device)

    def forward(self, x):
        x = F.max_pool2d(self.mixed(F.relu(self.conv(x))), 4)
        return self.fc(torch.flatten(x, 1))
'''
BRANCHES_DIAG = Diagnosis(kind='spatial', exc_type='RuntimeError', line=14, module_path='mixed', layer_type='Mixed', input_shapes=[[2, 8, 28, 28]], name='cat', got=[28, 26])

# Seen three times in fm15-o: the contract's input channels read as a name Net.__init__ never defined.
CONTRACT_NAME = WRONG_FLATTEN.replace("16 * 7 * 7", "16 * 14 * 14").replace("nn.Conv2d(in_shape[1], 16",
                                                                             "nn.Conv2d(in_channels, 16")
CONTRACT_NAME_DIAG = Diagnosis(kind='undefined_name', exc_type='NameError', line=8, name='in_channels')

# Seen twice from the 1.5B model: a functional activation put where a layer goes.
FUNCTIONAL_LAYER = CONTRACT_NAME.replace("in_channels, 16", "in_shape[1], 16").replace(
    "        self.pool = nn.MaxPool2d(2)\n", "        self.pool = nn.Sequential(nn.MaxPool2d(2), F.relu(inplace=True))\n")
FUNCTIONAL_LAYER_DIAG = Diagnosis(kind='missing_input', exc_type='TypeError', line=9, name='relu')

# Seen in fm15-o: the hyperparameters splatted into a conv.
SPLAT = CONTRACT_NAME.replace("nn.Conv2d(in_channels, 16, 3, padding=1)", "nn.Conv2d(in_shape[1], 16, 3, padding=1, **prm)")
SPLAT_DIAG = Diagnosis(kind='unexpected_keyword', exc_type='TypeError', line=8, name='lr', owner='Conv2d')

# Seen in fm15-o/p: every stage written and no classifier head (6 drafts), the head forgotten after the
# flatten (a 2-D output) or before it (a map of class channels).
NO_HEAD = CONTRACT_NAME.replace("in_channels, 16", "in_shape[1], 16").replace(
    "        x = F.relu(self.fc1(x))\n        return self.fc2(x)\n", "        return x\n")
NO_HEAD_DIAG = Diagnosis(kind='output_shape', input_shapes=[[2, 1, 28, 28]], got=[2, 3136], expected=[2, 10])
MAP_OUT = NO_HEAD.replace("        x = torch.flatten(x, 1)\n", "")
MAP_OUT_DIAG = Diagnosis(kind='output_shape', input_shapes=[[2, 1, 28, 28]], got=[2, 16, 14, 14], expected=[2, 10])

# Seen in fm15-p: a forward that computes x and never returns it.
NO_RETURN = WRONG_FLATTEN.replace("16 * 7 * 7", "16 * 14 * 14").replace("        return self.fc2(x)\n",
                                                                         "        x = self.fc2(x)\n")
NO_RETURN_DIAG = Diagnosis(kind='not_tensor', input_shapes=[[2, 1, 28, 28]], owner='NoneType', expected=[2, 10])

# Seen in fm15-o/p: forward applies stages __init__ never built (self.conv7 ... after six convs).
UNBUILT = NO_RETURN.replace("        x = self.fc2(x)\n", "        x = self.fc2(x)\n        return x\n").replace(
    "        x = torch.flatten(x, 1)\n",
    "        x = F.relu(self.bn2(self.conv2(x)))\n        x = self.conv3(x)\n        x = torch.flatten(x, 1)\n")
UNBUILT_DIAG = Diagnosis(kind='no_attribute', exc_type='AttributeError', line=16, module_path='(model)', layer_type='Net', input_shapes=[[2, 1, 28, 28]], name='bn2', owner='Net')

# Seen in five 1.5B iterations: squeeze-excitation written with Linears on the pooled map, no flatten.
SE_LINEAR = HEAD + '''class SE(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(c, c // r, bias=False)  # keep this comment
        self.fc2 = nn.Linear(in_features=c // r, out_features=c)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(self.pool(x)))))


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[1], 16, 3, padding=1)
        self.se = SE(16)
        self.fc = nn.Linear(16, out_shape[0])
        self.to(device)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.se(F.relu(self.conv(x))), 1)
        return self.fc(torch.flatten(x, 1))
'''
SE_LINEAR_DIAG = Diagnosis(kind='linear_size', exc_type='RuntimeError', line=13, module_path='se.fc1', layer_type='Linear', input_shapes=[[2, 16, 1, 1]], got=[1], expected=[16])

# Seen after Lazy fixes in three 1.5B runs: a weight-init loop reaching a Lazy layer.
INIT_LAZY = WRONG_FLATTEN.replace("nn.Linear(16 * 7 * 7, 32)", "nn.LazyLinear(32)").replace(
    "        self.to(device)\n",
    "        for m in self.modules():\n            if isinstance(m, nn.Linear):\n"
    "                nn.init.kaiming_normal_(m.weight)\n                nn.init.zeros_(m.bias)\n"
    "        self.to(device)\n")
INIT_LAZY_DIAG = Diagnosis(kind='uninitialized', exc_type='RuntimeError', line=14)

# Seen 25 times in eight 1.5B runs: a residual block that downsamples and widens, added to its input.
RESIDUAL = HEAD + '''class Block(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)  # keep this comment

    def forward(self, x):
        out = F.relu(self.conv(x))
        out += x
        return out


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.block = Block(in_shape[1], 8)
        self.fc = nn.Linear(8 * 14 * 14, out_shape[0])
        self.to(device)

    def forward(self, x):
        return self.fc(torch.flatten(self.block(x) + 1, 1))
'''
RESIDUAL_DIAG = Diagnosis(kind='spatial', exc_type='RuntimeError', line=12, module_path='block', layer_type='Block', input_shapes=[[2, 1, 28, 28]], name='add', got=[14, 28], dim=3)

UNUSED_IMPORT = WRONG_FLATTEN.replace("16 * 7 * 7", "16 * 14 * 14").replace(
    "import torch.nn.functional as F\n", "import torch.nn.functional as F\nimport torchvision\n")
UNUSED_IMPORT_DIAG = Diagnosis(kind="forbidden_import", line=4, lines=[4], name="torchvision")

# One fixture per registered rule: a real failing module, its diagnosis, and a line the fix must write.
CASES = {
    "lazy_input_size/linear": (WRONG_FLATTEN, WRONG_FLATTEN_DIAG, "nn.LazyLinear(32)"),
    "flatten_before_linear": (NOT_FLATTENED, NOT_FLATTENED_DIAG, "x = torch.flatten(x, 1)\n        x = F.relu(self.fc1(x))"),
    "lazy_input_size/conv2d": (WRONG_CHANNELS, WRONG_CHANNELS_DIAG, "nn.LazyConv2d(16, 3, padding=1)"),
    "define_attribute": (NO_FLATTEN_ATTR, NO_FLATTEN_ATTR_DIAG, "super().__init__()\n        self.flatten = nn.Flatten()"),
    "function_to_layer": (FUNCTION_AS_LAYER, FUNCTION_AS_LAYER_DIAG, "self.flatten = nn.Flatten()"),
    "drop_groups": (BAD_GROUPS, BAD_GROUPS_DIAG, "nn.Conv2d(in_shape[1], 16, 3, padding=1)  # keep this comment"),
    "drop_device_keyword": (DEVICE_KW, DEVICE_KW_DIAG, "self.act = nn.ReLU()"),
    "bare_torch_name": (BARE_NAME, BARE_NAME_DIAG, "self.skip = nn.Identity()"),
    "drop_pool": (POOL_TOO_SMALL, POOL_TOO_SMALL_DIAG, "self.pool5 = nn.Identity()"),
    "unknown_layer": (UNKNOWN_LAYER, UNKNOWN_LAYER_DIAG, "self.gap = nn.AdaptiveAvgPool2d(1)"),
    "helper_device": (HELPER_DEVICE, HELPER_DEVICE_DIAG, "nn.Conv2d(c_in, c_out, 3, padding=1)\n"
                      "        self.bn = nn.BatchNorm2d(c_out)\n\n    def forward(self, x):\n"
                      "        return F.relu(self.bn(self.conv(x))) + torch.zeros(1, device=x.device)"),
    "unshare_layer": (SHARED, SHARED_DIAG, "# keep this comment\n        self.conv1_2 = nn.LazyConv2d(16, 3, padding=1)\n"),
    "format_attribute": (FORMAT_ATTR, FORMAT_ATTR_DIAG, 'setattr(self, f"conv{i}", nn.Conv2d(16, 16, 3, padding=1))'),
    "lazy_from_attribute": (LAZY_FROM_ATTRIBUTE, LAZY_FROM_ATTRIBUTE_DIAG, "self.fc1 = nn.LazyLinear(32)"),
    "write_forward": (NO_FORWARD, NO_FORWARD_DIAG, "    def forward(self, x):\n        x = self.conv1(x)\n"
                      "        x = self.pool(x)\n        x = torch.flatten(x, 1)\n        x = self.fc1(x)\n"
                      "        x = self.fc2(x)\n        return x\n"),
    "norm_for_rank": (NORM_RANK, NORM_RANK_DIAG, "self.bn = nn.LazyBatchNorm1d()"),
    "same_padding": (BRANCHES, BRANCHES_DIAG, "nn.Conv2d(c, 8, 3, 1, 1)  # keep this comment"),
    "functional_to_layer": (FUNCTIONAL_LAYER, FUNCTIONAL_LAYER_DIAG, "nn.Sequential(nn.MaxPool2d(2), nn.ReLU(inplace=True))"),
    "drop_splat_keywords": (SPLAT, SPLAT_DIAG, "nn.Conv2d(in_shape[1], 16, 3, padding=1)  # keep this comment"),
    "define_from_contract": (CONTRACT_NAME, CONTRACT_NAME_DIAG, "super().__init__()\n        in_channels = in_shape[1]\n"),
    "linear_to_conv1x1": (SE_LINEAR, SE_LINEAR_DIAG, "self.fc2 = nn.Conv2d(in_channels=c // r, out_channels=c, kernel_size=1)"),
    "drop_init_of_lazy": (INIT_LAZY, INIT_LAZY_DIAG, "if isinstance(m, nn.Linear):\n                pass\n                pass\n"),
    "fit_residual": (RESIDUAL, RESIDUAL_DIAG, "        out = _fit_add(out, x)\n"),
    "add_output_head": (NO_HEAD, NO_HEAD_DIAG, "self.head = nn.LazyLinear(out_shape[0])\n        self.to(device)"),
    "add_return": (NO_RETURN, NO_RETURN_DIAG, "        x = self.fc2(x)\n        return x\n"),
    "drop_unused_import": (UNUSED_IMPORT, UNUSED_IMPORT_DIAG, "import torch.nn.functional as F\n\nclass Net"),
    "inplace": (INPLACE, INPLACE_DIAG, "self.act = nn.ReLU(inplace=False)"),
    "shrink_widths": (WIDE, WIDE_DIAG, "nn.Conv2d(in_shape[1], 40, kernel_size=3, padding=1)  # keep this comment"),
    "drop_unbuilt_layer": (UNBUILT, UNBUILT_DIAG, "        x = self.pool(F.relu(self.conv1(x)))\n"
                           "        x = F.relu(x)\n        x = torch.flatten(x, 1)\n"),
}


def test_every_registered_rule_has_a_fixture_and_a_summary():
    assert {case.split("/")[0] for case in CASES} == set(REGISTRY)
    for r in REGISTRY.values():
        assert r.summary and r.kinds and set(r.kinds) <= set(get_args(Kind)), r.id


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_applies_and_keeps_the_rest(rule):
    code, error, expected = CASES[rule]
    fix = find_fix(code, error)
    assert fix is not None and fix.rule == rule.split("/")[0], fix
    assert expected in fix.code
    assert "# keep this comment" in fix.code  # a fix edits the offending layer only
    assert fix.description


def test_an_output_map_is_pooled_into_the_head_and_tuples_are_left_alone():
    fix = find_fix(MAP_OUT, MAP_OUT_DIAG)
    assert fix.rule == "add_output_head" and "return self.head(x)" in fix.code
    assert "self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LazyLinear(out_shape[0]))" in fix.code
    assert find_fix(MAP_OUT.replace("return x", "return (x, x)"), MAP_OUT_DIAG) is None
    assert find_fix(NO_HEAD, NO_HEAD_DIAG.model_copy(update={"got": [1, 3136]})) is None  # batch mixed up: not this


def test_every_unbuilt_layer_is_skipped_in_one_fix_and_built_ones_stay():
    fix = find_fix(UNBUILT.replace("F.relu(self.bn2", "self.pool(self.bn2"), UNBUILT_DIAG)
    assert "conv2" not in fix.code and "conv3" not in fix.code and "        x = self.pool(x)\n" in fix.code
    assert "self.bn2, self.conv2, self.conv3" in fix.description
    # read as something other than a layer applied to one input: not this failure
    assert find_fix(UNBUILT.replace("self.conv2(x)", "self.conv2(x, 1)"), UNBUILT_DIAG) is None
    assert find_fix(UNBUILT.replace("self.conv3(x)", "self.conv3.weight"), UNBUILT_DIAG) is None
    built = UNBUILT.replace("        self.pool =", "        setattr(self, 'conv2', nn.Identity())\n        self.pool =")
    assert find_fix(built, UNBUILT_DIAG.model_copy(update={"name": "conv2"})) is None  # built by name: some other failure


def test_net_own_classifier_on_a_pooled_map_is_flattened_not_made_a_conv():
    code = SE_LINEAR.replace("self.fc = nn.Linear(16, out_shape[0])", "self.fc = nn.Sequential(nn.Linear(16, out_shape[0]))") \
        .replace("return self.fc(torch.flatten(x, 1))", "return self.fc(x)").replace("self.se(F.relu", "(F.relu")
    error = SE_LINEAR_DIAG.model_copy(update={"module_path": "fc.0"})
    fix = find_fix(code, error)
    assert fix is None or fix.rule != "linear_to_conv1x1"

def test_a_linear_given_a_map_inside_sequential_gets_a_flatten_before_it(evaluator):
    # Seen in fm15-q: the classifier written as the last element of a conv stage's nn.Sequential.
    code = NOT_FLATTENED.replace("self.pool = nn.MaxPool2d(2)", "self.pool = nn.Sequential(nn.MaxPool2d(2), "
                                 "nn.Linear(16 * 7 * 7, out_shape[0]))").replace(
        "        x = F.relu(self.fc1(x))\n        return self.fc2(x)\n", "        return x\n")
    error = NOT_FLATTENED_DIAG.model_copy(update={"module_path": "pool.1"})
    fix = find_fix(code, error)
    assert fix.rule == "flatten_before_linear"
    assert "nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.LazyLinear(out_shape[0]))" in fix.code
    cfg, ev = evaluator
    after = ev.evaluate(EvalRequest.from_config(cfg.evaluator, code=fix.code, dataset="mnist-5k", max_flops=1))
    assert after.status == "over_budget" and after.stage == "measure", after.error

def test_a_forward_cut_short_gets_no_return():
    assert find_fix(NO_RETURN.replace("x = self.fc2(x)", "x = self.fc2"), NO_RETURN_DIAG) is None


def test_shared_layer_gets_a_copy_at_its_later_uses_only():
    fix = find_fix(SHARED, SHARED_DIAG)
    assert "self.conv1 = nn.LazyConv2d(16, 3, padding=1)" in fix.code
    assert "x = F.relu(self.conv1(x))\n        x = self.pool(F.relu(self.conv1_2(x)))" in fix.code
    # A layer used once is not shared: the plain input-size rule handles it.
    assert find_fix(WRONG_CHANNELS, WRONG_CHANNELS_DIAG).rule == "lazy_input_size"


def test_a_written_forward_stops_at_the_last_linear_or_adds_a_head():
    fix = find_fix(NO_FORWARD, NO_FORWARD_DIAG)
    assert "self.fc1 = nn.LazyLinear(32)" in fix.code  # the flatten size the model computed is not trusted
    # a norm and a dropout after the classifier are left out of the forward
    code = NO_FORWARD.replace("        self.to(device)", "        self.bn = nn.BatchNorm1d(10)\n"
                              "        self.drop = nn.Dropout(0.2)\n        self.to(device)")
    fix = find_fix(code, NO_FORWARD_DIAG)
    assert "x = self.fc2(x)\n        return x\n" in fix.code and "self.bn(x)" not in fix.code
    # a reply that stopped before any Linear gets a pooled head, built before self.to(device)
    code = NO_FORWARD.replace("        self.fc1 = nn.Linear(16 * 7 * 7, 32)\n        self.fc2 = nn.Linear(32, out_shape[0])\n", "")
    fix = find_fix(code, NO_FORWARD_DIAG)
    assert fix is not None and "added a pooled Linear head" in fix.description
    assert "self.pool = nn.MaxPool2d(2)\n        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), " \
           "nn.LazyLinear(out_shape[0]))\n        self.to(device)" in fix.code
    assert "x = self.pool(x)\n        x = self.head(x)\n        return x" in fix.code
    assert find_fix(WRONG_FLATTEN, NO_FORWARD_DIAG) is None  # it has a forward: not this rule's error


def test_contract_names_come_from_the_arguments_of_that_function_only():
    code = CONTRACT_NAME.replace("nn.Linear(32, out_shape[0])", "nn.Linear(32, num_classes)")
    fix = find_fix(find_fix(code, CONTRACT_NAME_DIAG).code,
                   CONTRACT_NAME_DIAG.model_copy(update={"line": 12, "name": "num_classes"}))
    assert fix.rule == "define_from_contract"
    assert "super().__init__()\n        num_classes = out_shape[0]\n        in_channels = in_shape[1]\n" in fix.code
    # read in a block that takes no in_shape: there is nothing to define it from
    block = HEAD + ("class Block(nn.Module):\n    def __init__(self, c):\n        super().__init__()\n"
                    "        self.conv = nn.Conv2d(in_channels, c, 3)\n")
    assert find_fix(block, CONTRACT_NAME_DIAG) is None
    assert find_fix(code, CONTRACT_NAME_DIAG.model_copy(update={"name": "width"})) is None  # not the contract's


def test_branch_padding_leaves_a_stride_mismatch_alone():
    # 14 against 7: one branch has stride 2, which padding cannot fix.
    err = BRANCHES_DIAG.model_copy(update={"got": [14, 7]})
    assert find_fix(BRANCHES, err) is None
    add = BRANCHES_DIAG.model_copy(update={"name": "add", "got": [28, 26], "dim": 3})
    assert find_fix(BRANCHES, add).rule == "same_padding"
    assert find_fix(BRANCHES, add.model_copy(update={"dim": 1})) is None  # channels differ: not padding's


def test_groups_given_by_one_name_go_in_one_fix():
    # Seen twice in fm15-n: an inception block passing groups=groups to each branch, one fix per branch.
    code = BRANCHES.replace("def __init__(self, c, padding=1):", "def __init__(self, c, padding=1, groups=8):") \
        .replace("nn.Conv2d(c, 8, 1)", "nn.Conv2d(c, 8, 1, groups=groups)") \
        .replace("nn.Conv2d(c, 8, kernel_size=5, padding=padding)", "nn.Conv2d(c, 8, kernel_size=5, padding=padding, groups=groups)") \
        .replace("self.mixed = Mixed(8)", "self.mixed = Mixed(8, groups=16)")
    error = Diagnosis(kind="groups", exc_type="ValueError", line=8)
    fix = find_fix(code, error)
    assert fix.rule == "drop_groups" and "groups=groups" not in fix.code and "line(s) 8, 10" in fix.description


def test_format_attributes_are_read_with_getattr():
    fix = find_fix(FORMAT_ATTR, FORMAT_ATTR_DIAG)
    assert 'x = F.relu(getattr(self, f"conv{i}")(x))' in fix.code
    assert find_fix(FORMAT_ATTR, Diagnosis(kind="other", exc_type="RuntimeError")) is None  # only for the syntax error


def test_a_layer_inside_sequential_is_found_by_its_index():
    fix = find_fix(IN_SEQUENTIAL, IN_SEQUENTIAL_DIAG)
    assert fix.rule == "lazy_input_size"
    assert "nn.Sequential(nn.Dropout(0.1), nn.Sequential(nn.LazyLinear(32)))" in fix.code
    for path in ("fc1.0", "fc1.1.1", "fc1.2", "fc1"):  # a dropout, past the end, the container itself
        assert find_fix(IN_SEQUENTIAL, IN_SEQUENTIAL_DIAG.model_copy(update={"module_path": path})) is None, path


def test_a_layer_built_by_a_helper_method_is_found_in_its_return():
    # Seen from the 1.5B model: self.conv2 = self._make_conv(...), the conv built in the method.
    code = WRONG_CHANNELS.replace("self.conv2 = nn.Conv2d(8, 16, 3, padding=1)", "self.conv2 = self._make_conv(8, 16)") \
        .replace("    def forward(self, x):", "    def _make_conv(self, c_in, c_out):\n"
                 "        return nn.Conv2d(c_in, c_out, 3, padding=1)\n\n    def forward(self, x):")
    fix = find_fix(code, WRONG_CHANNELS_DIAG)
    assert fix is not None and fix.rule == "lazy_input_size"
    assert "return nn.LazyConv2d(c_out, 3, padding=1)" in fix.code and "self._make_conv(8, 16)" in fix.code



def test_layers_a_builder_appends_in_a_loop_all_infer_their_input_size(evaluator):
    # Seen in fm15-n/p: `layers.append(nn.Conv2d(...))` then `return nn.Sequential(*layers)`; the error
    # names `stage2.0`, which no element of the returned call can be told to be.
    code = WRONG_FLATTEN.replace("16 * 7 * 7", "16 * 14 * 14").replace(
        "        self.pool = nn.MaxPool2d(2)\n",
        "        self.pool = nn.MaxPool2d(2)\n        self.stage2 = self._make_stage(8, 16)\n").replace(
        "    def forward(self, x):\n        x = self.pool(F.relu(self.conv1(x)))\n",
        "    def _make_stage(self, c_in, c_out):\n        layers = []\n        for _ in range(2):\n"
        "            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1))\n"
        "        return nn.Sequential(*layers)\n\n"
        "    def forward(self, x):\n        x = self.pool(F.relu(self.stage2(self.conv1(x))))\n")
    error = WRONG_CHANNELS_DIAG.model_copy(update={"module_path": "stage2.0"})
    fix = find_fix(code, error)
    assert fix.rule == "lazy_input_size" and "layers.append(nn.LazyConv2d(c_out, 3, padding=1))" in fix.code
    cfg, ev = evaluator
    after = ev.evaluate(EvalRequest.from_config(cfg.evaluator, code=fix.code, dataset="mnist-5k", max_flops=1))
    assert after.status == "over_budget" and after.stage == "measure", after.error

@pytest.mark.parametrize("attr, layer", [("pool2", "nn.MaxPool2d(2)"), ("avgpool", "nn.AdaptiveAvgPool2d(1)"),
                                         ("relu_1", "nn.ReLU()")])
def test_a_numbered_layer_never_defined_is_defined(attr, layer):
    # Seen from the 1.5B model (fm15-l): forward used self.pool2, __init__ never built it.
    code = WRONG_FLATTEN.replace("x = self.pool(F.relu(self.conv1(x)))", f"x = self.{attr}(F.relu(self.conv1(x)))")
    error = NO_FLATTEN_ATTR_DIAG.model_copy(update={"name": attr})
    fix = find_fix(code, error)
    assert fix.rule == "define_attribute" and f"super().__init__()\n        self.{attr} = {layer}\n" in fix.code
    # a width it cannot guess: the layer is skipped instead
    assert find_fix(code.replace(attr, "conv2"), error.model_copy(update={"name": "conv2"})).rule == "drop_unbuilt_layer"


def test_an_init_argument_used_as_an_attribute_is_stored():
    # Seen from the 1.5B model: self.in_shape read in __init__ though never assigned.
    code = WRONG_FLATTEN.replace("self.fc1 = nn.Linear(16 * 7 * 7, 32)",
                                 "self.fc1 = nn.Linear(16 * (self.in_shape[2] // 2) ** 2, 32)")
    error = Diagnosis(kind="no_attribute", exc_type="AttributeError", line=10, owner="Net", name="in_shape")
    fix = find_fix(code, error)
    assert fix is not None and fix.rule == "define_attribute"
    assert "super().__init__()\n        self.in_shape = in_shape\n" in fix.code


def test_every_broken_groups_goes_in_one_fix_and_sound_ones_stay():
    # Seen from the 1.5B model: four convs with groups = out_channels; one fix per error ran out.
    code = BAD_GROUPS.replace("self.pool = nn.MaxPool2d(2)\n", "self.pool = nn.MaxPool2d(2)\n"
                              "        self.c2 = nn.Conv2d(16, 32, 3, groups=32)\n"
                              "        self.c3 = nn.Conv2d(32, 32, 3, groups=32)\n")
    fix = find_fix(code, BAD_GROUPS_DIAG)
    assert fix is not None and fix.rule == "drop_groups" and "line(s) 8, 10" in fix.description
    assert "nn.Conv2d(16, 32, 3)" in fix.code and "nn.Conv2d(32, 32, 3, groups=32)" in fix.code


def test_unused_forbidden_imports_are_dropped_used_ones_kept():
    # Seen from the 1.5B model: data-loading imports left at the top of an otherwise sound module.
    code = WRONG_FLATTEN.replace("16 * 7 * 7", "16 * 14 * 14").replace(
        "import torch.nn.functional as F\n", "import torch.nn.functional as F\nimport torch.utils.data as td\n"
        "from torchvision import datasets, transforms\n")
    error = static_check(code).diagnosis  # the policy's own diagnosis
    assert error.kind == "forbidden_import" and error.lines == [4, 5]
    fix = find_fix(code, error)
    assert fix is not None and fix.rule == "drop_unused_import"
    assert fix.code == WRONG_FLATTEN.replace("16 * 7 * 7", "16 * 14 * 14")
    assert find_fix(code.replace("self.pool = nn.MaxPool2d(2)", "self.pool = transforms.Resize(14)"), error) is None


def test_device_keyword_is_dropped_where_the_callee_takes_none():
    # Seen six times in one 1.5B run: nn.ReLU(device=device), nn.MaxPool2d(2, device=device), own helpers.
    fix = find_fix(DEVICE_KW, DEVICE_KW_DIAG)
    assert fix is not None and fix.rule == "drop_device_keyword" and "3 call(s)" in fix.description
    assert "nn.MaxPool2d(2)\n" in fix.code and "nn.ReLU()\n" in fix.code and "self._conv(16)\n" in fix.code
    assert "nn.Linear(32, out_shape[0], device=device)" in fix.code  # a layer with weights takes it


def test_bare_names_are_real_torch_layers():
    import torch.nn
    assert all(isinstance(getattr(torch.nn, n, None), type) for n in NN_LAYERS)
    assert find_fix(BARE_NAME, BARE_NAME_DIAG.model_copy(update={"name": "Residual"})) is None  # not torch's


def test_no_rule_for_unknown_errors_or_broken_code():
    assert find_fix(WRONG_FLATTEN, Diagnosis(kind="other", exc_type="ZeroDivisionError")) is None
    assert find_fix("def broken(:", WRONG_FLATTEN_DIAG) is None
    # the module named in the error is not built as `self.fc1 = nn.Linear(...)`: nothing to edit
    assert find_fix(WRONG_FLATTEN.replace("self.fc1 =", "self.head ="), WRONG_FLATTEN_DIAG) is None


def test_unknown_names_are_replaced_everywhere_through_the_imports():
    code = WRONG_FLATTEN.replace("import torch.nn.functional as F", "from torch.nn import functional as G") \
        .replace("F.relu", "G.swish").replace("x = torch.flatten(x, 1)", "x = G.flatten(x, start_dim=1)")
    error = Diagnosis(kind="no_torch_attribute", owner="torch.nn.functional", name="swish")
    fix = find_fix(code, error)
    assert fix is not None and fix.rule == "unknown_layer" and "G.swish" not in fix.code
    assert fix.code.count("G.silu(") == 2
    fix = find_fix(fix.code, error.model_copy(update={"name": "flatten"}))
    assert fix is not None and "x = torch.flatten(x, 1)" in fix.code
    # a name with no known replacement is left to the LLM
    assert find_fix(code, error.model_copy(update={"name": "gelu2"})) is None


def test_aliases_replace_names_torch_lacks_by_names_it_has():
    torch = importlib.import_module("torch")
    for module_name, aliases in ALIASES.items():
        module = importlib.import_module(module_name)
        for bad, good in aliases.items():
            assert not hasattr(module, bad), bad
            name = re.match(r"(?:\{m\}\.|torch\.)?(\w+)", good).group(1)
            assert hasattr(torch if good.startswith("torch.") else module, name), good


def test_helper_device_read_some_other_way_is_left_alone():
    code = HELPER_DEVICE.replace("        self.to(self.device)\n", "        self.on_gpu = self.device == 'cuda'\n")
    assert find_fix(code, HELPER_DEVICE_DIAG) is None


def test_a_block_defined_inside_init_gets_its_argument_stored():
    # Seen from the 1.5B model: a residual block class defined in Net.__init__, reading self.stride in forward.
    code = HEAD + '''class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()

        class Block(nn.Module):
            def __init__(self, channels, stride=1):
                super().__init__()
                self.conv = nn.Conv2d(channels, channels, 3, stride=stride, padding=1)

            def forward(self, x):
                return self.conv(x) if self.stride == 1 else x
'''
    fix = find_fix(code, Diagnosis(kind="no_attribute", owner="Block", name="stride"))
    assert fix is not None and "super().__init__()\n                self.stride = stride\n" in fix.code


def test_inplace_ops_become_out_of_place():
    fix = find_fix(INPLACE, INPLACE_DIAG)
    assert fix is not None and fix.rule == "inplace"
    assert "self.act = nn.ReLU(inplace=False)" in fix.code and "        y = y + x\n" in fix.code
    assert "# keep this comment" in fix.code
    # a lone in-place call keeps its result; one inside an expression loses its underscore
    code = INPLACE.replace("        y += x\n", "        F.relu_(y)\n        y *= x + 1\n        y = y.add_(x) * 2\n")
    fix = find_fix(code, INPLACE_DIAG)
    assert fix is not None
    assert "        y = F.relu(y)\n        y = y * (x + 1)\n        y = y.add(x) * 2\n" in fix.code
    assert find_fix(WRONG_FLATTEN, INPLACE_DIAG) is None  # nothing in-place to change


def test_widths_scale_together_and_nothing_else_does():
    fix = find_fix(CHANNEL_LIST.replace("out_shape[0])", "100)"), TOO_SLOW_DIAG)
    assert fix is not None and fix.rule == "shrink_widths"
    assert fix.description == "scaled channel widths by 0.69 (epoch time 250.7s > 180s): 128->88, 256->176, 512->352"
    assert "channels = [88, 176, 352]  # keep this comment" in fix.code  # the list the loop reads
    assert "nn.Linear(352 * 3 * 3, 100)" in fix.code  # the flatten size follows; the class count stays
    assert "nn.Conv2d(prev, c, 3, padding=1)" in fix.code and "nn.MaxPool2d(2)" in fix.code


def test_the_worst_budget_sets_the_factor_for_every_width():
    fix = find_fix(WIDE, WIDE_DIAG)
    assert fix is not None and fix.rule == "shrink_widths"
    assert fix.description == "scaled channel widths by 0.32 (FLOPs 478.9M > 60M): 128->40, 256->80, 512->160"
    for kept in ("def __init__(self, channels=80):", "groups=channels)", "nn.Conv2d(in_shape[1], 40, kernel_size=3",
                 "nn.Conv2d(80, 80, kernel_size=3, padding=1, groups=80)", "nn.Linear(80 * 7 * 7, 160)",
                 "nn.BatchNorm1d(160)", "nn.Linear(160, out_shape[0])"):
        assert kept in fix.code, kept
    # a lone Linear size is the input size or the class count: it stays
    fix = find_fix(HEAD + "fc1 = nn.Linear(784, 512)\nfc2 = nn.Linear(512, 100)\n", WIDE_DIAG)
    assert fix is not None and "nn.Linear(784, 160)\nfc2 = nn.Linear(160, 100)" in fix.code
    # no literal widths, or no budget in the error: nothing to scale
    assert find_fix(WIDE.replace("128", "w1").replace("256", "w2").replace("512", "w3"), WIDE_DIAG) is None
    assert find_fix(WIDE, Diagnosis(kind="over_budget")) is None


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory):
    cfg = load_config(home=tmp_path_factory.mktemp("home"), evaluator={"threads": 1})
    with Evaluator(cfg.data_dir) as ev:
        yield cfg, ev


# The in-place and budget rules show their fix in training and against the budget (tests below).
@pytest.mark.parametrize("rule", sorted(set(CASES) - {"inplace", "shrink_widths"}))
def test_fixed_code_builds_runs_and_is_measured(rule, evaluator):
    cfg, ev = evaluator
    code, _, _ = CASES[rule]
    before = ev.evaluate(EvalRequest.from_config(cfg.evaluator, code=code, dataset="mnist-5k", max_flops=1))
    assert before.status != "over_budget"  # the case really fails in the sandbox ...
    if rule != "function_to_layer":  # ... with the diagnosis its fixture states (that one is hand-made, below)
        assert before.diagnosis == CASES[rule][1]
    fixed = find_fix(code, CASES[rule][1]).code
    # A FLOP budget of 1 stops the candidate right after build, forward shape check and measurement.
    after = ev.evaluate(EvalRequest.from_config(cfg.evaluator, code=fixed, dataset="mnist-5k", max_flops=1))
    assert after.status == "over_budget" and after.stage == "measure", after.error
    assert after.params and after.params > 0


def test_fixed_sequential_layer_builds(evaluator):
    cfg, ev = evaluator
    fixed = find_fix(IN_SEQUENTIAL, IN_SEQUENTIAL_DIAG).code
    after = ev.evaluate(EvalRequest.from_config(cfg.evaluator, code=fixed, dataset="mnist-5k", max_flops=1))
    assert after.status == "over_budget" and after.stage == "measure", after.error


def test_fixed_inplace_code_trains(evaluator):
    cfg, ev = evaluator
    before = ev.evaluate(EvalRequest.from_config(cfg.evaluator, code=INPLACE, dataset="mnist-5k", epochs=1))
    assert before.status == "runtime_error" and "inplace operation" in before.error
    fixed = find_fix(INPLACE, before.diagnosis).code
    after = ev.evaluate(EvalRequest.from_config(cfg.evaluator, code=fixed, dataset="mnist-5k", epochs=1))
    assert after.ok, after.error


@pytest.mark.parametrize("code", [WIDE, CHANNEL_LIST], ids=["wide", "channel_list"])
def test_shrunk_model_fits_the_flop_budget(code, evaluator):
    cfg, ev = evaluator
    budget = 60_000_000
    before = ev.evaluate(EvalRequest.from_config(cfg.evaluator, code=code, dataset="mnist-5k", max_flops=budget))
    assert before.status == "over_budget" and "FLOPs per sample exceed" in before.error
    fixed = find_fix(code, before.diagnosis).code
    # A parameter budget of 1 stops the candidate right after measuring it, before training.
    after = ev.evaluate(EvalRequest.from_config(cfg.evaluator, code=fixed, dataset="mnist-5k", max_flops=budget,
                                                max_params=1))
    assert after.status == "over_budget" and after.stage == "measure" and "FLOPs" not in after.error, after.error
    assert after.flops is not None and after.flops <= budget
