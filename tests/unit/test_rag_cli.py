"""`nasgraph index ...`: registered as a plugin; bad input and a missing index are one clean line."""
from __future__ import annotations

import pytest

from nasgraph.cli import main


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("NASGRAPH_HOME", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("argv", [["index", "stats"], ["index", "query", "residual block"]])
def test_missing_index_is_a_clear_error(argv, capsys, home):
    assert main(["--home", str(home), *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("nasgraph: error: no block index at") and "nasgraph index build" in err
    assert "\n" not in err and not (home / "index" / "chroma").exists()  # a query never creates an index


def test_bad_arguments_are_refused(capsys, home):
    assert main(["--home", str(home), "index", "build", "--store-k", "0"]) == 1
    assert "--store-k" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--home", str(home), "index", "query"])  # argparse: the text is required
