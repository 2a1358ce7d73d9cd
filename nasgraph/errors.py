"""The one base of every user-facing error. The CLI and chat catch `NasgraphError` and print its
first line; anything else is a bug and keeps its traceback.

This module sits at the bottom of the package: it imports nothing of the project, and every layer
may import it. Each subsystem keeps its own subclass beside the code that raises it (`StoreError`
in the store, `DatasetUnavailable` in the datasets, ...), often also deriving from the builtin
that callers already catch (`ValueError`, `RuntimeError`).
"""
from __future__ import annotations


class NasgraphError(Exception):
    """A problem the user can act on; its message says what happened and what to do."""
