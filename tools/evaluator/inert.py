"""What a child's change may leave inert, found in the sandboxed child before training.

In the parents search the 1.5B model often writes a change that changes nothing: it builds a layer and
never calls it, or adds parameter-free modules, renames attributes and drops comments. Such a child then
trains a whole epoch to its parent's accuracy to four decimals (4 of 17 valid children in one arm).
`unused_layers` names the layers with weights that forward never uses; `behaviour` is a digest of what
the model computes from its starting weights, equal for two designs that would train alike step for step.
"""
from __future__ import annotations

import copy
import hashlib

import torch
import torch.nn as nn

# A model that trains itself (LEMUR's train_setup / learn) carries its recipe as code the digest cannot see.
OWN_TRAINING = ("train_setup", "learn")


def unused_layers(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Modules whose own weights forward never uses (built in __init__, left out of forward): the ones no
    gradient reaches through one eval-mode forward and backward, so no running statistic moves and no
    random number is drawn. A model that cannot run backward here is left to training to explain."""
    model.eval()
    try:
        with torch.enable_grad():
            model(x).float().sum().backward()
        return [name for name, mod in model.named_modules()
                if (own := [p for p in mod.parameters(recurse=False) if p.requires_grad])
                and all(p.grad is None for p in own)]
    except Exception:  # noqa: BLE001
        return []
    finally:
        model.zero_grad(set_to_none=True)
        model.train()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().float().cpu().contiguous().numpy().tobytes()


def behaviour(model: nn.Module, x: torch.Tensor, seed: int) -> str | None:
    """A digest of what `model` computes from its starting weights: its parameter shapes, its outputs and
    weight gradients on one seeded batch in training mode (dropout drawn from the seed), then its outputs
    in evaluation mode (after that step's running statistics). Equal digests mean equal weights, function
    and gradients, so the two designs train alike (our recipe, the same seed); exact bytes, so a change
    that only reorders arithmetic counts as a change. None where it cannot tell: a model with its own
    training code, or one the probe cannot run. Works on a copy with the random state forked: the model
    that trains next, and every random draw after, are untouched."""
    if any(callable(getattr(model, name, None)) for name in OWN_TRAINING):
        return None
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        probe = copy.deepcopy(model)
        digest = hashlib.sha256(repr([tuple(p.shape) for p in probe.parameters()]).encode())
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            batch = torch.randn((4, *x.shape[1:]), device=x.device, dtype=x.dtype)
            probe.train()
            with torch.enable_grad():
                out = probe(batch)
                (out.float() * torch.randn(out.shape, device=out.device)).sum().backward()
            digest.update(_tensor_bytes(out))
            for p in probe.parameters():
                digest.update(b"-" if p.grad is None else _tensor_bytes(p.grad))
            probe.eval()
            with torch.no_grad():
                digest.update(_tensor_bytes(probe(batch)))
        return digest.hexdigest()[:16]
    except Exception:  # noqa: BLE001 - no digest is no check, never a failure of the model
        return None
