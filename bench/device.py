"""The device check: the evaluator on this machine's accelerator, against a plain PyTorch loop on the
same device in the same run. Writes one JSON file; prints a summary and what it skipped.

Parts (each timed; the whole check is meant to finish in under 5 minutes on a GPU):
  correctness  a CUDA candidate and a CPU candidate both evaluate (a fork-unsafe warm parent failed both)
  models       tiny CNN, small ResNet and a ~2.4M-parameter ResNet, one epoch through the evaluator:
               wall per candidate, training seconds, images/s; the same model in a plain loop
  lemur_learn  a model that trains itself through LEMUR's learn(): it must keep its own fp32 numerics
  harness      the harness in this process, fp32 vs bf16 autocast (its `amp` switch), per model
  knobs        the plain loop with cudnn.benchmark on/off, fp32/bf16 autocast, channels-last on/off
  hostile      a 400 GiB allocation (ends `memory`), a spin holding 20 GiB (ends `timeout`, memory freed)
  at_once      K small CNNs with 1 worker against N workers per device: throughput ratio
On a machine without CUDA it runs the CPU parts (on `digits` unless --dataset says otherwise) and
lists the rest under "skipped".

Run: python -m bench.device [--out device.json] [--dataset fashion-mnist] [--workers 4] [--candidates 8]
It needs torch and nasgraph's few evaluator dependencies (pydantic, pydantic-settings, numpy), no
network: Fashion-MNIST is read from Debian's four .gz files in /usr/share/datasets/fashion-mnist.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.workers import MODEL as TINY_VARIANT  # small CNNs of a given width
from nasgraph.tools.evaluator import EvalRequest, Evaluator
from nasgraph.tools.evaluator.datasets import load_dataset
from nasgraph.tools.evaluator.harness import train_and_test
from nasgraph.tools.evaluator.reference_models import reference_source

RESNET = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.c1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(c_out)
        self.c2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(c_out)
        self.short = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + self.short(x))


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_shape[1], 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.body = nn.Sequential(Block(64, 64, 1), Block(64, 128, 2), Block(128, 256, 2), Block(256, 256, 1))
        self.fc = nn.Linear(256, out_shape[0])

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.body(self.stem(x)), 1), 1))
'''

HOSTILE_ALLOC = TINY_VARIANT.format(width=8).replace(
    "super().__init__()", "super().__init__()\n        import torch; self.big = torch.empty(400 * 2**30, dtype=torch.uint8, device='cuda')")
HOSTILE_SPIN = TINY_VARIANT.format(width=8).replace(
    "return self.body(x)", "import torch\n        hold = torch.empty(20 * 2**30, dtype=torch.uint8, device='cuda')\n"
                           "        while True:\n            hold.add_(1)")


def _exec_net(code: str, data, device: torch.device) -> nn.Module:
    ns: dict = {}
    exec(compile(code, "<bench>", "exec"), ns)  # noqa: S102 - the project's own reference code
    torch.manual_seed(0)
    c, h, w = data.train_x.shape[1:]
    return ns["Net"]((128, c, h, w), (data.classes,), {"lr": 0.05, "momentum": 0.9, "dropout": 0.0}, device)


def plain_loop(code: str, data, device: torch.device, *, benchmark: bool = False, bf16: bool = False,
               channels_last: bool = False, batch: int = 128) -> dict:
    """The usual loop: normalised float tensors already on the device, SGD, one epoch, then test."""
    torch.backends.cudnn.benchmark = benchmark
    model = _exec_net(code, data, device).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    x = ((data.train_x.float() / 255 - mean) / std).to(device).contiguous(memory_format=fmt)
    y = data.train_y.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    cast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else torch.autocast(device.type, enabled=False)
    gen = torch.Generator(device="cpu").manual_seed(0)
    perm = torch.randperm(len(y), generator=gen).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model.train()
    sync()
    t = time.perf_counter()
    for i in range(0, len(y) - batch + 1, batch):
        idx = perm[i:i + batch]
        with cast:
            loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync()
    train_s = time.perf_counter() - t
    model.eval()
    correct = 0
    with torch.no_grad(), cast:
        tx = ((data.test_x.float() / 255 - mean) / std).to(device).contiguous(memory_format=fmt)
        for i in range(0, len(tx), 1024):
            correct += (model(tx[i:i + 1024]).argmax(1).cpu() == data.test_y[i:i + 1024]).sum().item()
    images = (len(y) // batch) * batch
    return {"train_s": round(train_s, 3), "images_per_s": round(images / train_s, 1),
            "accuracy": round(correct / len(data.test_y), 4)}


def _req(code: str, dataset: str, device: str, **kw) -> EvalRequest:
    settings = dict(dataset=dataset, device=device, threads=4 if device == "cuda" else 2, batch_size=128,
                    augment=False, time_budget_s=60.0, setup_timeout_s=60.0, timeout_grace_s=10.0,
                    max_flops=10**12, max_params=10**9, memory_limit_mb=8192, prm={"lr": 0.05})
    return EvalRequest(code=code, **{**settings, **kw})


def _outcome(out, wall: float) -> dict:
    return {"status": out.status, "accuracy": out.accuracy, "params": out.params, "wall_s": round(wall, 3),
            "train_s": out.seconds.get("train"), "images_per_s": out.detail.get("images_per_s"),
            "error": out.error[-300:] if out.status != "ok" else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("device.json"))
    ap.add_argument("--dataset")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--candidates", type=int, default=8)
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    dataset = args.dataset or ("fashion-mnist" if cuda else "digits")
    report: dict = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                                "device": torch.cuda.get_device_name(0) if cuda else f"CPU, {os.cpu_count()} cores"},
                    "dataset": dataset, "skipped": []}
    start = time.perf_counter()

    def save() -> None:  # after every part: a check stopped at its time limit keeps what it measured
        report["seconds"] = round(time.perf_counter() - start, 1)
        args.out.write_text(json.dumps(report, indent=1))

    data_dir = Path(tempfile.mkdtemp(prefix="nasgraph-device-")) / "data"
    data = load_dataset(dataset, data_dir)
    device = torch.device(dev)
    models = {"tiny_cnn": reference_source("tiny_cnn"), "small_resnet": reference_source("small_resnet"),
              "resnet_2m": RESNET}
    if not cuda:
        del models["resnet_2m"]  # minutes per epoch on a few cores
        report["skipped"] += ["resnet_2m (CPU)", "harness fp32 vs bf16 (CUDA only)", "knobs (CUDA only)",
                              "hostile GPU cases (CUDA only)"]

    with Evaluator(data_dir, workers=1, policy=False) as ev:
        ev.evaluate(_req(models["tiny_cnn"], dataset, dev))  # warm: dataset cache, first fork, CUDA context
        report["correctness"] = {}
        for d in (["cuda", "cpu"] if cuda else ["cpu"]):
            t = time.perf_counter()
            report["correctness"][d] = _outcome(ev.evaluate(_req(models["tiny_cnn"], dataset, d)), time.perf_counter() - t)
        report["models"] = {}
        for name, code in models.items():
            t = time.perf_counter()
            out = _outcome(ev.evaluate(_req(code, dataset, dev)), time.perf_counter() - t)
            plain = plain_loop(code, data, device)
            out["plain"] = plain
            if out["train_s"]:
                out["train_vs_plain"] = round(out["train_s"] / plain["train_s"], 2)
            report["models"][name] = out
            save()
        t = time.perf_counter()
        report["lemur_learn"] = _outcome(ev.evaluate(_req(reference_source("lemur_hooks"), dataset, dev)),
                                         time.perf_counter() - t)
        save()
        if cuda:
            report["hostile"] = {}
            free_before = torch.cuda.mem_get_info()[0]
            t = time.perf_counter()
            report["hostile"]["alloc_400GiB"] = _outcome(ev.evaluate(_req(HOSTILE_ALLOC, dataset, dev)),
                                                         time.perf_counter() - t)
            t = time.perf_counter()
            report["hostile"]["spin_20GiB"] = _outcome(ev.evaluate(_req(HOSTILE_SPIN, dataset, dev, setup_timeout_s=15.0)),
                                                       time.perf_counter() - t)
            time.sleep(1.0)
            report["hostile"]["gpu_free_gib_before_after"] = [round(free_before / 2**30, 2),
                                                              round(torch.cuda.mem_get_info()[0] / 2**30, 2)]
            report["evaluator_restarts"] = ev.restarts
            save()

    if cuda:
        report["harness"] = {}
        for name in ("tiny_cnn", "small_resnet"):
            for amp in (False, True):
                res = train_and_test(_exec_net(models[name], data, device), data, {"lr": 0.05}, device=device,
                                     augment=False, amp=amp, time_budget_s=120.0)
                report["harness"][f"{name} amp={int(amp)}"] = {
                    "train_s": round(res.train_seconds, 3), "images_per_s": round(res.images_per_s, 1),
                    "accuracy": round(res.accuracy, 4)}
                save()

    codes = [TINY_VARIANT.format(width=8 + 2 * i) for i in range(args.candidates)]
    many = args.workers if cuda else max(1, (os.cpu_count() or 1) // 2)
    report["at_once"] = {}
    for workers in sorted({1, many}):
        threads = 4 if cuda else max(1, (os.cpu_count() or 1) // workers)
        with Evaluator(data_dir, workers=workers, policy=False) as ev:
            for f in [ev.submit(_req(codes[0], dataset, dev, threads=threads)) for _ in range(workers)]:
                f.result()  # every warm parent warm
            t = time.perf_counter()
            outs = [f.result() for f in [ev.submit(_req(c, dataset, dev, threads=threads)) for c in codes]]
            wall = time.perf_counter() - t
        report["at_once"][f"{workers}_workers"] = {
            "wall_s": round(wall, 2), "candidates_per_hour": round(3600 * len(codes) / wall, 1),
            "statuses": [o.status for o in outs]}
        save()
    if many > 1:
        one, n = report["at_once"]["1_workers"]["wall_s"], report["at_once"][f"{many}_workers"]["wall_s"]
        report["at_once"]["throughput_ratio"] = round(one / n, 2)
    if cuda:  # last: the longest part, and the one the harness's defaults already came from
        report["knobs"] = {}
        for name in ("tiny_cnn", "small_resnet"):
            for bench in (False, True):
                for bf16 in (False, True):
                    for cl in (False, True):
                        key = f"{name} benchmark={int(bench)} bf16={int(bf16)} channels_last={int(cl)}"
                        report["knobs"][key] = plain_loop(models[name], data, device, benchmark=bench, bf16=bf16,
                                                          channels_last=cl)
                        save()
    save()
    print(json.dumps(report, indent=1))
    print(f"\n{report['machine']['device']}: wrote {args.out} in {report['seconds']} s; skipped: "
          f"{', '.join(report['skipped']) or 'nothing'}")


if __name__ == "__main__":
    main()
