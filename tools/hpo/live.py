"""A live search: each setting trains the model through the sandboxed Evaluator.

The space is the training recipe the harness takes from `prm` (lr, momentum, batch; its SGD with
a one-cycle schedule, or the model's own optimizer when it sets one), dropout when the model reads
it, and the harness's augmentation switch (random translation, plus flips on datasets where they
keep the label), which every dataset allows. The ranges keep a one-epoch CPU proxy affordable:
batches below 32 take minutes per Fashion-MNIST epoch.
"""
from __future__ import annotations

import re

from nasgraph.config import EvaluatorConfig
from nasgraph.tools.hpo.space import ChoiceDim, FloatDim, IntDim, Params, SearchSpace
from nasgraph.tools.hpo.study import HpoError, Result
from nasgraph.tools.lemur.parse import analyse

# Outcomes that say the setting was bad (the search goes on, the trial scores 0); any other failure
# (the file does not parse, is refused, does not build or mis-shapes) means no setting can help.
SETTING_FAILURES = ("nan_loss", "over_budget", "timeout", "memory")
_READS_DROPOUT = re.compile(r"""prm\s*(\[|\.get\(\s*)\s*['"]dropout['"]""")


def reads_dropout(code: str) -> bool:
    facts = analyse(code.encode("utf-8"))
    return "dropout" in (facts.hyperparameters or ()) or bool(_READS_DROPOUT.search(code))


def live_space(code: str, *, batch: tuple[int, int] = (32, 512)) -> SearchSpace:
    dims: list = [
        FloatDim(name="lr", low=1e-3, high=0.5, log=True, about="peak learning rate of SGD (one-cycle schedule)"),
        FloatDim(name="momentum", low=0.0, high=0.99, about="SGD momentum (Nesterov when above 0)"),
        IntDim(name="batch", low=batch[0], high=batch[1], log=True, about="batch size"),
    ]
    if reads_dropout(code):
        dims.append(FloatDim(name="dropout", low=0.0, high=0.5, about="dropout probability"))
    dims.append(ChoiceDim(name="augment", choices=[False, True],
                          about="random translation of ~12% (and horizontal flips where the dataset allows)"))
    return SearchSpace(dims=dims)


class LiveObjective:
    """Train `code` once per setting through `evaluator` (an open `Evaluator`); `request` builds the
    EvalRequest from (prm, augment), so the caller decides the policy, image sides and budgets."""

    def __init__(self, evaluator, cfg: EvaluatorConfig, code: str, dataset: str, *, epochs: int = 1,
                 **request_fields) -> None:
        self.evaluator, self.cfg, self.code, self.dataset = evaluator, cfg, code, dataset
        self.epochs, self.request_fields = epochs, request_fields
        self.outcomes: list = []

    def __call__(self, params: Params) -> Result:
        from nasgraph.tools.evaluator import EvalRequest

        prm = {k: v for k, v in params.items() if k != "augment"}
        augment = bool(params.get("augment", self.cfg.augment))
        req = EvalRequest.from_config(self.cfg, code=self.code, dataset=self.dataset, epochs=self.epochs, prm=prm,
                                      augment=augment, **self.request_fields)
        out = self.evaluator.evaluate(req)
        self.outcomes.append(out)
        if out.ok:
            return Result(accuracy=out.accuracy, note=f"{out.seconds.get('train', 0):.0f} s training")
        last = (out.error or "").strip().splitlines()[-1:] or [out.status]
        if out.status not in SETTING_FAILURES:
            raise HpoError(f"the model cannot be trained ({out.status}): {last[0][:200]}")
        return Result(accuracy=None, status=out.status, note=last[0][:200])
