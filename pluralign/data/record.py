"""The preference record: one format for files, the wire and training."""

from __future__ import annotations

import msgspec


class Base(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every pluralign struct: unknown fields are an error, never silently dropped."""


class PreferenceError(ValueError):
    """A preference row that cannot be read; names the line (or row) and the field."""

    def __init__(self, line: int, field: str | None, problem: str):
        self.line = line
        self.field = field
        self.problem = problem
        where = f"line {line}" + (f", field `{field}`" if field else "")
        super().__init__(f"{where}: {problem}")


class Preference(Base):
    """One user's judgment that `chosen` is better than `rejected` as an answer to `prompt`.

    `tie=True` records that the user found both equal (kept, but not used for pairwise training).
    `attributes` holds free labels such as group names used by fairness audits.
    """

    user_id: str
    prompt: str
    chosen: str
    rejected: str
    margin: float | None = None
    tie: bool = False
    source: str | None = None
    created_at: float | None = None
    attributes: dict[str, str] = {}

    def __post_init__(self) -> None:
        for name in ("user_id", "prompt", "chosen", "rejected"):
            if not getattr(self, name).strip():
                raise ValueError(f"`{name}` must not be empty")


PREFERENCE_ENCODER = msgspec.json.Encoder()
