"""A trained model as files a user takes home, and how fast it answers on this machine.

Runs inside the sandboxed child (the model is generated code): the parent only copies the files out.
What is exported is the model with the harness's input pipeline baked in (`Deployed`): it takes float
images in [0, 1], (N, C, H, W) at the dataset's size, and returns logits; normalisation and the
resize a model was trained at travel inside the file, so a user needs nothing of nasgraph.

  pytorch: `<stem>.pt2`, a torch.export program (torch.export.load(path).module()(x)), batch dynamic
  onnx:    `<stem>.onnx`, one file with its weights (dynamo exporter, opset of this torch), batch
           dynamic; checked with ONNX Runtime against PyTorch on the same real test images
Both carry the metadata (`nasgraph.json` extra file / ONNX metadata_props): class names, input
shape and range, accuracy. Latency is the median of timed forward passes after a warm-up.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from nasgraph.tools.evaluator.datasets import TensorData

LATENCY_BATCHES = (1, 64)
MAX_BATCH = 4096          # the exported programs accept batches up to this size
CHECK_IMAGES = 64         # real test images both runtimes see for the ONNX check
WARMUP_RUNS = 3
MIN_RUNS, MAX_RUNS, TIME_PER_BATCH_S = 5, 50, 2.0


class Deployed(nn.Module):
    """The trained model behind the harness's pipeline: [0, 1] images -> normalised (-> resized) -> logits."""

    def __init__(self, model: nn.Module, data: TensorData, side: int | None) -> None:
        super().__init__()
        c = data.in_shape[0]
        mean = torch.tensor(data.mean, dtype=torch.float32).view(1, c, 1, 1)
        std = torch.tensor(data.std, dtype=torch.float32).view(1, c, 1, 1)
        self.register_buffer("scale", 1.0 / std)
        self.register_buffer("shift", -mean / std)
        self.side = side
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scale + self.shift
        if self.side:
            x = F.interpolate(x, size=(self.side, self.side), mode="bilinear", align_corners=False)
        return self.model(x)


def test_images(data: TensorData, n: int) -> torch.Tensor:
    """`n` real test images as float [0, 1] (repeated when the test split is smaller)."""
    idx = torch.arange(n) % len(data.test_x)
    return data.test_x[idx].float() / 255.0


def median_ms(run: Callable[[], Any]) -> float:
    """Median wall time of one call in milliseconds: a warm-up, then MIN_RUNS..MAX_RUNS timed calls."""
    for _ in range(WARMUP_RUNS):
        run()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < MIN_RUNS or (len(times) < MAX_RUNS and time.perf_counter() - start < TIME_PER_BATCH_S):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return round(1000 * statistics.median(times), 3)


def torch_latency(module: nn.Module, data: TensorData, batches=LATENCY_BATCHES) -> dict[str, float]:
    """Forward latency of the model in eager PyTorch (eval mode, no autograd), per batch size."""
    module.eval()
    out = {}
    with torch.inference_mode():
        for b in batches:
            x = test_images(data, b)
            out[str(b)] = median_ms(lambda x=x: module(x))
    return out


def _meta(data: TensorData, extra: dict) -> dict:
    c, h, w = data.in_shape
    return {"input": {"shape": ["batch", c, h, w], "dtype": "float32", "range": [0.0, 1.0], "layout": "NCHW"},
            "output": "logits", "classes": list(data.class_names) or [str(i) for i in range(data.classes)],
            "dataset": data.name, **extra}


def _batch_dim() -> tuple[dict, ...]:
    return ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)


def export_pytorch(module: Deployed, data: TensorData, path: Path, meta: dict) -> dict:
    example = test_images(data, 2)
    program = torch.export.export(module.eval(), (example,), dynamic_shapes=_batch_dim())
    torch.export.save(program, path, extra_files={"nasgraph.json": json.dumps(meta)})
    check = torch.export.load(path).module()
    x = test_images(data, CHECK_IMAGES)
    with torch.inference_mode():
        diff = float((check(x) - module(x)).abs().max())
    return {"file": path.name, "bytes": path.stat().st_size, "max_abs_diff": diff}


def export_onnx(module: Deployed, data: TensorData, path: Path, meta: dict, threads: int) -> dict:
    import onnx
    import onnxruntime as ort

    example = test_images(data, 2)
    torch.onnx.export(module.eval(), (example,), path, dynamo=True, external_data=False, verbose=False,
                      input_names=["images"], output_names=["logits"], dynamic_shapes=_batch_dim())
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    del proto.metadata_props[:]
    for key, value in (("nasgraph", json.dumps(meta)), ("classes", json.dumps(meta["classes"]))):
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    # Idle ORT threads spin by default: on a busy CPU that steals the cores from whatever runs next.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = test_images(data, CHECK_IMAGES)
    with torch.inference_mode():
        ref = module(x)
    got = torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])
    latency = {}
    for b in LATENCY_BATCHES:
        feed = {"images": test_images(data, b).numpy()}
        latency[str(b)] = median_ms(lambda feed=feed: session.run(["logits"], feed))
    return {"file": path.name, "bytes": path.stat().st_size, "opset": proto.opset_import[0].version,
            "max_abs_diff": float((got - ref).abs().max()),
            "same_class": float((got.argmax(1) == ref.argmax(1)).float().mean()),
            "checked_images": CHECK_IMAGES, "latency_ms": latency}


def warm_up(folder: Path) -> None:
    """Export a tiny model in both formats, once, in the warm parent before it forks an export: the
    exporters import hundreds of modules lazily, and a child that dropped to an unprivileged uid may
    not be able to read the installation to import them itself."""
    g = torch.Generator().manual_seed(0)
    data = TensorData("warm-up", torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8, generator=g),
                      torch.arange(8) % 2, torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8, generator=g),
                      torch.arange(4) % 2, 2, (0.5,), (0.25,))
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    export(model, data, 16, ["pytorch", "onnx"], folder, threads=1, extra_meta={})


def export(model: nn.Module, data: TensorData, side: int | None, formats: list[str], out_dir: Path, *,
           threads: int, extra_meta: dict) -> dict:
    """Write the requested formats into `out_dir`; returns what each produced plus eager PyTorch latency."""
    module = Deployed(model, data, side).eval()
    meta = _meta(data, extra_meta)
    out_dir.mkdir(exist_ok=True)
    result: dict[str, Any] = {"meta": meta, "formats": {}}
    result["pytorch_latency_ms"] = torch_latency(module, data)  # first: before any exporter ran here
    for fmt in formats:
        if fmt == "pytorch":
            result["formats"]["pytorch"] = export_pytorch(module, data, out_dir / "model.pt2", meta)
        elif fmt == "onnx":
            result["formats"]["onnx"] = export_onnx(module, data, out_dir / "model.onnx", meta, threads)
        else:
            raise ValueError(f"unknown export format {fmt!r}")
    return result
