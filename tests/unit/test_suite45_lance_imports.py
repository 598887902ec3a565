"""lancedb imported with its REST client's validators built at first call (`pluralign.store.lance_imports`):
a call validates as pydantic's own decorator does, and pydantic is left as it was."""

from __future__ import annotations

import pydantic
import pytest
from pydantic.validate_call_decorator import validate_call as pydantics_own

from pluralign.store.lance_imports import validate_call_at_first_call


def test_a_deferred_validator_validates_every_call_as_pydantics_own_and_is_built_once():
    built = []

    def counting(func=None, /, **options):
        built.append(options)
        return pydantics_own(func, **options)

    deferred = validate_call_at_first_call(counting)

    class Api:  # as the generated client writes it: methods, bare and with options
        @deferred
        def describe(self, table: pydantic.StrictStr, limit: int = 10) -> str:
            return f"{table}:{limit}"

        @deferred(validate_return=True)
        def count(self, table: pydantic.StrictStr) -> int:
            return table  # not an int: the return is validated too

    assert built == []  # nothing built as the class is defined
    api = Api()
    assert api.describe("prefs", limit="3") == "prefs:3"  # coerced as pydantic does
    with pytest.raises(pydantic.ValidationError, match="valid string"):
        api.describe(5)
    assert built == [{}]  # once, for every call after
    assert Api.describe.__name__ == "describe"
    with pytest.raises(pydantic.ValidationError):
        api.count("prefs")
    assert built == [{}, {"validate_return": True}]


def test_a_store_import_leaves_pydantic_as_it_was_and_the_rest_client_still_validates():
    import pluralign.store.tables  # noqa: F401  (lancedb through `import_lancedb`, unless this worker had it already)

    assert pydantic.validate_call is pydantics_own
    from lance_namespace_urllib3_client.api.table_api import TableApi

    with pytest.raises(pydantic.ValidationError):
        TableApi().describe_table(5, None)  # validated before any request is made
