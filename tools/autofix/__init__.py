"""Rule-based fixes for the mechanical failures small generators make most, applied without an LLM call.

Measured on the 1.5B generator (Fashion-MNIST runs): most failures were a wrong flatten size, a forward
that never flattened, a conv or BatchNorm given the wrong channel count, a `self.flatten` never defined
(or assigned a function), `groups` that does not divide the channels, and a pooling layer on a 1x1 map;
then a layer torch does not have (nn.GlobalAvgPool2d, F.swish) or one named without `nn.`
(`Identity()`), a forbidden import nothing uses (`import torchvision`), `device=` given to a layer that
takes none (`nn.ReLU(device=device)`), `self.device` read in a helper block that never stored one, a
layer's input size read from a layer without that attribute (pool.out_features), an in-place op autograd
still needed, one layer applied to inputs of different sizes, an attribute name written like an f-string
(`self.conv{i}`), Linears of a squeeze-excitation block given a pooled map, a model too wide for its
parameter, FLOP or epoch-time budget, a forward never written, a BatchNorm of the wrong rank, branches
whose padding gives maps of different sizes, `in_channels` or `num_classes` read but never defined,
`F.relu(inplace=True)` used as a layer, `**prm` splatted into a layer, a forward that returns features
or a map instead of logits (no head), one that returns nothing, one that applies a layer never built,
and a weight-init loop that reaches a Lazy layer. The LLM, shown the error, often returned its code
unchanged; each of these has one obvious edit. A fix touches only the offending layers or lines (the
rest of the text, comments included, is kept) and returns None when the error is not one it knows or the
code does not have the expected shape, so the LLM repair still handles everything else. `find_fix` is
pure: routers may call it.
"""
from __future__ import annotations

import ast

from nasgraph.tools.evaluator.messages import budget_excess

from .budget import fix_shrink_widths
from .edit import Fix, parses
from .forward import fix_missing_forward
from .names import (
    fix_bare_torch_name,
    fix_contract_name,
    fix_device_keyword,
    fix_format_attribute,
    fix_function_as_layer,
    fix_functional_as_layer,
    fix_helper_device,
    fix_inplace,
    fix_missing_layer,
    fix_splat_keywords,
    fix_unknown_layer,
    fix_unused_forbidden_import,
)
from .output import fix_missing_return, fix_output_head, fix_unbuilt_layer
from .residual import fix_residual_shape
from .shapes import (
    fix_batchnorm_rank,
    fix_branch_padding,
    fix_groups,
    fix_init_of_lazy,
    fix_lazy_from_attribute,
    fix_lazy_input_size,
    fix_pool_too_small,
    fix_pooled_linear,
    fix_shared_layer,
    fix_unflattened,
)

__all__ = ["Fix", "budget_excess", "find_fix"]

# Most specific first: a shared layer before the plain input-size rule, which would only move its error.
RULES = (fix_pooled_linear, fix_unflattened, fix_shared_layer, fix_lazy_input_size, fix_batchnorm_rank,
         fix_branch_padding, fix_missing_forward, fix_missing_layer, fix_function_as_layer,
         fix_functional_as_layer, fix_groups, fix_pool_too_small, fix_unknown_layer, fix_bare_torch_name,
         fix_contract_name, fix_unused_forbidden_import, fix_helper_device, fix_lazy_from_attribute,
         fix_inplace, fix_shrink_widths, fix_device_keyword, fix_splat_keywords, fix_output_head,
         fix_missing_return, fix_unbuilt_layer, fix_init_of_lazy, fix_residual_shape)


def find_fix(code: str, error: str) -> Fix | None:
    """The first rule that applies to this code and error, or None."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        fix = fix_format_attribute(code, error)  # the only rule for code that does not parse
        return fix if fix is not None and parses(fix.code) else None
    for rule in RULES:
        fix = rule(code, tree, error)
        if fix is not None and fix.code != code and parses(fix.code):
            return fix
    return None
