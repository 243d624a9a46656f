"""Names chosen from a fixed set (a method, a backbone, a schedule, ...): the error for one that is not
in the set names the valid ones and the closest of them, so a typo is answered with its fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from distilshot.errors import ConfigError


def unknown_choice(what: str, value: object, choices: Iterable[str]) -> ConfigError:
    """The ConfigError for `value` not being one of `choices` (e.g. what="backbone")."""
    names = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown {what} {value!r}{hint} (choose one of {', '.join(names)})")
