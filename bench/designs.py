"""A fixed family of hand-written CNN designs, written as model files: a 'run' without the LLM.

    python -m bench.designs OUT_DIR            # writes d1.py ... d8.py
    nasgraph eval OUT_DIR/*.py --dataset fashion-mnist --run-id fm-designs
    nasgraph train fm-designs --top 5 --epochs 10

The designs differ in width, depth, normalisation and pooling, so that their one-epoch proxies and
their final accuracies spread out; the figures in docs/2026-11-27-own-data-export.md use them.
"""
from __future__ import annotations

import sys
from pathlib import Path

TEMPLATE = '''import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        c = in_shape[1]
        layers = []
        for width in {widths}:
            layers += [nn.Conv2d(c, width, {kernel}, padding={pad}){norm}, nn.{act}()]
            {pool}
            c = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d({head_side})
        self.drop = nn.Dropout({dropout})
        self.fc = nn.Linear(c * {head_side} * {head_side}, out_shape[0])

    def forward(self, x):
        return self.fc(self.drop(torch.flatten(self.pool(self.features(x)), 1)))
'''

# (widths, kernel, batch norm, activation, pool after every block, head side, dropout)
DESIGNS = [
    ([16, 32], 3, True, "ReLU", True, 1, 0.0),
    ([32, 64], 3, True, "ReLU", True, 2, 0.2),
    ([16, 32, 64], 3, True, "ReLU", True, 1, 0.1),
    ([8, 16], 5, False, "ReLU", True, 1, 0.0),
    ([24, 48, 48], 3, True, "SiLU", True, 2, 0.2),
    ([32], 3, True, "ReLU", False, 4, 0.0),
    ([16, 16, 32, 32], 3, True, "GELU", False, 2, 0.1),
    ([12, 24], 3, False, "Tanh", True, 2, 0.0),
]


def design(widths, kernel, norm, act, pool_each, head_side, dropout) -> str:
    return TEMPLATE.format(widths=widths, kernel=kernel, pad=kernel // 2, act=act, head_side=head_side,
                           dropout=dropout, norm=", nn.BatchNorm2d(width)" if norm else "",
                           pool="layers.append(nn.MaxPool2d(2))" if pool_each else "pass")


def main(argv: list[str]) -> int:
    out = Path(argv[1] if len(argv) > 1 else "designs")
    out.mkdir(parents=True, exist_ok=True)
    for i, spec in enumerate(DESIGNS, 1):
        (out / f"d{i}.py").write_text(design(*spec), encoding="utf-8")
    print(f"wrote {len(DESIGNS)} designs to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
