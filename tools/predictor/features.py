"""Static features of a model file, read with `ast`: what the predictor knows about the code.

Nothing is imported or run (the corpus is untrusted code). Every number comes from the source text:
constructor calls of torch.nn layers, the literal arguments they are given (after folding simple
arithmetic and names bound to integers earlier in the same function), what `forward` does with
tensors (adds, concatenations), and the training recipe in `train_setup`/`learn` (optimizer, clipping,
label smoothing, schedulers). A value the source does not state is 0, never a guess.
"""
from __future__ import annotations

import ast
import math
import warnings
from dataclasses import dataclass, field

from nasgraph.tools.lemur.parse import analyse

# Bump when a feature is added, removed or computed differently: cached tables and saved predictors
# built with another version are rebuilt.
FEATURE_VERSION = 1

# torch.nn layer type -> the group it is counted in (types outside every group count only in the totals).
_GROUPS: dict[str, tuple[str, ...]] = {
    "conv": ("Conv1d", "Conv2d", "Conv3d", "LazyConv1d", "LazyConv2d", "LazyConv3d", "Conv2dNormActivation"),
    "conv_transpose": ("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"),
    "linear": ("Linear", "LazyLinear", "Bilinear"),
    "batchnorm": ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "LazyBatchNorm2d"),
    "other_norm": ("LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
                   "LocalResponseNorm", "RMSNorm"),
    "dropout": ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout",
                "StochasticDepth"),
    "maxpool": ("MaxPool1d", "MaxPool2d", "MaxPool3d"),
    "avgpool": ("AvgPool1d", "AvgPool2d", "AvgPool3d"),
    "adaptive_pool": ("AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AdaptiveMaxPool1d",
                      "AdaptiveMaxPool2d", "AdaptiveMaxPool3d"),
    "attention": ("MultiheadAttention", "Transformer", "TransformerEncoder", "TransformerEncoderLayer",
                  "TransformerDecoder", "TransformerDecoderLayer"),
    "recurrent": ("RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"),
    "act_relu": ("ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU"),
    "act_smooth": ("GELU", "SiLU", "Mish", "Hardswish", "Softplus"),
    "act_gate": ("Sigmoid", "Tanh", "Hardsigmoid", "Softmax", "LogSoftmax"),
    "container": ("Sequential", "ModuleList", "ModuleDict"),
    "identity": ("Identity",),
    "parameter": ("Parameter",),
}
_GROUP_OF = {layer: g for g, layers in _GROUPS.items() for layer in layers}
# Loss classes are torch.nn types too, but they say nothing about the network's shape.
_LOSSES = {"CrossEntropyLoss", "NLLLoss", "MSELoss", "BCEWithLogitsLoss", "BCELoss", "KLDivLoss", "L1Loss",
           "SmoothL1Loss", "HuberLoss"}
_OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "NAdam", "RAdam", "Adamax", "LBFGS")
_INIT_PREFIXES = ("kaiming_", "xavier_", "orthogonal_", "trunc_normal_", "normal_", "uniform_")
# A literal larger than this is no width or count (a seed, a threshold such as 80_000_000).
_MAX_WIDTH = 1 << 16

NUMERIC: tuple[str, ...] = (
    *(f"n_{g}" for g in _GROUPS), "n_layers", "n_layer_types",
    # Literal constructor arguments.
    "conv_out_max", "conv_out_mean", "conv_out_sum", "conv_kernel_max", "conv_kernel_mean", "conv_strided",
    "conv_grouped", "conv_literal_share", "first_conv_kernel", "first_conv_stride", "first_conv_out",
    "downsample_log2",  # log2 of the product of the literal strides of convs and pools, in source order
    "pool_kernel_max", "adaptive_out_max", "linear_out_max", "linear_in_max", "dropout_p_max",
    "params_log10",  # log10(1 + weights of the convs and linears whose sizes are literal)
    # Structure of the file.
    "n_lines", "n_nodes", "n_classes", "n_functions", "n_loops", "range_max", "n_comprehensions",
    # What forward() does with tensors.
    "fwd_adds", "fwd_muls", "fwd_cats", "fwd_functional", "fwd_lines",
    # The training recipe.
    "clip_grad", "label_smoothing", "weight_decay", "nesterov", "scheduler", "amp", "n_init",
    "n_hyperparameters", "uses_dropout_hp",
)
CATEGORICAL: tuple[str, ...] = ("kind", "optimizer")
# The features by what they describe: correlated columns are shuffled together to measure what a
# kind of evidence adds (one of two redundant columns, shuffled alone, looks useless).
GROUPS: dict[str, tuple[str, ...]] = {
    "layer counts": (*(f"n_{g}" for g in _GROUPS), "n_layers", "n_layer_types", "kind"),
    "widths and kernels": tuple(n for n in NUMERIC if n.startswith(("conv_", "first_conv_", "linear_")))
    + ("downsample_log2", "pool_kernel_max", "adaptive_out_max", "dropout_p_max", "params_log10"),
    "file structure": ("n_lines", "n_nodes", "n_classes", "n_functions", "n_loops", "range_max", "n_comprehensions"),
    "forward ops": tuple(n for n in NUMERIC if n.startswith("fwd_")),
    "training recipe": ("clip_grad", "label_smoothing", "weight_decay", "nesterov", "scheduler", "amp", "n_init",
                        "n_hyperparameters", "uses_dropout_hp", "optimizer"),
}


@dataclass(frozen=True)
class CodeFeatures:
    """The numbers named in NUMERIC (every one present) and the categories named in CATEGORICAL."""
    numeric: dict[str, float]
    categorical: dict[str, str]
    parse_error: str | None = None


@dataclass
class _Acc:
    """What the walk over one file collects."""
    conv_out: list[float] = field(default_factory=list)
    conv_kernel: list[float] = field(default_factory=list)
    conv_calls: int = 0
    conv_strided: int = 0
    conv_grouped: int = 0
    first_conv: tuple[float, float, float] | None = None  # kernel, stride, out channels (0: not literal)
    downsample_log2: float = 0.0
    pool_kernel: list[float] = field(default_factory=list)
    adaptive_out: list[float] = field(default_factory=list)
    linear_out: list[float] = field(default_factory=list)
    linear_in: list[float] = field(default_factory=list)
    dropout_p: list[float] = field(default_factory=list)
    params: float = 0.0
    ranges: list[float] = field(default_factory=list)
    fwd_adds: int = 0
    fwd_muls: int = 0
    fwd_cats: int = 0
    fwd_functional: int = 0
    fwd_lines: int = 0
    clip_grad: float = 0.0
    label_smoothing: float = 0.0
    weight_decay: float = 0.0
    nesterov: int = 0
    scheduler: int = 0
    amp: int = 0
    n_init: int = 0
    optimizer: str = "none"


def _last_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else None


def _dotted(func: ast.expr) -> str:
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


class _Walker(ast.NodeVisitor):
    """Visits statements in source order, so `c = 96; nn.Conv2d(c, ...)` reads 96 for `c`."""

    def __init__(self) -> None:
        self.acc = _Acc()
        self.env: dict[str, float] = {}
        self.in_forward = 0

    # -- integers the source states -------------------------------------------------------------
    def value(self, node: ast.expr | None) -> float | None:
        """The number `node` stands for, if it is a literal, a name bound to one, or arithmetic of those."""
        if node is None:
            return None
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.Name):
            return self.env.get(node.id)
        if isinstance(node, ast.Tuple | ast.List) and node.elts:
            values = [self.value(e) for e in node.elts]
            return max(values) if all(v is not None for v in values) else None  # a (3, 3) kernel reads 3
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            v = self.value(node.operand)
            return None if v is None else -v
        if isinstance(node, ast.BinOp):
            a, b = self.value(node.left), self.value(node.right)
            if a is None or b is None:
                return None
            try:
                if isinstance(node.op, ast.Add):
                    return a + b
                if isinstance(node.op, ast.Sub):
                    return a - b
                if isinstance(node.op, ast.Mult):
                    return a * b
                if isinstance(node.op, ast.FloorDiv) and b:
                    return float(a // b)
                if isinstance(node.op, ast.Div) and b:
                    return a / b
                if isinstance(node.op, ast.Pow) and abs(b) <= 16:
                    return float(a ** b)
            except (OverflowError, ValueError):
                return None
        return None

    def _bind(self, target: ast.expr, value: ast.expr) -> None:
        if isinstance(target, ast.Name):
            v = self.value(value)
            if v is None:
                self.env.pop(target.id, None)
            else:
                self.env[target.id] = v
        elif isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts):
            for t, v in zip(target.elts, value.elts):
                self._bind(t, v)

    # -- statements -----------------------------------------------------------------------------
    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for t in node.targets:
            self._bind(t, node.value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            self._bind(node.target, node.value)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if self.in_forward and isinstance(node.op, ast.Add) and not isinstance(node.value, ast.Constant):
            self.acc.fwd_adds += 1  # x += shortcut(x)
        self.generic_visit(node)
        if isinstance(node.target, ast.Name):
            self.env.pop(node.target.id, None)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        outer = self.env
        self.env = dict(outer)  # a function sees module-level names, and its own stay inside it
        forward = node.name.startswith("forward")
        if forward:
            self.in_forward += 1
            end = getattr(node, "end_lineno", None) or node.lineno
            self.acc.fwd_lines += end - node.lineno + 1
        self.generic_visit(node)
        if forward:
            self.in_forward -= 1
        self.env = outer

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if self.in_forward and not isinstance(node.left, ast.Constant) and not isinstance(node.right, ast.Constant):
            if isinstance(node.op, ast.Add):
                self.acc.fwd_adds += 1
            elif isinstance(node.op, ast.Mult):
                self.acc.fwd_muls += 1
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = _last_name(node.func)
        if name is not None:
            self._call(name, _dotted(node.func), node)
        self.generic_visit(node)

    # -- calls ----------------------------------------------------------------------------------
    def _arg(self, node: ast.Call, pos: int | None, kw: str) -> ast.expr | None:
        """The argument passed as keyword `kw`, or at position `pos` (None: keyword-only)."""
        for k in node.keywords:
            if k.arg == kw:
                return k.value
        return node.args[pos] if pos is not None and len(node.args) > pos else None

    def _call(self, name: str, dotted: str, node: ast.Call) -> None:
        a = self.acc
        group = _GROUP_OF.get(name)
        if group == "conv":
            a.conv_calls += 1
            c_in = self.value(self._arg(node, 0, "in_channels"))
            c_out = self.value(self._arg(node, 1, "out_channels"))
            kernel = self.value(self._arg(node, 2, "kernel_size"))
            stride = self.value(self._arg(node, 3, "stride"))
            groups = self.value(self._arg(node, 6, "groups"))
            if c_out is not None and 0 < c_out <= _MAX_WIDTH:
                a.conv_out.append(c_out)
                k = kernel if kernel is not None and 0 < kernel <= 31 else 3.0
                # An input width the source does not state (in_shape[1], a loop variable) counts as
                # the output width: in a chain of convs they are mostly alike.
                width_in = c_in if c_in is not None and 0 < c_in <= _MAX_WIDTH else c_out
                a.params += width_in * c_out * k * k / max(groups or 1.0, 1.0)
            if kernel is not None and 0 < kernel <= 31:
                a.conv_kernel.append(kernel)
            if stride is not None and stride > 1:
                a.conv_strided += 1
                a.downsample_log2 += math.log2(min(stride, 64.0))
            if a.first_conv is None:
                a.first_conv = (kernel or 0.0, stride or 1.0, c_out or 0.0)
            if self._arg(node, 6, "groups") is not None and groups != 1:
                a.conv_grouped += 1
        elif group in ("maxpool", "avgpool"):
            kernel = self.value(self._arg(node, 0, "kernel_size"))
            stride = self.value(self._arg(node, 1, "stride")) if self._arg(node, 1, "stride") is not None else kernel
            if kernel is not None and 0 < kernel <= 64:
                a.pool_kernel.append(kernel)
            if stride is not None and 1 < stride <= 64:
                a.downsample_log2 += math.log2(stride)
        elif group == "adaptive_pool":
            size = self.value(self._arg(node, 0, "output_size"))
            if size is not None and 0 < size <= 1024:
                a.adaptive_out.append(size)
        elif group == "linear" and name != "Bilinear":
            f_in = self.value(self._arg(node, 0, "in_features"))
            f_out = self.value(self._arg(node, 1, "out_features"))
            if f_out is not None and 0 < f_out <= _MAX_WIDTH:
                a.linear_out.append(f_out)
            if f_in is not None and 0 < f_in <= 1 << 24:
                a.linear_in.append(f_in)
                if f_out is not None and 0 < f_out <= _MAX_WIDTH:
                    a.params += f_in * f_out
        elif group == "dropout":
            p = self.value(self._arg(node, 0, "p"))
            if p is not None and 0 <= p < 1:
                a.dropout_p.append(p)
        elif name in _OPTIMIZERS and ("optim" in dotted or dotted == name):
            a.optimizer = name
            wd = self.value(self._arg(node, None, "weight_decay"))
            if wd is not None and wd > 0:
                a.weight_decay = max(a.weight_decay, wd)
            nesterov = self._arg(node, None, "nesterov")
            if isinstance(nesterov, ast.Constant) and nesterov.value is True:
                a.nesterov = 1
        elif name in ("clip_grad_norm_", "clip_grad_value_", "clip_grad_norm"):
            v = self.value(self._arg(node, 1, "max_norm" if name.endswith("norm_") else "clip_value"))
            a.clip_grad = v if v is not None and v > 0 else max(a.clip_grad, 1.0)
        elif name in _LOSSES:
            ls = self.value(self._arg(node, None, "label_smoothing"))
            if ls is not None and 0 < ls < 1:
                a.label_smoothing = max(a.label_smoothing, ls)
        elif "lr_scheduler" in dotted or name.endswith(("LR", "Scheduler")) and name[:1].isupper():
            a.scheduler = 1
        elif name in ("autocast", "GradScaler"):
            a.amp = 1
        elif name.startswith(_INIT_PREFIXES) and "init" in dotted:
            a.n_init += 1
        elif name == "range":
            v = self.value(node.args[0] if len(node.args) == 1 else self._arg(node, 1, "stop"))  # range([start,] stop)
            if v is not None and 0 < v <= 4096:
                a.ranges.append(v)
        if self.in_forward:
            if name in ("cat", "stack", "concat", "concatenate") and dotted.startswith(("torch.", "th.")):
                a.fwd_cats += 1
            elif name in ("add", "add_") and dotted.count(".") >= 1:
                a.fwd_adds += 1
            elif dotted.startswith(("F.", "nn.functional.", "torch.nn.functional.")):
                a.fwd_functional += 1


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def code_features(source: str | bytes) -> CodeFeatures:
    """The features of one model file; a file that does not parse gets zeros and its parse error."""
    raw = source.encode("utf-8", "replace") if isinstance(source, str) else source
    facts = analyse(raw)
    layers = {k: v for k, v in facts.layers.items() if k not in _LOSSES}
    numeric = dict.fromkeys(NUMERIC, 0.0)
    numeric["n_lines"] = float(facts.n_lines)
    categorical = {"kind": facts.kind, "optimizer": "none"}
    if facts.parse_error is not None:
        return CodeFeatures(numeric, categorical, facts.parse_error)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escapes in corpus files are theirs to fix
        tree = ast.parse(raw)
    walker = _Walker()
    try:
        walker.visit(tree)
    except RecursionError:  # a pathologically nested file: keep what was collected
        pass
    a = walker.acc
    first = a.first_conv or (0.0, 0.0, 0.0)
    for layer, count in layers.items():
        if (group := _GROUP_OF.get(layer)) is not None:
            numeric[f"n_{group}"] += count
    numeric["n_layers"] = float(sum(layers.values()))
    numeric["n_layer_types"] = float(len(layers))
    numeric.update(
        conv_out_max=max(a.conv_out, default=0.0), conv_out_mean=_mean(a.conv_out), conv_out_sum=sum(a.conv_out),
        conv_kernel_max=max(a.conv_kernel, default=0.0), conv_kernel_mean=_mean(a.conv_kernel),
        conv_strided=float(a.conv_strided), conv_grouped=float(a.conv_grouped),
        conv_literal_share=len(a.conv_out) / a.conv_calls if a.conv_calls else 0.0,
        first_conv_kernel=first[0], first_conv_stride=first[1], first_conv_out=first[2],
        downsample_log2=a.downsample_log2, pool_kernel_max=max(a.pool_kernel, default=0.0),
        adaptive_out_max=max(a.adaptive_out, default=0.0),
        linear_out_max=max(a.linear_out, default=0.0), linear_in_max=max(a.linear_in, default=0.0),
        dropout_p_max=max(a.dropout_p, default=0.0), params_log10=math.log10(1.0 + a.params),
        fwd_adds=float(a.fwd_adds), fwd_muls=float(a.fwd_muls), fwd_cats=float(a.fwd_cats),
        fwd_functional=float(a.fwd_functional), fwd_lines=float(a.fwd_lines),
        clip_grad=a.clip_grad, label_smoothing=a.label_smoothing, weight_decay=a.weight_decay,
        nesterov=float(a.nesterov), scheduler=float(a.scheduler), amp=float(a.amp), n_init=float(a.n_init),
        range_max=max(a.ranges, default=0.0),
    )
    n_nodes = n_classes = n_functions = n_loops = n_comprehensions = 0
    for node in ast.walk(tree):
        n_nodes += 1
        if isinstance(node, ast.ClassDef):
            n_classes += 1
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            n_functions += 1
        elif isinstance(node, ast.For | ast.While):
            n_loops += 1
        elif isinstance(node, ast.ListComp | ast.GeneratorExp | ast.SetComp | ast.DictComp):
            n_comprehensions += 1
    numeric.update(n_nodes=float(n_nodes), n_classes=float(n_classes), n_functions=float(n_functions),
                   n_loops=float(n_loops), n_comprehensions=float(n_comprehensions))
    hps = facts.hyperparameters or ()
    numeric["n_hyperparameters"] = float(len(hps))
    numeric["uses_dropout_hp"] = float("dropout" in hps)
    categorical["optimizer"] = a.optimizer
    return CodeFeatures(numeric, categorical)
