"""Prompt templates as files, rendered by name.

A template is `prompts/<name>.md` in the project; a file of the same name in `$NASGRAPH_HOME/prompts/`
overrides it, so a user can tune prompts without touching the code. Placeholders are `{identifier}`;
`{{identifier}}` writes a literal `{identifier}`. Other braces (JSON examples, dict literals) are left
alone, which is why this is not `str.format`. Rendering is strict: a missing or an unused value is an
error, because a silently empty section is exactly the kind of bug that makes a small model wander.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import NamedTuple

from nasgraph.config import default_home
from nasgraph.errors import NasgraphError

PROJECT_DIR = Path(__file__).resolve().parent.parent / "prompts"
_PLACEHOLDER = re.compile(r"\{\{([A-Za-z_]\w*)\}\}|\{([A-Za-z_]\w*)\}")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class PromptError(NasgraphError, ValueError):
    """A template is missing, or was rendered with missing or unused values."""


class RenderedPrompt(NamedTuple):
    name: str
    text: str
    sha: str  # identifies the template version (project or user override), not this rendering


def user_dir() -> Path:
    return default_home() / "prompts"


def _file_name(name: str) -> str:
    stem = name[:-3] if name.endswith(".md") else name
    if not _NAME.match(stem) or ".." in stem:
        raise PromptError(f"bad prompt name {name!r}: use a plain name such as 'code_generator.user'")
    return stem + ".md"


def find(name: str, override_dir: Path | None = None) -> Path:
    """The file that supplies template `name`: the user's override if present, else the project's."""
    fname = _file_name(name)
    for folder in (override_dir if override_dir is not None else user_dir(), PROJECT_DIR):
        path = folder / fname
        if path.is_file():
            return path
    raise PromptError(f"no prompt template {fname!r} in {override_dir or user_dir()} or {PROJECT_DIR}")


def names() -> list[str]:
    """Names of the project's templates (user overrides replace these, they don't add new ones)."""
    return sorted(p.name[:-3] for p in PROJECT_DIR.glob("*.md"))


def placeholders(template: str) -> set[str]:
    return {m.group(2) for m in _PLACEHOLDER.finditer(template) if m.group(2)}


def fill(template: str, values: dict[str, object], name: str = "<inline>") -> str:
    """Substitute values into `template`; values are inserted verbatim and never re-scanned."""
    wanted = placeholders(template)
    missing = sorted(wanted - values.keys())
    unused = sorted(values.keys() - wanted)
    if missing or unused:
        parts = [f"missing values {missing}" if missing else "", f"unused values {unused}" if unused else ""]
        raise PromptError(f"prompt {name!r}: " + "; ".join(p for p in parts if p))

    def sub(m: re.Match[str]) -> str:
        return "{" + m.group(1) + "}" if m.group(1) else str(values[m.group(2)])

    return _PLACEHOLDER.sub(sub, template)


def render(name: str, override_dir: Path | None = None, **values: object) -> RenderedPrompt:
    path = find(name, override_dir)
    template = path.read_text(encoding="utf-8")
    sha = hashlib.sha256(template.encode("utf-8")).hexdigest()[:12]
    return RenderedPrompt(_file_name(name)[:-3], fill(template, values, name).strip() + "\n", sha)


def pair_sha(*prompts: RenderedPrompt) -> str:
    """One id for the set of templates behind a call (system + user), for traces."""
    return hashlib.sha256(":".join(p.sha for p in prompts).encode()).hexdigest()[:12]
