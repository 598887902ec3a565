"""Session reviewtrial50: CLI inputs a user gets wrong (trial50's report left them alone); each test failed before its fix."""

from __future__ import annotations

import json

import pytest

from tests.unit.test_break37_cli import last_line, usage_error


@pytest.mark.parametrize("name", ["", "   ", "\u3000"])
def test_keys_create_with_a_blank_name_is_a_usage_error_not_a_nameless_key(tmp_path, name, capsys):
    """`keys create --name "$NAME"` with NAME unset in a script issued a key without a name, exit 0, as if a label
    had been given: the key could then be found by no name, and `keys revoke ""` refuses a blank name (it would
    name every nameless key). An explicit blank --name is now a usage error naming the option; leaving --name
    out still issues a key without one."""
    code, out, err = usage_error(capsys, "keys", "--data-dir", str(tmp_path), "create", "--tenant", "acme", "--name", name)
    assert code == 2 and out == "" and "argument --name:" in last_line(err) and "blank" in last_line(err), err
    assert not (tmp_path / "api_keys.json").exists()  # no key issued
    code, out, err = usage_error(capsys, "keys", "--data-dir", str(tmp_path), "create", "--tenant", "acme")
    assert code == 0 and json.loads(out)["name"] == "", err
