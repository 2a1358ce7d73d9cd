"""Short numbers for prompts, fix descriptions and tables: short numbers keep small prompts small."""
from __future__ import annotations


def human(n: int | float | None) -> str:
    """12_345 -> '12.3k', 5_000_000 -> '5M', 2_325_256_192 -> '2.3G', None -> '?'."""
    if n is None:
        return "?"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}".removesuffix(".0") + unit
    return f"{n:g}"
