"""A random-weight stand-in for a GGUF model, for a machine its weights cannot reach.

`header` keeps what it takes to rebuild the model's shape: the file's bytes before its tensor data
(metadata, tokenizer, tensor table) and each tensor's offset, type and size, a few MB gzipped.
`write` rebuilds a file of the same size and layout with random weights. llama.cpp loads it, holds
the same memory and generates at the same speed, since those depend on the shapes and types, not
the values; its text is noise. The GPU checks use it (`bench.gpu_share`, LoRA on CUDA): a device
call carries 64 MiB, the 1.5B model is 1.1 GB.

Run: python -m bench.gguf_standin header MODEL.gguf SPEC.json.gz
     python -m bench.gguf_standin write SPEC.json.gz STANDIN.gguf
"""
from __future__ import annotations

import argparse
import base64
import gzip
import json
from pathlib import Path

import numpy as np

# Bytes per block and the offsets of its float16 scale fields. Random bytes there could be inf or
# NaN, so each is set to a small finite scale; the quantised values themselves stay random.
SCALES = {"Q4_0": (18, [0]), "Q4_1": (20, [0, 2]), "Q5_0": (22, [0]), "Q5_1": (24, [0, 2]),
          "Q8_0": (34, [0]), "Q2_K": (84, [80, 82]), "Q3_K": (110, [108]), "Q4_K": (144, [0, 2]),
          "Q5_K": (176, [0, 2]), "Q6_K": (210, [208])}
FLOATS = {"F32": np.float32, "F16": np.float16}
SCALE = np.float16(2.0 ** -12)


def header(model: Path, spec: Path) -> dict:
    from gguf import GGUFReader

    reader = GGUFReader(model)
    tensors = [[t.name, t.tensor_type.name, int(t.data_offset), int(t.n_bytes)] for t in reader.tensors]
    unknown = sorted({t[1] for t in tensors} - set(SCALES) - set(FLOATS))
    if unknown:
        raise SystemExit(f"{model}: tensor types {unknown} have no stand-in layout")
    with open(model, "rb") as f:
        head = f.read(int(reader.data_offset))
    out = {"model": model.name, "size": model.stat().st_size, "header": base64.b64encode(head).decode(),
           "tensors": tensors}
    spec.write_bytes(gzip.compress(json.dumps(out).encode()))
    return out


def _random(kind: str, name: str, nbytes: int, rng: np.random.Generator) -> bytes:
    if kind in FLOATS:
        dtype = FLOATS[kind]
        values = rng.normal(0.0, 0.02, nbytes // np.dtype(dtype).itemsize)
        if "norm" in name:  # a norm's weight near 1 keeps activations in range through the layers
            values += 1.0
        return values.astype(dtype).tobytes()
    block, offsets = SCALES[kind]
    data = rng.integers(0, 256, nbytes, dtype=np.uint8).reshape(-1, block)
    for off in offsets:
        data[:, off:off + 2] = np.frombuffer(SCALE.tobytes(), dtype=np.uint8)
    return data.tobytes()


def write(spec: Path, out: Path, seed: int = 0) -> Path:
    s = json.loads(gzip.decompress(spec.read_bytes()))
    rng = np.random.default_rng(seed)
    with open(out, "wb") as f:
        f.write(base64.b64decode(s["header"]))
        for name, kind, offset, nbytes in sorted(s["tensors"], key=lambda t: t[2]):
            f.write(b"\0" * (offset - f.tell()))  # the file's alignment padding
            f.write(_random(kind, name, nbytes, rng))
        f.write(b"\0" * (s["size"] - f.tell()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("header")
    h.add_argument("model", type=Path)
    h.add_argument("spec", type=Path)
    w = sub.add_parser("write")
    w.add_argument("spec", type=Path)
    w.add_argument("out", type=Path)
    args = ap.parse_args()
    if args.cmd == "header":
        s = header(args.model, args.spec)
        print(f"{args.spec}: {len(s['tensors'])} tensors, {args.spec.stat().st_size / 2**20:.1f} MiB")
    else:
        print(f"wrote {write(args.spec, args.out)} ({args.out.stat().st_size / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
