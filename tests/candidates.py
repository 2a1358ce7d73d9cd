"""Hand-written candidate modules for loop tests (tiny, for the 8x8 `digits` set)."""

VALID = '''
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[1], 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(64, out_shape[0])
        self.to(device)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(self.pool(x), 1))
'''

# The same architecture: a comment, a docstring and a renamed local must not fool the fingerprint.
VALID_DUPLICATE = '''
import torch
import torch.nn as nn


class Net(nn.Module):
    """Same net, different text."""
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[1], 16, 3, padding=1)  # feature extractor
        self.bn = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(64, out_shape[0])
        self.to(device)

    def forward(self, inp):
        h = torch.relu(self.bn(self.conv(inp)))
        return self.fc(torch.flatten(self.pool(h), 1))
'''

# groups=3 does not divide 1 input channel: fails when built.
BUILD_ERROR = VALID.replace("nn.Conv2d(in_shape[1], 16, 3, padding=1)", "nn.Conv2d(in_shape[1], 16, 3, padding=1, groups=3)")


def wide(channels: int) -> str:
    """A valid, distinct architecture per width (two convs)."""
    return f'''
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.c1 = nn.Conv2d(in_shape[1], {channels}, 3, padding=1)
        self.c2 = nn.Conv2d({channels}, {channels}, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(4 * {channels}, out_shape[0])
        self.to(device)

    def forward(self, x):
        x = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))
'''


FORBIDDEN = "import os\n" + VALID
# Refused for code a person hands in too (their policy allows `os`, not processes).
HOSTILE = "import subprocess\n" + VALID


def fenced(code: str) -> str:
    return f"Here is the model:\n```python\n{code}\n```\n"


TRIPLE = "PROBLEM: low accuracy\nMODIFICATION: add a second convolution\nEXPECTED: higher accuracy"
