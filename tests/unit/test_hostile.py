"""The hostile-code suite: programs that loop, fork, allocate, crash, print, write, connect, snoop,
or simply build broken models. Each must end in the right typed Outcome while this process, its
SQLite file and the warm parent survive, and nothing the candidate started outlives it.

Runs on the 1797-image `digits` set with tiny budgets; one Evaluator serves the whole module
(the policy is switched off per test where the runtime sandbox itself is under test).
"""
from __future__ import annotations

import os
import socket
import sqlite3
import textwrap
import threading
import time
from pathlib import Path

import pytest

from nasgraph.tools.evaluator import EvalRequest, Evaluator, Outcome

SECRET_KEY, SECRET = "NASGRAPH_TEST_SECRET_TOKEN", "hunter2-do-not-leak"
MODEL = '''
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        {init}
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])

    def forward(self, x):
        {forward}
        return self.fc(x.flatten(1))
'''


def model(init: str = "pass", forward: str = "pass", head: str = "") -> str:
    """A small valid model with hostile lines injected into __init__ / forward / module level."""
    ind = "\n        "
    body = MODEL.format(init=ind.join(textwrap.dedent(init).strip().splitlines()),
                        forward=ind.join(textwrap.dedent(forward).strip().splitlines()))
    return textwrap.dedent(head) + body


def _candidate_pids(base: Path) -> set[int]:
    """Live (non-zombie) processes working in one of this Evaluator's candidate dirs (other
    Evaluators running on the machine at the same time are none of our business)."""
    pids = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
                cwd = os.readlink(f"/proc/{name}/cwd")
            except OSError:
                continue
            if cwd.startswith(str(base / "c")) and not stat[stat.rfind(")") + 2:].startswith("Z"):
                pids.add(int(name))
    return pids


def _children_of(pid: int) -> list[int]:
    kids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2:].split()[1]) == pid:
                kids.append(int(name))
    return kids


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("hostile")
    os.environ[SECRET_KEY] = SECRET  # set before the warm parent starts: it must not inherit it
    db = sqlite3.connect(home / "store.sqlite")
    db.execute("CREATE TABLE outcomes (id INTEGER PRIMARY KEY, test TEXT, status TEXT, error TEXT)")
    db.commit()
    ev = Evaluator(home / "data")
    try:
        yield {"ev": ev, "db": db, "home": home}
    finally:
        ev.close()
        db.close()
        os.environ.pop(SECRET_KEY, None)


def run(env, request, code: str, *, policy: bool = True, **kw) -> Outcome:
    settings = dict(dataset="digits", threads=1, batch_size=64, augment=False, time_budget_s=20.0,
                    setup_timeout_s=4.0, timeout_grace_s=3.0, memory_limit_mb=1024, max_output_mb=1, seed=0)
    ev: Evaluator = env["ev"]
    ev.policy = policy
    try:
        out = ev.evaluate(EvalRequest(code=code, **{**settings, **kw}))
    finally:
        ev.policy = True
    db = env["db"]  # this process's own database keeps working, whatever the candidate did
    db.execute("INSERT INTO outcomes (test, status, error) VALUES (?, ?, ?)", (request.node.name, out.status, out.error))
    db.commit()
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # nothing the candidate started survives it
    assert _candidate_pids(ev.sandbox_dirs[0]) == set()
    if ev.warm_pid:
        assert _children_of(ev.warm_pid) == []
    return out


def test_sane_model_trains(env, request):
    out = run(env, request, model())
    assert out.status == "ok", out.error
    assert out.accuracy is not None and out.accuracy > 0.3
    assert set(out.seconds) >= {"parse", "policy", "build", "shape", "measure", "train", "test"}


def test_a_lazy_layer_forward_never_reaches_counts_as_no_weights(env, request):
    # A rule may make a layer Lazy that forward never calls: it stays without weights and must not
    # fail the parameter count (the Lazy layer is left out of it), nor training.
    out = run(env, request, model(init="self.unused = nn.LazyLinear(7)"))
    assert out.status == "ok", out.error
    assert out.params == run(env, request, model()).params


def test_infinite_loop_in_init_times_out(env, request):
    t = time.monotonic()
    out = run(env, request, model(init="while True:\n    pass"))
    assert out.status == "timeout" and out.stage == "build", out
    assert "4s" in out.error and "build" in out.error
    assert time.monotonic() - t < 15


def test_infinite_loop_in_forward_times_out(env, request):
    out = run(env, request, model(forward="while True:\n    x = x + 1"))
    assert out.status == "timeout" and out.stage == "shape", out


@pytest.mark.parametrize("trick", [
    "import os\nos.fork()",
    "__import__('os').fork()",
    "f = ().__class__.__bases__[0].__subclasses__()",
    "import torch\np = torch.multiprocessing.Process(target=print)",
    "import torch\ngetattr(torch, 'o' + 's').fork()",
    "import torch\ntorch.os.fork()",
    "exec('import os; os.fork()')",
    "import importlib\nimportlib.import_module('os').fork()",
])
def test_fork_storm_tricks_are_forbidden(env, request, trick):
    out = run(env, request, model(init=trick))
    assert out.status == "forbidden" and out.stage == "policy", out


def test_fork_storm_without_policy_is_killed_and_leaves_nothing(env, request):
    storm = """
    import os
    while True:
        try:
            os.fork()
        except OSError:
            pass
    """
    out = run(env, request, model(init=storm), policy=False)
    assert out.status in ("timeout", "killed"), out
    assert env["ev"].restarts == 0


def test_detached_grandchild_is_swept(env, request):
    # escapes the process group and the session, then the candidate finishes normally
    daemon = """
    import os, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(600)
        os._exit(0)
    """
    out = run(env, request, model(init=daemon), policy=False)
    assert out.status == "ok", out.error


def test_huge_allocation_is_a_memory_outcome(env, request):
    out = run(env, request, model(init="import torch\nself.buf = torch.empty(30 * 2**30, dtype=torch.uint8)"))
    assert out.status == "memory" and out.stage == "build", out
    assert "line" in out.error


def test_huge_python_allocation_is_a_memory_outcome(env, request):
    out = run(env, request, model(forward="junk = bytearray(30 * 2**30)"))
    assert out.status == "memory" and out.stage == "shape", out


def test_os_exit_reports_the_code(env, request):
    out = run(env, request, model(init="import os\nos._exit(3)"), policy=False)
    assert out.status in ("runtime_error", "killed") and out.stage == "build", out
    assert "code 3" in out.error


def test_segfault_is_killed_sigsegv(env, request):
    out = run(env, request, model(forward="import ctypes\nctypes.string_at(0)"), policy=False)
    assert out.status == "killed" and out.stage == "shape", out
    assert "SIGSEGV" in out.error


def test_sys_exit_before_training(env, request):
    out = run(env, request, model(forward="import sys\nsys.exit(0)"), policy=False)
    assert out.status == "runtime_error" and out.stage == "shape", out
    assert "sys.exit(0)" in out.error and 'File "<candidate>"' in out.error


def test_printing_a_gigabyte_is_capped(env, request):
    out = run(env, request, model(init="for _ in range(1024):\n    print('x' * 2**20)"))
    assert out.status == "ok", out.error
    assert out.detail["output_dropped_bytes"] >= 1023 * 2**20


def test_raw_fd_output_hits_the_file_size_limit(env, request):
    out = run(env, request, model(init="import os\nfor _ in range(64):\n    os.write(1, b'x' * 2**20)"), policy=False)
    assert out.status == "build_error" and "File too large" in out.error, out


def test_writing_files_is_forbidden(env, request):
    out = run(env, request, model(init="open('pwned.txt', 'w').write('x')"))
    assert out.status == "forbidden" and "open" in out.error


def test_written_file_lands_in_temp_dir_that_is_removed(env, request):
    write = """
    import os
    with open('pwned.txt', 'w') as f:
        f.write('x')
    raise RuntimeError('wrote ' + os.path.abspath('pwned.txt'))
    """
    out = run(env, request, model(init=write), policy=False)
    assert out.status == "build_error", out
    path = Path(out.error.split("RuntimeError: wrote ", 1)[1].split()[0])
    assert path.name == "pwned.txt" and "nasgraph-eval-" in str(path)
    assert not path.exists() and not path.parent.exists()
    assert not (Path.cwd() / "pwned.txt").exists()


def test_sockets_are_forbidden(env, request):
    out = run(env, request, model(init="import socket\ns = socket.socket()"))
    assert out.status == "forbidden" and "socket" in out.error


def test_socket_without_policy_reaches_nothing(env, request):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.1)
    port = server.getsockname()[1]
    try:
        connect = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hi')"
        out = run(env, request, model(init=connect), policy=False)
        assert out.status == "build_error", out
        assert "Error" in out.error
        with pytest.raises(socket.timeout):
            server.accept()  # the child lives in its own (empty) network namespace
    finally:
        server.close()


def test_nan_loss(env, request):
    out = run(env, request, model(forward="x = x * float('nan')"))
    assert out.status == "nan_loss" and out.stage == "train", out
    assert out.seconds["train"] > 0  # the time spent training before the NaN counts as training


def test_wrong_output_shape(env, request):
    code = model().replace("return self.fc(x.flatten(1))", "return self.fc(x.flatten(1))[:, :5]")
    out = run(env, request, code)
    assert out.status == "shape_error" and out.stage == "shape", out
    assert "expected (2, 10)" in out.error and "got (2, 5)" in out.error


def test_flatten_size_mismatch_names_layer_and_line(env, request):
    code = model().replace("nn.Linear(in_shape[1] * in_shape[2] * in_shape[3]", "nn.Linear(784")
    out = run(env, request, code)
    assert out.status == "shape_error" and out.stage == "shape", out
    assert "mat1 and mat2" in out.error and "(2, 64)" in out.error
    line = code.splitlines().index("        return self.fc(x.flatten(1))") + 1
    assert f'File "<candidate>", line {line}, in forward' in out.error and "return self.fc(x.flatten(1))" in out.error
    assert "module 'fc'" in out.error and "harness" not in out.error
    assert len(out.error.splitlines()) <= 15


def test_missing_net_is_a_build_error(env, request):
    out = run(env, request, model().replace("class Net(", "class Model("))
    assert out.status == "build_error" and "class Net" in out.error, out


def test_env_secret_is_invisible(env, request):
    snoop = f"""
    import os
    seen = [os.environ.get('{SECRET_KEY}', 'absent'), sorted(os.environ)]
    for path in ('/proc/self/environ', '/proc/%d/environ' % os.getppid(), '/proc/1/environ'):
        try:
            seen.append(open(path, 'rb').read().decode(errors='replace'))
        except OSError as e:
            seen.append(type(e).__name__)
    raise RuntimeError(repr(seen))
    """
    assert os.environ[SECRET_KEY] == SECRET
    out = run(env, request, model(init=snoop), policy=False)
    assert out.status == "build_error", out
    assert SECRET not in out.error and SECRET_KEY not in out.error
    assert "'absent'" in out.error and "PermissionError" in out.error


def test_model_too_big_is_over_budget_before_training(env, request):
    out = run(env, request, model(init="self.big = nn.Linear(1000, 1000)"), max_params=100_000)
    assert out.status == "over_budget" and out.stage == "measure", out
    assert out.detail["params"] > 1_000_000 and out.detail["max_params"] == 100_000
    assert "train" not in out.seconds


def test_too_many_flops_is_over_budget(env, request):
    out = run(env, request, model(), max_flops=100)
    assert out.status == "over_budget" and out.stage == "measure" and out.detail["flops"] > 100, out


def test_too_slow_model_is_over_budget_with_projection(env, request):
    slow = "if self.training:\n    for _ in range(20):\n        y = torch.randn(256, 256) @ torch.randn(256, 256)"
    out = run(env, request, model(forward=slow), time_budget_s=0.2)
    assert out.status == "over_budget" and out.stage == "train", out
    assert out.detail["projected_s"] > 0.2 and out.detail["budget_s"] == 0.2
    assert "projected" in out.error


def test_unknown_dataset_raises(env):
    with pytest.raises(ValueError, match="unknown dataset"):
        env["ev"].evaluate(EvalRequest(code=model(), dataset="no-such-set"))


def test_unavailable_dataset_raises_with_the_folder(env):
    from nasgraph.tools.evaluator.datasets import DatasetUnavailable
    with pytest.raises(DatasetUnavailable, match="raw"):
        env["ev"].evaluate(EvalRequest(code=model(), dataset="cifar10"))
    assert env["ev"].restarts == 0


def test_warm_parent_death_is_an_outcome_and_it_restarts(env, request):
    ev: Evaluator = env["ev"]
    pid = ev.warm_pid
    killer = threading.Timer(1.5, os.kill, (pid, 9))
    killer.start()
    try:
        out = run(env, request, model(init="while True:\n    pass"), setup_timeout_s=30.0)
    finally:
        killer.cancel()
    assert out.status == "killed" and "warm parent died" in out.error, out
    again = run(env, request, model())
    assert again.status == "ok" and ev.warm_pid != pid and ev.restarts == 1
    os.kill(ev.warm_pid, 9)  # dying while idle: the next call restarts it without a word
    os.waitpid(ev.warm_pid, 0)
    assert run(env, request, model()).status == "ok" and ev.restarts == 2


def test_database_survived_every_candidate(env, request):
    db = env["db"]
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT COUNT(*) FROM outcomes").fetchone()[0] >= 12
