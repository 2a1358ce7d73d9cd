"""What runs on one block inside the sandboxed child: execute it, instantiate its class, run a forward pass.

Constructor arguments the class requires are inferred from their names and annotations (channels,
heads, kernel size, a block class named in a `Type[...]` annotation, ...), trying a few widths; the
input shape is inferred from the first layer that fixes one (a Conv2d's in_channels, a Linear's
in_features, a LayerNorm's width). A block passes as *executable* when its text runs on its own and
defines the class; instantiation and the forward pass are recorded as flags, not required.
"""
from __future__ import annotations

import inspect
import re
import sys
import time
import traceback
import types
from typing import Any, Callable

import torch
import torch.nn as nn

FILENAME = "<block>"
WIDTHS = (16, 32, 64)
LEMUR_ARGS = ("in_shape", "out_shape", "prm", "device")
LEMUR_SHAPES = ((2, 1, 28, 28), (2, 3, 32, 32), (2, 1, 8, 8), (2, 3, 64, 64))
ERROR_CHARS = 400

# (pattern on the lower-cased parameter name, value for a given width); the first match wins.
_BY_NAME: list[tuple[str, Callable[[int], Any]]] = [
    (r"num_classes|classes", lambda w: 10),
    (r"heads|nhead", lambda w: 4 if w < 64 else 8),
    (r"kernel", lambda w: 3),
    (r"stride", lambda w: 1),
    (r"padding", lambda w: 1),
    (r"dilation", lambda w: 1),
    (r"groups", lambda w: 1),
    (r"patch", lambda w: 4),
    (r"(image|img|input)_?size|resolution", lambda w: 32),
    (r"output_size", lambda w: 2),
    (r"spatial_scale", lambda w: 1.0),
    (r"sampling_ratio", lambda w: 2),
    (r"block_size", lambda w: 3),
    (r"expan", lambda w: 2),
    (r"^mode$", lambda w: "row"),
    (r"mlp_dim|ffn|feedforward", lambda w: 2 * w),
    (r"growth", lambda w: w),
    (r"num_layers|depth$|^n_?layers", lambda w: 1),
    (r"^p$|prob|drop|rate|eps|scale", lambda w: 0.1),
    (r"channels|planes|features|dim|width|hidden|embed|d_model|^inp$|^oup$|^c(_?in|_?out)?$|in_ch|out_ch|size$",
     lambda w: w),
]


def _short(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == FILENAME]
    where = f" (block line {frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}"[:ERROR_CHARS] + where


def _block_classes(annotation: str, ns: dict) -> list[type]:
    """Classes of the block named in a parameter's annotation (`Type[BasicBlock]`, `List[StageConfig]`)."""
    found = []
    for word in re.findall(r"[A-Za-z_]\w*", annotation):
        obj = ns.get(word)
        if isinstance(obj, type) and obj.__module__ == ns.get("__name__"):
            found.append(obj)
    return found


def _config(cls: type, width: int, ns: dict) -> Any:
    """An instance of a block's own non-Module class (a config record), its arguments guessed in turn."""
    try:
        return cls(**{p.name: _guess(p, width, ns, nested=True) for p in _required(cls)})
    except Exception:  # noqa: BLE001 - then the constructor gets a plain guess and may fail on it
        return None


def _guess(param: inspect.Parameter, width: int, ns: dict, nested: bool = False) -> Any:
    name = param.name.lower()
    ann = param.annotation if isinstance(param.annotation, str) else inspect.formatannotation(param.annotation)
    classes = _block_classes(ann, ns)
    modules = [c for c in classes if issubclass(c, nn.Module)]
    if modules and ("Type[" in ann or "type[" in ann or "Callable" in ann or name == "block"):
        return modules[0]
    records = [c for c in classes if not issubclass(c, nn.Module)]
    if records and not nested:
        value = _config(records[0], width, ns)
        if value is not None:
            return [value] if re.match(r"(List|list|Sequence)\[", ann) else value
    factory = "Callable" in ann or "Type" in ann or "type[" in ann or ann == "inspect._empty"
    if re.search(r"norm", name):
        return nn.BatchNorm2d if factory else nn.Identity()
    if "activation" in name or name in ("act", "act_layer"):
        return nn.ReLU if factory else nn.Identity()
    if name in ("window_size", "shift_size"):
        return [4, 4] if name == "window_size" else [2, 2]
    if re.search(r"List\[int\]|list\[int\]|Sequence\[int\]", ann) or name in ("layers", "depths", "blocks"):
        return [1, 1, 1, 1]
    for pattern, value in _BY_NAME:
        if re.search(pattern, name):
            return value(width)
    if ann in ("float", "<class 'float'>"):
        return 0.1
    if ann in ("bool", "<class 'bool'>"):
        return False
    if "Module" in ann:
        return nn.Identity()
    return width


def _init_params(cls: type) -> list[inspect.Parameter]:
    """The constructor's parameters; a subclass that only passes `*args, **kwargs` on shows its base's."""
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is nn.Module:
            continue
        try:
            params = list(inspect.signature(vars(klass)["__init__"]).parameters.values())[1:]
        except (TypeError, ValueError):
            return []
        if any(p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
            return params
    return []


def _required(cls: type) -> list[inspect.Parameter]:
    return [p for p in _init_params(cls)
            if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


_MISSING = re.compile(r"missing \d+ required (?:positional|keyword-only) arguments?: (.*)")


def _missing_args(exc: BaseException) -> list[str]:
    """Names a TypeError says are missing (a constructor that forwards **kwargs to a layer that needs them)."""
    m = _MISSING.search(str(exc)) if isinstance(exc, TypeError) else None
    return re.findall(r"'(\w+)'", m.group(1)) if m else []


def instantiate(cls: type, ns: dict, hint: dict) -> tuple[nn.Module | None, dict, BaseException | None]:
    """Try the candidate argument sets, each completed by up to 3 rounds of the arguments an error names."""
    last: BaseException | None = None
    for kwargs in candidate_kwargs(cls, ns, hint):
        for _ in range(4):
            try:
                return cls(**kwargs), kwargs, None
            except BaseException as e:  # noqa: BLE001
                last = e
                missing = [n for n in _missing_args(e) if n not in kwargs]
                if not missing:
                    break
                width = next((v for v in kwargs.values() if isinstance(v, int) and v in WIDTHS), WIDTHS[0])
                kwargs = {**kwargs, **{n: _guess(inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY), width, ns)
                                       for n in missing}}
    return None, {}, last


def candidate_kwargs(cls: type, ns: dict, hint: dict) -> list[dict]:
    """Argument sets to try, most plausible first (an empty set when nothing is required)."""
    required = _required(cls)
    names = tuple(p.name for p in required)
    if names == LEMUR_ARGS:  # the project's own model contract
        shapes = [tuple(hint["in_shape"])] if hint.get("in_shape") else list(LEMUR_SHAPES)
        classes = int(hint.get("classes", 10))
        return [{"in_shape": s, "out_shape": (classes,), "prm": {}, "device": "cpu"} for s in shapes]
    if not required:
        return [{}]
    return [{p.name: _guess(p, w, ns) for p in required} for w in WIDTHS]


def candidate_inputs(model: nn.Module, kwargs: dict, hint: dict) -> list[tuple[int, ...]]:
    """Input shapes to try, from the hint, the LEMUR in_shape, or the first layer that fixes a width."""
    shapes: list[tuple[int, ...]] = []
    if hint.get("input_shape"):
        shapes.append(tuple(hint["input_shape"]))
    if "in_shape" in kwargs:
        shapes.append(tuple(kwargs["in_shape"]))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            c = m.in_channels
            shapes += [(2, c, 32, 32), (2, c, 64, 64), (1, c, 224, 224)]
        elif isinstance(m, nn.Conv3d):
            shapes += [(1, m.in_channels, 4, 32, 32), (1, m.in_channels, 8, 64, 64)]
        elif isinstance(m, nn.Conv1d):
            shapes += [(2, m.in_channels, 32)]
        elif isinstance(m, nn.Linear):
            f = m.in_features
            shapes += [(2, f), (2, 8, f), (2, 4, 4, f)]
        elif isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1:
            d = m.normalized_shape[0]
            shapes += [(2, 8, d), (2, 4, 4, d), (2, d)]
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)):
            c = m.num_features if hasattr(m, "num_features") else m.num_channels
            shapes += [(2, c, 16, 16)]
        elif isinstance(m, nn.BatchNorm1d):
            shapes += [(2, m.num_features), (2, m.num_features, 8)]
        elif isinstance(m, nn.MultiheadAttention):
            shapes += [(2, 8, m.embed_dim)]
        else:
            continue
        break
    width = next((v for k, v in kwargs.items() if isinstance(v, int) and not isinstance(v, bool)
                  and re.search(r"channels|planes|features|dim|width|^inp$", k.lower())), 16)
    shapes += [(2, width, 16, 16), (2, width), (2, 8, width), (2, 3, 32, 32)]
    seen: set[tuple[int, ...]] = set()
    return [s for s in shapes if not (s in seen or seen.add(s))][:8]


def _shapes(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return list(out.shape)
    if isinstance(out, (list, tuple)):
        return [_shapes(o) for o in out][:8]
    if isinstance(out, dict):
        return {str(k): _shapes(v) for k, v in list(out.items())[:8]}
    return type(out).__name__


def _has_tensor(out: Any) -> bool:
    if isinstance(out, torch.Tensor):
        return True
    if isinstance(out, (list, tuple)):
        return any(_has_tensor(o) for o in out)
    if isinstance(out, dict):
        return any(_has_tensor(o) for o in out.values())
    return False


def _positional_inputs(model: nn.Module) -> int:
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return 1
    return sum(1 for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def check(code: str, name: str, hint: dict | None = None, presented: str | None = None) -> dict:
    """Run the checks on one block; every outcome is a dict (never raises).

    `presented` is the compact text shown to the generator: it must do what the block did (execute,
    instantiate with the same arguments, run the same forward pass) to count as `presented_ok`."""
    hint = hint or {}
    r: dict[str, Any] = {"executed": False, "instantiable": False, "forward_checked": False, "params": None,
                         "init_args": None, "input_shape": None, "output_shape": None, "failure": None,
                         "error": "", "note": "", "presented_ok": False, "seconds": 0.0}
    t0 = time.perf_counter()
    try:
        kwargs = _check(code, name, hint, r)
        if presented is not None and r["executed"]:
            _check_presented(presented, name, kwargs, r)
        return r
    finally:
        r["seconds"] = round(time.perf_counter() - t0, 3)


def _check_presented(text: str, name: str, kwargs: dict | None, r: dict) -> None:
    ns = _namespace("rag_presented")
    try:
        exec(compile(text, FILENAME, "exec"), ns)  # noqa: S102
        cls = ns[name]
        if r["instantiable"] and kwargs is not None:
            model = cls(**_rebind(kwargs, ns))
            if r["forward_checked"]:
                model.eval()
                with torch.no_grad():
                    model(torch.randn(*r["input_shape"]))
        r["presented_ok"] = True
    except BaseException as e:  # noqa: BLE001
        r["presented_error"] = _short(e)


def _rebind(kwargs: dict, ns: dict) -> dict:
    """The same arguments, with the block's own classes taken from the presented text's namespace."""
    return {k: ns.get(v.__name__, v) if isinstance(v, type) and v.__module__ == "rag_block" else v
            for k, v in kwargs.items()}


def _namespace(name: str) -> dict:
    """A fresh module registered in sys.modules, as a script's would be: dataclasses and pickling look it up."""
    mod = types.ModuleType(name)
    sys.modules[name] = mod
    return mod.__dict__


def _check(code: str, name: str, hint: dict, r: dict) -> dict | None:
    """Fill `r`; return the constructor arguments that worked (None if none did)."""
    ns = _namespace("rag_block")
    try:
        exec(compile(code, FILENAME, "exec"), ns)  # noqa: S102 - this child exists to run it
    except BaseException as e:  # noqa: BLE001 - every failure of the block is a result
        r.update(failure="exec_error", error=_short(e))
        return None
    cls = ns.get(name)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        r.update(failure="no_class", error=f"the block defines no nn.Module class {name}")
        return None
    r["executed"] = True
    torch.manual_seed(0)
    model, kwargs, last = instantiate(cls, ns, hint)
    if model is not None:
        r["init_args"] = {k: _describe(v) for k, v in kwargs.items()}
    else:
        r.update(note="init_error", error=_short(last) if last else "")
        return None
    r["instantiable"] = True
    r["params"] = int(sum(p.numel() for p in model.parameters()))
    inputs = _positional_inputs(model)
    if inputs != 1:
        r["note"] = f"forward takes {inputs} inputs: not run"
        return kwargs
    model.eval()
    for shape in candidate_inputs(model, kwargs, hint):
        try:
            with torch.no_grad():
                out = model(torch.randn(*shape))
        except BaseException as e:  # noqa: BLE001
            last = e
            continue
        if _has_tensor(out):
            r.update(forward_checked=True, input_shape=list(shape), output_shape=_shapes(out))
            return kwargs
    r.update(note="forward_error", error=_short(last) if last else "")
    return kwargs


def _describe(v: Any) -> Any:
    if isinstance(v, type):
        return v.__name__
    if isinstance(v, nn.Module):
        return f"{type(v).__name__}()"
    return v if isinstance(v, (int, float, str, bool, list, tuple, dict)) else repr(v)[:60]
