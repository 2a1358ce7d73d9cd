"""The random-weight stand-in the GPU checks load in place of a model too big to carry there: the same
metadata, tensor table and file size, random values, finite scales."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
from gguf.quants import quantize

from bench import gguf_standin


def _model(path: Path) -> Path:
    w = GGUFWriter(str(path), "qwen2")
    w.add_block_count(1)
    w.add_string("tokenizer.ggml.model", "gpt2")
    rng = np.random.default_rng(1)
    w.add_tensor("blk.0.attn_norm.weight", np.ones(64, dtype=np.float32))
    q = quantize(rng.normal(size=(4, 64)).astype(np.float32), GGMLQuantizationType.Q8_0)
    w.add_tensor("blk.0.attn_q.weight", q, raw_dtype=GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_the_stand_in_keeps_the_layout_and_metadata_with_random_finite_weights(tmp_path: Path) -> None:
    real = _model(tmp_path / "real.gguf")
    spec = tmp_path / "spec.json.gz"
    gguf_standin.header(real, spec)
    out = gguf_standin.write(spec, tmp_path / "standin.gguf")
    assert out.stat().st_size == real.stat().st_size
    a, b = GGUFReader(real), GGUFReader(out)
    assert [(t.name, t.tensor_type, list(t.shape)) for t in a.tensors] == \
        [(t.name, t.tensor_type, list(t.shape)) for t in b.tensors]
    assert b.fields["tokenizer.ggml.model"].contents() == "gpt2"
    norm, q = b.tensors
    assert abs(float(np.mean(norm.data)) - 1.0) < 0.1  # a norm's weight stays near 1
    scales = np.asarray(q.data).reshape(-1, 34)[:, :2].copy().view(np.float16)
    assert np.isfinite(scales).all() and (scales == gguf_standin.SCALE).all()
    assert not np.array_equal(np.asarray(q.data), np.asarray(a.tensors[1].data))


def test_an_unknown_tensor_type_is_refused_by_name(tmp_path: Path) -> None:
    w = GGUFWriter(str(tmp_path / "iq.gguf"), "qwen2")
    w.add_tensor("t", np.zeros((1, 66), dtype=np.uint8), raw_dtype=GGMLQuantizationType.IQ2_XXS)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(SystemExit, match="IQ2_XXS"):
        gguf_standin.header(tmp_path / "iq.gguf", tmp_path / "spec.json.gz")
