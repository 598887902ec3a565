"""Data session 36: `pluralign audit --user-groups FILE` checks the user ids it maps, by the rule of the
audited file's rows (a visible character; not the API's rule: a file's ids need not be the service's), and
refuses a user given twice, through the real command (`training.cli.main` in this process, as `pluralign` runs it: a
subprocess of its own only imported the CLI before the error, ~1-8 CPU-s a case)."""

from __future__ import annotations

import pytest

from tests.unit.test_newuser31_cli import in_this_process, one_error_line

BLANK = "a user id must not be empty (it has no visible character)"


@pytest.mark.parametrize(("text", "named"), [
    ('{\n  "ann": "a",\n  "": "b"\n}\n', f"line 3, key '': {BLANK}"),
    ('{"ann": "a",\n " \\u200b ": "b"}', f"line 2, key ' \\u200b ': {BLANK}"),
    ('{"ann": "a",\n "ann": "b"}', "line 2, key 'ann': given twice (to 'a', then 'b'): a user is in one group"),
    ('{"' + "u" * 200 + '": "a", "' + "u" * 200 + '": "b"}', f"line 1, key '{'u' * 61}...': given twice (to 'a', then 'b'): a user is in one group"),
])
def test_a_bad_user_id_in_user_groups_is_a_usage_error_naming_the_file_line_and_key(tmp_path, text, named, monkeypatch, capsys):
    """Before: read as given; a key that is no user id only left its user 'unassigned', and a repeated key
    silently kept its last group. The file is read before the data (here a --data that is not there)."""
    groups = tmp_path / "groups.json"
    groups.write_text(text)
    line = one_error_line(in_this_process(monkeypatch, capsys, tmp_path, "audit", "--data", str(tmp_path / "absent.jsonl"), "--group-by", "g",
                                                    "--user-groups", str(groups)))
    assert line == f"pluralign: error: --user-groups {groups}: {named}", line


def test_user_ids_outside_the_api_rule_that_the_audited_file_holds_are_grouped(tmp_path, capsys):
    """A preference file's user ids need not be the service's ("bob smith" is a row's `user_id` the
    library reads): `--user-groups` groups them. A first version of the check above refused them."""
    import json

    from tests.conftest import REPO
    from tests.unit.clitools import cli, write_jsonl
    from tests.unit.test_break18_audit import rows

    # two users a group: an audit shows no group of one user (session 49)
    names = {"u0": "bob smith", "u1": "../x", "u2": "ann", "u3": "bob  jones", "u4": "../y", "u5": "cat"}
    data = write_jsonl(tmp_path / "p.jsonl", [{**r, "user_id": names[r["user_id"]]} for r in rows(6)])
    groups = tmp_path / "groups.json"
    groups.write_text('{"bob smith": "a", "bob  jones": "a", "../x": "b", "../y": "b"}')
    cache = str(REPO / ".cache" / "pluralign" / "test-embeddings.sqlite")
    code, out, err = cli(capsys, "audit", "--data", data, "--group-by", "cluster", "--user-groups", str(groups),
                         "--min-comparisons", "1", "--json", "--cache", cache)
    assert code == 0, err
    assert {g["group"]: g["users"] for g in json.loads(out.strip().splitlines()[-1])["groups"]} == {"a": 2, "b": 2, " (no value)": 2}
