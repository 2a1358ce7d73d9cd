"""NN-RAG on real parts: torchvision.ops blocks closed, validated in the sandbox, embedded with the local
MiniLM model into a persistent Chroma collection, queried, and fed to the generator by the graph; and,
when a LEMUR index has been pulled, LEMUR's best models indexed by `nasgraph index build --lemur`."""
from __future__ import annotations

import json

import pytest

from nasgraph.agents.rag_retriever import RagUnavailable, make_retriever
from nasgraph.cli import main
from nasgraph.config import default_home, load_config
from nasgraph.graph.run import RunPaths, run_loop
from nasgraph.graph.trace import read_events
from nasgraph.rag_index.build import build, stats
from nasgraph.rag_index.extract import Target
from nasgraph.rag_index.index import BlockIndex, index_path
from nasgraph.tools.lemur import WHEEL, lemur_dir, list_models
from nasgraph.tools.lemur.fetch import is_current
from tests import candidates as C
from tests.fakes import FakeHandle, ScriptedChatModel

pytestmark = pytest.mark.integration

OPS = [("torchvision.ops.misc", n) for n in ("SqueezeExcitation", "Conv2dNormActivation", "MLP", "Permute",
                                               "FrozenBatchNorm2d")]
OPS += [("torchvision.ops.stochastic_depth", "StochasticDepth"), ("torchvision.ops.drop_block", "DropBlock2d")]
TARGETS = [Target(m, n, "torchvision", "op") for m, n in OPS]
SE_TRIPLE = ("PROBLEM: channels are weighted equally\nMODIFICATION: add squeeze-and-excitation channel attention "
             "after the convolution\nEXPECTED: better accuracy")


class RecordingChat(ScriptedChatModel):
    prompts: list[str] = []

    def _generate(self, messages, stop=None, run_manager=None, **kw):
        self.prompts.append("\n".join(str(m.content) for m in messages))
        return super()._generate(messages, stop, run_manager, **kw)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    home = tmp_path_factory.mktemp("raghome")
    return load_config(home=home, rag={"enabled": True, "k": 2, "max_chars": 2500},
                       evaluator={"threads": 1, "time_budget_s": 60, "batch_size": 32},
                       loop={"dataset": "digits", "iterations": 1, "max_repairs": 0, "epochs": 1,
                             "search": "improver"})  # retrieval steered by the improver's triple


@pytest.fixture(scope="module")
def built(cfg):
    index = BlockIndex(index_path(cfg), create=True)
    return index, build(index, TARGETS, timeout_s=60)


def test_build_validates_every_target_and_query_finds_squeeze_excitation(built):
    index, report = built
    assert report.targets == report.blocks == report.executable == len(TARGETS) and report.rate == 1.0
    assert report.failures == [] and report.instantiable == len(TARGETS)
    assert report.forward_checked >= 5 and report.prompt_ready >= 5
    hits = index.query("squeeze and excitation channel attention", k=3)
    assert hits[0].id == "torchvision.ops.misc.SqueezeExcitation", [h.id for h in hits]
    assert hits[0].distance < hits[1].distance
    meta = hits[0].metadata
    assert meta["validated"] and meta["forward_checked"] and meta["torch_only"] and meta["prompt_ready"]
    assert meta["params"] > 0 and json.loads(meta["input_shape"])[1] == json.loads(meta["init_args"])["input_channels"]
    assert "class SqueezeExcitation" in hits[0].code
    drop = [h.id for h in index.query("randomly drop residual branches (stochastic depth)", k=2)]
    assert "torchvision.ops.stochastic_depth.StochasticDepth" in drop


def test_rebuild_is_incremental_and_persistent(cfg, built):
    index, _ = built
    again = build(index, TARGETS)
    assert again.validated_now == 0 and again.reused == len(TARGETS) and again.executable == len(TARGETS)
    reopened = BlockIndex(index_path(cfg))
    assert reopened.count() == len(TARGETS) and stats(reopened)["prompt_ready"] >= 5


def test_retriever_feeds_blocks_to_the_generator_in_the_graph(cfg, built):
    llm = RecordingChat(improver=[SE_TRIPLE], generator=[C.fenced(C.VALID)], prompts=[])
    summary = run_loop(cfg, FakeHandle(llm), run_id="rag1", iterations=1)
    assert summary["iterations"] == 1
    events = list(read_events(RunPaths(cfg.runs_dir / "rag1").trace))
    retrieve = next(e for e in events if e["node"] == "retrieve")
    assert retrieve["enabled"] and retrieve["query"].startswith("add squeeze-and-excitation")
    assert retrieve["picks"] and retrieve["picks"][0]["id"] == "torchvision.ops.misc.SqueezeExcitation"
    assert 0 < retrieve["chars"] <= 2500 and len(retrieve["picks"]) <= 2
    generator_prompt = next(p for p in llm.prompts if "Tested building blocks" in p)
    assert "class SqueezeExcitation(torch.nn.Module)" in generator_prompt
    assert "import nothing but torch" in generator_prompt and "Optional[" not in generator_prompt


def test_retrieval_without_an_index_is_a_clear_error(tmp_path):
    cfg = load_config(home=tmp_path, rag={"enabled": True})
    with pytest.raises(RagUnavailable, match="nasgraph index build"):
        make_retriever(cfg)
    assert make_retriever(load_config(home=tmp_path)) is None  # rag disabled: no retriever


def test_pruning_removes_targets_that_are_gone(built):
    index, _ = built
    report = build(index, TARGETS[:-1])
    assert report.removed == 1 and index.count() == len(TARGETS) - 1


def test_lemur_best_models_are_indexed_with_their_origin(tmp_path, capsys):
    """`--lemur 3` on the pulled corpus, into a temporary home whose `lemur` folder is the real one."""
    real = lemur_dir(default_home())
    if not is_current(real, WHEEL):
        pytest.skip(f"no current LEMUR index in {real} (`nasgraph lemur pull`)")
    (tmp_path / "lemur").symlink_to(real, target_is_directory=True)
    assert main(["--home", str(tmp_path), "index", "build", "--lemur", "3", "--no-store", "--only", "lemur.",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    best = {r.name: r.series.best for r in list_models(real, dataset="cifar-10", limit=3)}
    assert report["targets"] == report["blocks"] > 3 and report["failures_by_kind"] == {}
    assert report["executable"] == report["targets"] and report["prompt_ready"] > 0
    index = BlockIndex(index_path(load_config(home=tmp_path)))
    metas = index.metadata().values()
    assert {m["lemur_model"] for m in metas} == set(best) and {m["source"] for m in metas} == {"lemur"}
    assert all(m["accuracy"] == best[m["lemur_model"]] and m["dataset"] == "cifar-10" for m in metas)
    hits = index.query("mixture of experts gating network", k=3)
    assert hits and hits[0].metadata["lemur_model"] in best and hits[0].metadata["kind"] == "block", hits
