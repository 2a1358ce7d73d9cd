"""Prompt templates: every one renders fully; strict values; the user's override directory wins."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from nasgraph.agents import prompts
from nasgraph.agents.prompts import PromptError, fill, names, placeholders, render

UNFILLED = re.compile(r"\{[A-Za-z_]\w*\}")


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NASGRAPH_HOME", str(tmp_path))
    return tmp_path


def test_project_has_the_agent_templates() -> None:
    assert {"code_generator.system", "code_generator.user", "code_generator.repair",
            "prompt_improver.system", "prompt_improver.user"} <= set(names())


@pytest.mark.parametrize("name", names())
def test_every_template_renders_without_unfilled_placeholders(name: str) -> None:
    template = prompts.find(name).read_text()
    values = {p: f"<{p.upper()}-VALUE>" for p in placeholders(template)}
    out = render(name, **values)
    assert out.name == name and len(out.sha) == 12
    assert not UNFILLED.search(out.text), UNFILLED.findall(out.text)
    for v in values.values():
        assert v in out.text


def test_missing_and_unused_values_fail_loudly() -> None:
    with pytest.raises(PromptError, match=r"missing values \['classes'\]"):
        fill("{dataset} has {classes} classes", {"dataset": "x"})
    with pytest.raises(PromptError, match=r"unused values \['extra'\]"):
        fill("{dataset}", {"dataset": "x", "extra": 1})
    with pytest.raises(PromptError, match="missing values"):
        render("code_generator.user", dataset="x")


def test_escapes_and_literal_braces_survive() -> None:
    out = fill('{{name}} is {name}; json {"a": 1}; dict {}', {"name": "N"})
    assert out == '{name} is N; json {"a": 1}; dict {}'


def test_values_are_not_rescanned() -> None:
    assert fill("code: {code}", {"code": "f'{x}' {code}"}) == "code: f'{x}' {code}"


def test_user_override_dir_wins_and_changes_sha(_home: Path) -> None:
    before = render("prompt_improver.system")
    (_home / "prompts").mkdir()
    (_home / "prompts" / "prompt_improver.system.md").write_text("Be brief about {topic}.\n")
    after = render("prompt_improver.system", topic="CNNs")
    assert after.text == "Be brief about CNNs.\n"
    assert after.sha != before.sha
    assert prompts.find("prompt_improver.system") == _home / "prompts" / "prompt_improver.system.md"
    # Templates without an override still come from the project.
    assert prompts.find("code_generator.system").parent == prompts.PROJECT_DIR


def test_explicit_override_dir(tmp_path: Path) -> None:
    d = tmp_path / "mine"
    d.mkdir()
    (d / "code_generator.system.md").write_text("custom")
    assert render("code_generator.system", override_dir=d).text == "custom\n"


def test_unknown_and_bad_names_give_clear_errors() -> None:
    with pytest.raises(PromptError, match="no prompt template 'nope.md'"):
        render("nope")
    with pytest.raises(PromptError, match="bad prompt name"):
        render("../etc/passwd")
    assert render("code_generator.system.md").name == "code_generator.system"
