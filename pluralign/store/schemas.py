"""Explicit Arrow schemas of the four LanceDB tables, with their version.

Each table's schema metadata records `schema_version`, `encoder_id` and `dim` (the embedding width);
opening a table written under other values is refused with a message that names the difference.
Every row also carries `schema_version`, so rows exported from one version stay identifiable.
"""

from __future__ import annotations

import pyarrow as pa

# 2: the first version whose tables an earlier release must not open (release 2a4712d cannot read its
# user rows; every release before 2 refuses a table not marked 1). Tables marked 1 are marked 2 when
# opened (`older_schema`), after their added columns; one marked above this is a newer release's.
# 3: preference rows keep a TRL row's own form (`trl`); tables marked 1 or 2 gain the column on open
SCHEMA_VERSION = 3
PREFERENCE_KINDS = ("choice", "comparison", "rating", "edit")


def older_schema(mark: str) -> bool:
    """A table's `schema_version` mark written by an earlier release, which this one upgrades on open."""
    return mark.isdigit() and 1 <= int(mark) < SCHEMA_VERSION


def newer_schema(mark: str) -> bool:
    """A mark written by a later release: this one refuses the table (its rows may not read back)."""
    return mark.isdigit() and int(mark) > SCHEMA_VERSION


def added_columns(schema: pa.Schema, existing: pa.Schema) -> list[pa.Field]:
    """Nullable fields of `schema` that a table written by an earlier release lacks: they are added
    (null in old rows) when the table is opened, so an upgrade keeps its data. Any other difference
    is refused by the schema-version check."""
    return [f for f in schema if f.name not in existing.names and f.nullable]


def _metadata(encoder_id: str, dim: int) -> dict[str, str]:
    return {"schema_version": str(SCHEMA_VERSION), "encoder_id": encoder_id, "dim": str(dim)}


def vector_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def preference_schema(encoder_id: str, dim: int) -> pa.Schema:
    """One row per comparison a user made; `kind` is one of PREFERENCE_KINDS."""
    return pa.schema(
        [
            pa.field("tenant", pa.string(), nullable=False),
            pa.field("user_id", pa.string(), nullable=False),
            pa.field("pref_id", pa.string(), nullable=False),
            pa.field("prompt", pa.string(), nullable=False),
            pa.field("chosen", pa.string(), nullable=False),
            pa.field("rejected", pa.string(), nullable=False),
            pa.field("tie", pa.bool_(), nullable=False),
            pa.field("margin", pa.float32(), nullable=True),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=True),
            pa.field("created_at", pa.float64(), nullable=False),
            pa.field("attributes", pa.string(), nullable=False),  # JSON object
            pa.field("prompt_vec", vector_type(dim)),
            pa.field("chosen_vec", vector_type(dim)),
            pa.field("rejected_vec", vector_type(dim)),
            pa.field("schema_version", pa.int32(), nullable=False),
            # added later (nullable, so older tables gain it on open): when the service received the row
            # (unix seconds, the receiving replica's clock). `created_at` is when it was made, which an
            # import keeps from its file; a DELETE tells what a user sent after it began by this one.
            # Null = a row stored before it was kept: its `created_at` stands in
            pa.field("received_at", pa.float64(), nullable=True),
            # added in 3 (nullable): the TRL row an import read, as it came (`pluralign.data.record.TrlRow`,
            # msgspec JSON: its message lists, implicit prompt and TRL's extra columns), so an export gives
            # it back; the text columns above stay what the models read. Null = a row whose plain text is its
            # whole form (feedback, a standard-form row without extra columns) or stored before 3
            pa.field("trl", pa.string(), nullable=True),
        ],
        metadata=_metadata(encoder_id, dim),
    )


def interaction_schema(encoder_id: str, dim: int) -> pa.Schema:
    """One row per response served: every candidate, its reward, and the history rows shown."""
    return pa.schema(
        [
            pa.field("tenant", pa.string(), nullable=False),
            pa.field("user_id", pa.string(), nullable=False),
            pa.field("response_id", pa.string(), nullable=False),
            pa.field("created_at", pa.float64(), nullable=False),
            pa.field("prompt", pa.string(), nullable=False),  # the last user message
            pa.field("messages", pa.string(), nullable=False),  # JSON list of the request's messages
            pa.field("candidates", pa.list_(pa.string()), nullable=False),
            pa.field("scores", pa.list_(pa.float32()), nullable=False),
            pa.field("chosen_index", pa.int32(), nullable=False),
            pa.field("history", pa.list_(pa.string()), nullable=False),  # pref_ids put in context
            pa.field("adapter", pa.string(), nullable=True),
            pa.field("model", pa.string(), nullable=False),
            pa.field("schema_version", pa.int32(), nullable=False),
            # added later (nullable, so older tables gain them on open): how many of `candidates`, which
            # are stored in served order (best first), were returned as `choices`; null = an older row
            # whose candidates are in generation order
            pa.field("returned", pa.int32(), nullable=True),
        ],
        metadata=_metadata(encoder_id, dim),
    )


def user_schema(encoder_id: str, dim: int) -> pa.Schema:
    """One row per (tenant, user): the user's PAL weights over prototypes and adapter reference."""
    return pa.schema(
        [
            pa.field("tenant", pa.string(), nullable=False),
            pa.field("user_id", pa.string(), nullable=False),
            pa.field("attributes", pa.string(), nullable=False),  # JSON object
            pa.field("pal_logits", pa.list_(pa.float32()), nullable=True),  # (K,) or null = prior
            pa.field("pal_version", pa.string(), nullable=True),  # the PAL checkpoint the logits fit
            pa.field("adapter", pa.string(), nullable=True),
            pa.field("n_preferences", pa.int64(), nullable=False),  # comparisons the logits were fitted on
            pa.field("n_interactions", pa.int64(), nullable=False),
            pa.field("created_at", pa.float64(), nullable=False),
            pa.field("updated_at", pa.float64(), nullable=False),
            pa.field("schema_version", pa.int32(), nullable=False),
            # added later (nullable): the user model beyond PAL's logits (`pluralign.user.UserState`,
            # msgpack-encoded and versioned itself); null = not fitted yet
            pa.field("user_model", pa.binary(), nullable=True),
            # added later (nullable): the user's stated preferences and their history
            # (`pluralign.user.stated.StatedPreferences`, msgpack); null = never stated anything
            pa.field("stated", pa.binary(), nullable=True),
        ],
        metadata=_metadata(encoder_id, dim),
    )


def stated_change_schema(encoder_id: str, dim: int) -> pa.Schema:
    """One row per change of a user's stated preferences (`pluralign.user.stated.StatedChange`):
    `feature` set to `direction` (null: cleared) in change set `version` (1, 2, ... per user)."""
    return pa.schema(
        [
            pa.field("tenant", pa.string(), nullable=False),
            pa.field("user_id", pa.string(), nullable=False),
            pa.field("version", pa.int64(), nullable=False),
            pa.field("at", pa.float64(), nullable=False),  # unix seconds
            pa.field("feature", pa.string(), nullable=False),
            pa.field("direction", pa.string(), nullable=True),  # "more", "less" or null (cleared)
            pa.field("schema_version", pa.int32(), nullable=False),
        ],
        metadata=_metadata(encoder_id, dim),
    )
