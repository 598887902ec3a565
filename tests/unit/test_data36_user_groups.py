"""Data session 36: `pluralign audit --user-groups FILE` checks the user ids it maps, by the service's
user-id rule (the one `--user` and `data import` take), through the real command (a subprocess)."""

from __future__ import annotations

import pytest

from pluralign.data.record import USER_ID_RULE
from tests.unit.test_newuser31_cli import one_error_line, pluralign


@pytest.mark.parametrize(("text", "named"), [
    ('{\n  "ann": "a",\n  "bob smith": "b"\n}\n', f"line 3, key 'bob smith': {USER_ID_RULE}"),
    ('{"ann": "a",\n "": "b"}', f"line 2, key '': {USER_ID_RULE}"),
    ('{"ann\\n": "a"}', f"line 1, key 'ann\\n': {USER_ID_RULE}"),
    ('{"../x": "a"}', f"line 1, key '../x': {USER_ID_RULE}"),
    ('{"' + "u" * 200 + '": "a"}', f"line 1, key '{'u' * 61}...': {USER_ID_RULE}"),  # cut to 64 characters, not echoed whole
    ('{"ann": "a",\n "ann": "b"}', "line 2, key 'ann': given twice (to 'a', then 'b'): a user is in one group"),
])
def test_a_bad_user_id_in_user_groups_is_a_usage_error_naming_the_file_line_and_key(tmp_path, text, named):
    """Before: read as given; a key that is no user id only left its user 'unassigned', and a repeated key
    silently kept its last group. The file is read before the data (here a --data that is not there)."""
    groups = tmp_path / "groups.json"
    groups.write_text(text)
    line = one_error_line(pluralign(tmp_path, "audit", "--data", str(tmp_path / "absent.jsonl"), "--group-by", "g",
                                    "--user-groups", str(groups)))
    assert line == f"pluralign: error: --user-groups {groups}: {named}", line
