"""Request bodies whose optional fields take an explicit null as "not given".

A client library that sends every field, null where unset (OpenAI-style SDKs, pydantic's `model_dump()`
without `exclude_none`), sends `"tie": null` or `"attributes": null` as readily as `"margin": null`. Each
optional field of a body built on `NullMeansDefault` is typed `X | None` with its default (so the OpenAPI
document says null is taken), and a null becomes that default when the body is decoded: the handlers see
`tie=False`, `attributes={}`, never None. A field where null means something else (a stated preference's
null clears it) is not optional in this sense and keeps its own type."""

from __future__ import annotations

from functools import cache

import msgspec

from pluralign.data.record import Base


@cache
def _defaults(cls: type) -> tuple[tuple[str, object, object], ...]:
    """(name, default, default_factory) of each field of `cls` that has a default other than None."""
    return tuple((f.name, f.default, f.default_factory) for f in msgspec.structs.fields(cls)
                 if f.default is not None and (f.default is not msgspec.NODEFAULT or f.default_factory is not msgspec.NODEFAULT))


class NullMeansDefault(Base):
    """Base of request bodies: an optional field sent as null takes its default (`{}`, False, ...), as when absent."""

    def __post_init__(self) -> None:
        for name, default, factory in _defaults(type(self)):
            if getattr(self, name) is None:
                setattr(self, name, factory() if default is msgspec.NODEFAULT else default)
