"""Build (or incrementally refresh) the block index: discover targets, close them, validate, embed, store.

Targets are the `nn.Module` classes defined in torchvision.models and torchvision.ops (timm.models
and timm.layers too when timm is installed), plus the classes of the store's best designs and, when
asked for, of the LEMUR corpus's best image classifiers on one dataset (`lemur_targets`). A block
whose closed text hashes as before (`source_hash`, which also covers the extractor and validator
versions) keeps its stored validation and embedding; only new or changed blocks are validated and
embedded. Entries of a scanned source that are no longer targets are removed.
"""
from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import inspect
import pkgutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .extract import EXTRACT_VERSION, Block, ClosureError, Target, close
from .index import BlockIndex
from .present import VERSION as PRESENT_VERSION
from .present import describe, present
from .validate import Job, Validation, Validator

VALIDATION_VERSION = "2"
LEMUR_DATASET = "cifar-10"          # LEMUR's best-covered dataset: 5,724 models with a recorded accuracy
IMAGE_TASK = "img-classification"   # LEMUR's task name; its other tasks' models do not fit the contract
LIBRARY_PACKAGES = {"torchvision": ("torchvision.models", "torchvision.ops"), "timm": ("timm.models", "timm.layers")}
Progress = Callable[[str, int, int, str], None]   # (stage, done, total, id)


@dataclass
class BuildReport:
    index: str
    targets: int = 0
    blocks: int = 0                  # targets whose closure was built
    executable: int = 0
    instantiable: int = 0
    forward_checked: int = 0
    torch_only: int = 0
    prompt_ready: int = 0            # what the retriever may show the generator
    validated_now: int = 0
    reused: int = 0
    removed: int = 0
    failures_by_kind: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)       # [{id, kind, error}]
    not_instantiated: dict = field(default_factory=dict)
    discovery_errors: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return round(self.executable / self.targets, 4) if self.targets else 0.0

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["rate"] = self.rate
        return d


# ---------------------------------------------------------------- targets

def _kind(module: str, cls: type) -> str:
    if ".ops" in module or module.startswith("timm.layers"):
        return "op"
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return "block"
    return "model" if "num_classes" in params else "block"


def library_targets(source: str, packages: tuple[str, ...]) -> tuple[list[Target], list[str]]:
    """Every top-level nn.Module class defined in the packages' modules; also the modules that failed to import."""
    import torch.nn as nn

    modules, errors = [], []
    for pkg in packages:
        try:
            root = importlib.import_module(pkg)
        except Exception as e:  # noqa: BLE001 - a broken package is reported, not fatal
            errors.append(f"{pkg}: {type(e).__name__}: {e}")
            continue
        modules.append(root)
        for info in pkgutil.walk_packages(root.__path__, pkg + "."):
            try:
                modules.append(importlib.import_module(info.name))
            except Exception as e:  # noqa: BLE001
                errors.append(f"{info.name}: {type(e).__name__}: {e}"[:300])
    found: dict[str, Target] = {}
    for mod in modules:
        for name, obj in vars(mod).items():
            if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__ == mod.__name__ \
                    and obj.__qualname__ == name:
                t = Target(mod.__name__, name, source, _kind(mod.__name__, obj))
                found[t.qualname] = t
    return [found[k] for k in sorted(found)], errors


def _module_classes(tree: ast.Module) -> list[str]:
    return [node.name for node in tree.body
            if isinstance(node, ast.ClassDef) and any("Module" in ast.unparse(b) for b in node.bases)]


def store_targets(store_path: Path, dataset: str, k: int) -> list[Target]:
    """The nn.Module classes of the store's k best designs on `dataset` (Net and its helper blocks)."""
    from nasgraph.tools.store import Store

    if not Path(store_path).exists():
        return []
    targets = []
    with Store(store_path) as store:
        for rec in store.best(dataset, k=k):
            code = store.code(rec.arch_id)
            try:
                tree = ast.parse(code)
            except SyntaxError:
                continue
            module = f"store.{rec.arch_id}"
            hint = {"dataset": dataset, "accuracy": rec.accuracy, "arch_id": rec.arch_id}
            for name in _module_classes(tree):
                targets.append(Target(module, name, "store", "design" if name == "Net" else "block",
                                      text=code, hint=hint))
    return targets


def lemur_targets(root: Path, dataset: str, k: int) -> list[Target]:
    """The nn.Module classes of the k LEMUR image classifiers with the best recorded accuracy on
    `dataset` (one per model, best first), each hinted with its model name and that accuracy.

    A model's `Net` is always a target, even when its file does not parse or defines no `Net`:
    the build then reports it as an extraction failure, rather than the model silently dropping
    out of the top k. Raises `LemurNotPulled` when there is no LEMUR index under `root`."""
    from nasgraph.tools.lemur import SeriesSummary, list_models, show

    best: dict[str, SeriesSummary] = {}
    for row in list_models(root, dataset=dataset, limit=None):  # best first, one row per model and task
        if row.series is not None and row.series.task == IMAGE_TASK and row.name not in best:
            best[row.name] = row.series
            if len(best) == k:
                break
    targets = []
    for name, series in best.items():
        code = show(root, name).code
        hint = {"dataset": series.dataset, "accuracy": series.best, "lemur_model": name}
        try:
            classes = _module_classes(ast.parse(code))
        except SyntaxError:
            classes = []
        for cls in classes if "Net" in classes else ["Net", *classes]:
            targets.append(Target(f"lemur.{name}", cls, "lemur", "model" if cls == "Net" else "block",
                                  text=code, hint=hint))
    return targets


def default_targets(cfg, *, with_store: bool = True, dataset: str | None = None, store_k: int = 20,
                    lemur_k: int = 0, lemur_dataset: str | None = None) -> tuple[list[Target], list[str]]:
    """Library targets, the store's best designs and (with `lemur_k` > 0) LEMUR's best models."""
    from nasgraph.tools.lemur import lemur_dir

    # First: a missing LEMUR index or an unknown dataset is refused before the slow library scan.
    lemur = lemur_targets(lemur_dir(cfg.home), lemur_dataset or LEMUR_DATASET, lemur_k) if lemur_k > 0 else []
    targets, errors = [], []
    for source, packages in LIBRARY_PACKAGES.items():
        if importlib.util.find_spec(source) is None:
            continue  # timm is optional
        found, errs = library_targets(source, packages)
        targets += found
        errors += errs
    if with_store:
        targets += store_targets(cfg.store_path, dataset or cfg.loop.dataset, store_k)
    return targets + lemur, errors


# ---------------------------------------------------------------- one build

def _key(block: Block) -> str:
    versions = f"{EXTRACT_VERSION}/{VALIDATION_VERSION}/{PRESENT_VERSION}"
    return hashlib.sha256(f"{versions}\n{block.code}".encode()).hexdigest()[:20]


def _design_line(code: str) -> str:
    for line in code.splitlines()[:5]:
        if line.strip().lower().startswith("# design:"):
            return line.strip()[2:].strip()
    return ""


def prompt_imports_ok(shown: str) -> bool:
    """The generator is told to import only torch and math; a block shown to it must need no more."""
    for node in ast.parse(shown).body:
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mods = [node.module or ""]
        else:
            continue
        if any(m.split(".")[0] not in ("torch", "math") for m in mods):
            return False
    return True


def _metadata(block: Block, v: Validation, shown: str) -> dict:
    from nasgraph.tools.evaluator.policy import static_check

    t = block.target
    prompt_ready = bool(v.executed and v.instantiable and v.presented_ok and block.torch_only
                        and prompt_imports_ok(shown) and static_check(shown) is None)
    meta = {"source": t.source, "module": t.module, "name": t.name, "qualname": t.qualname, "kind": t.kind,
            "validated": v.executed, "instantiable": v.instantiable, "forward_checked": v.forward_checked,
            "params": v.params if v.params is not None else -1, "init_args": v.init_args,
            "input_shape": v.input_shape, "input_rank": len(v.input_shape or ()), "output_shape": v.output_shape,
            "failure": v.failure or "",
            "error": v.error, "note": v.note, "torch_only": block.torch_only, "prompt_ready": prompt_ready,
            "presented_ok": v.presented_ok, "chars": len(shown), "imports": ",".join(block.imports),
            "source_hash": _key(block), "seconds": v.seconds}
    for k in ("arch_id", "lemur_model", "accuracy", "dataset"):  # where a store or LEMUR block came from
        if k in t.hint:
            meta[k] = t.hint[k]
    return meta


def build(index: BlockIndex, targets: list[Target], *, timeout_s: float = 60.0, memory_mb: int = 2048,
          force: bool = False, prune: bool = True, progress: Progress | None = None) -> BuildReport:
    """Index `targets`; with `prune`, entries of the same sources that are no longer targets are removed."""
    t0 = time.perf_counter()
    report = BuildReport(index=str(index.path), targets=len(targets))
    blocks: list[Block] = []
    failures: list[dict] = []
    for t in targets:
        try:
            blocks.append(close(t))
        except ClosureError as e:
            failures.append({"id": t.qualname, "kind": f"extract_{e.kind}", "error": str(e)[:300]})
    report.blocks = len(blocks)
    t_extract = time.perf_counter()

    known = index.metadata()
    fresh = [b for b in blocks if force or known.get(b.id, {}).get("source_hash") != _key(b)]
    shown = {b.id: present(b.code) for b in blocks}
    results: dict[str, Validation] = {}
    if fresh:
        jobs = [Job(b.id, b.code, b.target.name, dict(b.target.hint), shown[b.id]) for b in fresh]
        done = 0

        def tick(job: Job, _v: Validation) -> None:
            nonlocal done
            done += 1
            if progress:
                progress("validate", done, len(jobs), job.id)

        with Validator(timeout_s=timeout_s, memory_mb=memory_mb) as validator:
            results = validator.validate(jobs, tick)
    t_validate = time.perf_counter()

    metas = {}
    for b in blocks:
        if b.id in results:
            metas[b.id] = _metadata(b, results[b.id], shown[b.id])
        else:
            metas[b.id] = known[b.id]
    if progress and fresh:
        progress("embed", 0, len(fresh), "")
    index.upsert([b.id for b in fresh], [b.code for b in fresh],
                 [describe(b.target.name, b.target.module, b.code, _design_line(b.code)) for b in fresh],
                 [metas[b.id] for b in fresh])
    scanned = {t.source for t in targets}
    current = {t.qualname for t in targets}
    stale = [i for i, m in known.items() if prune and m.get("source") in scanned and i not in current]
    index.delete(stale)
    t_embed = time.perf_counter()

    for b in blocks:
        m = metas[b.id]
        if m.get("validated"):
            report.executable += 1
        else:
            failures.append({"id": b.id, "kind": m.get("failure") or "not_executable", "error": m.get("error", "")})
        report.instantiable += bool(m.get("instantiable"))
        report.forward_checked += bool(m.get("forward_checked"))
        report.torch_only += bool(m.get("torch_only"))
        report.prompt_ready += bool(m.get("prompt_ready"))
        if m.get("validated") and not m.get("instantiable"):
            report.not_instantiated[b.id] = m.get("error", "")
    report.validated_now, report.reused, report.removed = len(fresh), len(blocks) - len(fresh), len(stale)
    report.failures = failures
    report.failures_by_kind = dict(Counter(f["kind"] for f in failures))
    report.seconds = {"extract": round(t_extract - t0, 2), "validate": round(t_validate - t_extract, 2),
                      "embed": round(t_embed - t_validate, 2), "total": round(t_embed - t0, 2)}
    return report


def stats(index: BlockIndex) -> dict:
    metas = list(index.metadata().values())

    def count(flag: str) -> int:
        return sum(bool(m.get(flag)) for m in metas)

    return {"index": str(index.path), "blocks": len(metas), "executable": count("validated"),
            "instantiable": count("instantiable"), "forward_checked": count("forward_checked"),
            "torch_only": count("torch_only"), "prompt_ready": count("prompt_ready"),
            "by_source": dict(Counter(m.get("source", "?") for m in metas)),
            "by_kind": dict(Counter(m.get("kind", "?") for m in metas)),
            "failures_by_kind": dict(Counter(m["failure"] for m in metas if m.get("failure")))}
