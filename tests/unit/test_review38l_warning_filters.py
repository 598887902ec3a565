"""Session 38 review: pyproject's `filterwarnings`, which makes a deprecation warned at a `pluralign`,
`service` or `training` module an error in every test, read against what our own modules warn."""

from __future__ import annotations

import warnings

import pytest

from tests.unit.clitools import cli


def test_an_old_variable_name_is_the_operators_warning_not_an_error_in_process(tmp_path, capsys, monkeypatch):
    """`PLURALIGN_ADAPTER_DIR` is still read, with a `DeprecatedVariable` (a FutureWarning, for the
    operator). `Settings.load` warns it at its caller, here `training.commands.keys`: the suite's filter
    took it for a deprecated API our code calls and raised it, so `pluralign keys list` run in-process
    failed (exit 1, the warning as its error), though run by a user it lists the keys and warns."""
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("PLURALIGN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PLURALIGN_ADAPTER_DIR", str(tmp_path / "old"))
    code, out, err = cli(capsys, "keys", "list")
    assert code == 0 and "DeprecatedVariable" not in err, err


@pytest.mark.parametrize("module, raises", [
    ("pluralign.store.versions", True), ("service.strict", True), ("training.cli", True), ("pluralign", True),
    ("lancedb.table", False), ("litestar.params", False), ("services", False), ("trainingx.cli", False), ("tests.unit.x", False),
])
def test_a_deprecation_is_an_error_only_where_our_module_is_the_caller(module, raises):
    """The filters' module pattern `(pluralign|service|training)(\\.|$)`: our packages and their modules,
    never a third-party module (a deprecation inside a library stays a warning) nor a name that only
    begins like ours."""
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warned = lambda category=category: warnings.warn_explicit("old", category, "x.py", 1, module=module, registry={})  # noqa: E731
        with warnings.catch_warnings(record=True) as seen:  # the suite's filters as they are, what passes recorded
            if raises:
                with pytest.raises(category):
                    warned()
            else:
                warned()
        assert [w.category for w in seen] == ([] if raises else [category])
