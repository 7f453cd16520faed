"""A config's problems: rules raise them by field path; callers get one ConfigError of lines."""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(Exception):
    """A config that cannot be used; `lines` holds one readable line per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


Loc = tuple[int | str, ...]
Problem = tuple[Loc, str]


class FieldProblemsError(ValueError):
    """Raised by cross-field rules: each problem names the field a person has to change."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(message for _, message in self.problems))


def raise_if(problems: list[Problem]) -> None:
    if problems:
        raise FieldProblemsError(problems)


def repeats(entries: Iterable[tuple[Loc, object, str]], used_as: str) -> list[Problem]:
    """One problem per repeated value, at the repeat: (location, value, who has it)."""
    first: dict[object, str] = {}
    problems: list[Problem] = []
    for loc, value, owner in entries:
        if value in first:
            problems.append((loc, f"{value} is already {used_as} {first[value]}"))
        else:
            first[value] = owner
    return problems
