"""A peft LoRA adapter written as a llama.cpp GGUF adapter, and checked against a base before use.

llama.cpp reads an adapter as a GGUF file with `general.type = adapter`, `adapter.type = lora`,
`adapter.lora.alpha`, and two tensors per adapted weight, `<base tensor>.lora_a` (rank x in) and
`.lora_b` (out x rank). The `gguf` package writes that format and maps Hugging Face module names to
GGUF tensor names, so no script of llama.cpp's is needed. llama.cpp aborts the process on some
mismatches and silently skips others, so `check_adapter` reads both files first and refuses, with a
message naming both, an adapter that is corrupt or was made for another base.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nasgraph.errors import NasgraphError

# Our own keys: which base the adapter was trained on, so a swap is caught before llama.cpp sees it.
KEY_BASE_NAME = "nasgraph.base.name"
KEY_BASE_SHA256 = "nasgraph.base.sha256"
KEY_RANK = "nasgraph.lora.rank"


class AdapterError(NasgraphError):
    """A LoRA adapter cannot be used with the base model it was given; the message names both."""


@dataclass(frozen=True)
class AdapterInfo:
    path: Path
    architecture: str
    alpha: float
    rank: int
    tensors: int
    base_name: str
    base_sha256: str


def _hf_to_gguf(arch: str, n_layers: int):
    import gguf

    try:
        arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    except StopIteration:
        raise AdapterError(f"no GGUF tensor map for architecture {arch!r}") from None
    return gguf.get_tensor_name_map(arch_id, n_layers)


def write_adapter(lora_state: dict, path: Path, *, architecture: str, n_layers: int, alpha: float, rank: int,
                  base_name: str, base_sha256: str) -> Path:
    """Write peft's LoRA tensors (`...<module>.lora_A[.default].weight` → A, `lora_B` → B) as a GGUF
    adapter at `path`, atomically (a half-written adapter never has the final name)."""
    import gguf

    names = _hf_to_gguf(architecture, n_layers)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), architecture)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(alpha))
    writer.add_string(KEY_BASE_NAME, base_name)
    writer.add_string(KEY_BASE_SHA256, base_sha256)
    writer.add_uint32(KEY_RANK, int(rank))
    count = 0
    for key, tensor in sorted(lora_state.items()):
        module, sep, rest = key.partition(".lora_")
        if not sep:
            continue
        module = module.removeprefix("base_model.model.")
        target = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if target is None:
            raise AdapterError(f"no GGUF tensor for adapted module {module!r} ({architecture})")
        suffix = ".lora_a" if rest.startswith("A") else ".lora_b"
        writer.add_tensor(target + suffix, np.ascontiguousarray(tensor.detach().float().cpu().numpy()))
        count += 1
    if not count:
        raise AdapterError("the LoRA state holds no lora_A/lora_B tensors")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return path


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return field.contents() if field is not None else default


def _read(path: Path, what: str):
    import gguf

    if not path.is_file():
        raise AdapterError(f"{what} not found: {path}")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as e:  # the reader raises ValueError, struct errors, IndexError... on a bad file
        raise AdapterError(f"{what} {path} is not a readable GGUF file ({type(e).__name__}: {e})") from None


def base_facts(path: Path) -> tuple[str, dict[str, list[int]]]:
    """(architecture, tensor name -> shape in ggml order) from a GGUF header, reading nothing else.

    gguf's own reader parses every metadata array element by element: ~36 s for the 151k-token
    vocabulary of a Qwen2.5 file on this CPU. Here arrays are skipped by their sizes, which takes
    well under a second; the format is GGUF v2/v3 (all the embedded models and llama.cpp's output)."""
    import struct

    from gguf import GGUFValueType as T

    fixed = {T.UINT8: 1, T.INT8: 1, T.BOOL: 1, T.UINT16: 2, T.INT16: 2, T.UINT32: 4, T.INT32: 4, T.FLOAT32: 4,
             T.UINT64: 8, T.INT64: 8, T.FLOAT64: 8}
    try:
        with open(path, "rb") as f:
            def u32() -> int:
                return struct.unpack("<I", f.read(4))[0]

            def u64() -> int:
                return struct.unpack("<Q", f.read(8))[0]

            def string() -> str:
                return f.read(u64()).decode("utf-8", "replace")

            def skip(kind: int) -> None:
                if kind == T.STRING:
                    f.seek(u64(), 1)
                elif kind == T.ARRAY:
                    item, count = u32(), u64()
                    if item in fixed:
                        f.seek(fixed[T(item)] * count, 1)
                    else:
                        for _ in range(count):
                            skip(item)
                else:
                    f.seek(fixed[T(kind)], 1)

            if f.read(4) != b"GGUF" or u32() not in (2, 3):
                raise ValueError("not a GGUF v2/v3 file")
            n_tensors, n_kv = u64(), u64()
            arch = ""
            for _ in range(n_kv):
                key, kind = string(), u32()
                if key == "general.architecture" and kind == T.STRING:
                    arch = string()
                else:
                    skip(kind)
            shapes: dict[str, list[int]] = {}
            for _ in range(n_tensors):
                name = string()
                shapes[name] = [u64() for _ in range(u32())]
                f.seek(4 + 8, 1)  # type, offset
    except (OSError, ValueError, KeyError, struct.error) as e:
        raise AdapterError(f"base model {path} is not a readable GGUF file ({type(e).__name__}: {e})") from None
    return arch, shapes


def check_adapter(adapter: Path, base: Path, *, base_name: str = "", base_sha256: str = "") -> AdapterInfo:
    """The adapter's facts, once it is known to fit `base`: a LoRA GGUF for the same architecture, made
    for this base (when both sides know its hash), with every tensor's shape matching the base weight."""
    adapter, base = Path(adapter), Path(base)
    ar = _read(adapter, "LoRA adapter")
    if _field(ar, "general.type") != "adapter" or _field(ar, "adapter.type") != "lora":
        raise AdapterError(f"{adapter} is a GGUF file but not a LoRA adapter (general.type="
                           f"{_field(ar, 'general.type')!r}); it cannot be applied to {base.name}")
    base_arch, shapes = base_facts(base)
    arch = _field(ar, "general.architecture")
    made_for = _field(ar, KEY_BASE_NAME, "") or "an unknown base"
    if arch != base_arch:
        raise AdapterError(f"adapter {adapter.name} is for a {arch} model ({made_for}), but {base.name} is {base_arch}")
    made_sha = _field(ar, KEY_BASE_SHA256, "")
    if made_sha and base_sha256 and made_sha != base_sha256:
        raise AdapterError(f"adapter {adapter.name} was trained on {made_for}, not on {base_name or base.name}")
    ranks: set[int] = set()
    for t in ar.tensors:
        target, _, part = t.name.rpartition(".")
        want = shapes.get(target)
        got = [int(x) for x in t.shape]
        if part not in ("lora_a", "lora_b") or want is None:
            raise AdapterError(f"adapter {adapter.name} has tensor {t.name}, which {base.name} lacks "
                               f"(made for {made_for})")
        # ggml order: lora_a is (in, rank), lora_b is (rank, out); the base weight is (in, out).
        ok = got[0] == want[0] if part == "lora_a" else got[1] == want[1]
        if not ok:
            raise AdapterError(f"adapter {adapter.name} tensor {t.name} has shape {got}, which does not fit "
                               f"{base.name}'s {target} {want} (made for {made_for})")
        ranks.add(got[1] if part == "lora_a" else got[0])
    if not ar.tensors or len(ranks) != 1:
        raise AdapterError(f"adapter {adapter.name} holds no consistent LoRA tensors")
    return AdapterInfo(path=adapter, architecture=str(arch), alpha=float(_field(ar, "adapter.lora.alpha", 0.0)),
                       rank=ranks.pop(), tensors=len(ar.tensors), base_name=str(made_for), base_sha256=str(made_sha))
