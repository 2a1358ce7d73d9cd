"""The CLI as a user meets it: clear one-line errors and non-zero exits, never a traceback."""
import json
import os
import subprocess
import sys
from pathlib import Path

from tests import candidates as C

ROOT = Path(__file__).resolve().parents[2]


def nasgraph(home: Path, *args: str, **env_extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NASGRAPH_HOME": str(home), **env_extra}
    return subprocess.run([sys.executable, "-m", "nasgraph.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_clean_error(p: subprocess.CompletedProcess, *words: str) -> None:
    assert p.returncode != 0
    assert "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip().count("\n") <= 3, p.stderr  # argparse adds a usage line; ours is one line
    for w in words:
        assert w in p.stderr, p.stderr


def test_missing_file(tmp_path):
    assert_clean_error(nasgraph(tmp_path, "eval", str(tmp_path / "nope.py"), "--dataset", "digits"), "no such file")


def test_unknown_dataset(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(C.VALID)
    assert_clean_error(nasgraph(tmp_path, "eval", str(f), "--dataset", "imagenet-22k"), "imagenet-22k", "digits")


def test_a_gpu_asked_for_on_a_machine_without_one(tmp_path):
    import torch

    if torch.cuda.is_available():
        return  # this machine has one: nothing to refuse
    f = tmp_path / "m.py"
    f.write_text(C.VALID)
    assert_clean_error(nasgraph(tmp_path, "eval", str(f), "--device", "cuda", "--dataset", "digits"),
                       "no usable CUDA GPU", "--device cpu")


def test_bad_argument(tmp_path):
    assert_clean_error(nasgraph(tmp_path, "eval", "x.py", "--epochs", "many"), "--epochs")


def test_unreadable_store(tmp_path):
    (tmp_path / "store.sqlite").write_bytes(b"this is not a database" * 100)
    assert_clean_error(nasgraph(tmp_path, "store", "ls"), "store")


def test_offline_dataset_names_the_folder(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(C.VALID)
    p = nasgraph(tmp_path, "eval", str(f), "--dataset", "cifar10")
    assert_clean_error(p, "cifar10", str(tmp_path / "data"))


def test_eval_json_then_cache_hit_then_store(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(C.VALID)
    train = ("--dataset", "digits", "--threads", "1", "--epochs", "2", "--batch", "32", "--lr", "0.1", "--json")
    first = json.loads(nasgraph(tmp_path, "eval", str(f), *train).stdout)
    assert first["status"] == "ok" and first["accuracy"] > 0.3 and not first["cache_hit"]
    g = tmp_path / "same.py"
    g.write_text(C.VALID_DUPLICATE)
    second = json.loads(nasgraph(tmp_path, "eval", str(g), *train).stdout)
    assert second["cache_hit"] and second["arch_id"] == first["arch_id"]
    assert second["accuracy"] == first["accuracy"]
    # Another training setting is another experiment: no stale hit from the cache.
    third = json.loads(nasgraph(tmp_path, "eval", str(g), *train, NASGRAPH_EVALUATOR__AUGMENT="true").stdout)
    assert not third["cache_hit"] and third["arch_id"] == first["arch_id"]

    listing = json.loads(nasgraph(tmp_path, "store", "ls", "--json").stdout)
    assert [a["id"] for a in listing] == [first["arch_id"]]
    shown = nasgraph(tmp_path, "store", "show", first["arch_id"][:6])
    assert shown.returncode == 0 and "nn.Conv2d" in shown.stdout
    assert_clean_error(nasgraph(tmp_path, "store", "show", "zzzz"), "zzzz")
    out = tmp_path / "export"
    assert nasgraph(tmp_path, "store", "export", "--out", str(out)).returncode == 0
    assert list((out / "nn").glob("*.py"))


def test_eval_several_files_at_once_in_their_order(tmp_path):
    files = []
    for name, code in (("a.py", C.wide(5)), ("bad.py", C.HOSTILE), ("b.py", C.wide(6)), ("same.py", C.wide(5))):
        (tmp_path / name).write_text(code)
        files.append(str(tmp_path / name))
    p = nasgraph(tmp_path, "eval", *files, "--workers", "2", "--dataset", "digits", "--threads", "1",
                 "--batch", "32", "--lr", "0.1", "--json")
    assert p.returncode == 1, p.stderr  # one file failed
    out = json.loads(p.stdout)
    assert [Path(r["file"]).name for r in out] == ["a.py", "bad.py", "b.py", "same.py"]
    assert [r["status"] for r in out] == ["ok", "forbidden", "ok", "ok"]
    # the same architecture trains once, whatever the number of workers
    assert [r["cache_hit"] for r in out] == [False, False, False, True] and out[3]["arch_id"] == out[0]["arch_id"]
    assert_clean_error(nasgraph(tmp_path, "eval", files[0], "--workers", "-1", "--dataset", "digits"), "workers")


def test_a_handed_in_lemur_style_file_runs_unchanged(tmp_path):
    # A LEMUR model reads prm['dropout'] (the framework supplies what it declares) and may exceed the
    # loop's FLOP budget, which applies to generated designs, not to a file a person hands in.
    code = ("def supported_hyperparameters():\n    return {'lr', 'momentum', 'dropout'}\n" + C.VALID
            ).replace("self.fc = nn.Linear(64, out_shape[0])",
                      "self.fc = nn.Sequential(nn.Dropout(prm['dropout']), nn.Linear(64, out_shape[0]))")
    f = tmp_path / "lemur_style.py"
    f.write_text(code)
    args = ("eval", str(f), "--dataset", "digits", "--lr", "0.1", "--batch", "32", "--threads", "1", "--json")
    out = json.loads(nasgraph(tmp_path, *args, NASGRAPH_EVALUATOR__MAX_FLOPS="1000").stdout)
    assert out["status"] == "ok", out["error"]
    assert "dropout" in out["detail"]["prm_filled"]
    capped = json.loads(nasgraph(tmp_path, *args, "--max-flops", "1000").stdout)
    assert capped["status"] == "over_budget"  # asked for explicitly: applied


def test_failed_candidate_exits_non_zero_with_typed_outcome(tmp_path):
    f = tmp_path / "bad.py"
    f.write_text(C.HOSTILE)
    p = nasgraph(tmp_path, "eval", str(f), "--dataset", "digits", "--json")
    assert p.returncode == 1
    assert json.loads(p.stdout)["status"] == "forbidden"


def test_autofix_rules_prints_the_catalogue(capsys):
    from nasgraph.cli import main
    from nasgraph.tools.autofix import REGISTRY

    assert main(["autofix", "rules", "--json"]) == 0
    rules = json.loads(capsys.readouterr().out)
    assert {r["id"] for r in rules} == set(REGISTRY) and all(r["summary"] and r["kinds"] for r in rules)
