"""Review of trial58: what its `tenants users` warning and its prompt-column hint got wrong.

- `pluralign tenants users` of a tenant with an empty first page read the key file to tell whether the tenant shows
  anywhere (trial58's warning); a key file it cannot read (damaged, unreadable) made the listing itself fail (exit 2,
  no page), where it never read the key file before and docs/admin.md says the page is printed and the exit is 0.
- A row whose prompt is under another column was told `ds.rename_column(<the first column no row takes>, 'prompt')`:
  a question's id `qid` (a number) before its `question`; a column holding a quote was quoted into Python that does
  not parse (`'it's'`), and one cut to 64 characters was named by its cut form, which no dataset has."""

from __future__ import annotations

import ast
import re

import pytest

from service.auth import KeyRing
from tests.unit.clitools import cli, write_jsonl


def test_an_unreadable_key_file_leaves_the_users_page_printed(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.delenv("PLURALIGN_STORE_URI", raising=False)
    monkeypatch.delenv("PLURALIGN_KEYS_FILE", raising=False)
    (data / "api_keys.json").write_text("{not json")  # damaged by a hand edit
    code, out, err = cli(capsys, "tenants", "users", "--tenant", "acme", "--data-dir", str(data))
    assert (code, out) == (0, '{"users":0,"next":null}\n'), err
    assert err.startswith("pluralign: warning: cannot tell whether tenant 'acme' shows here: ") and "api_keys.json" in err, err
    assert "shows nowhere" not in err  # no key read: not said to have none


def test_a_key_file_that_reads_keeps_its_warning(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.delenv("PLURALIGN_STORE_URI", raising=False)
    monkeypatch.delenv("PLURALIGN_KEYS_FILE", raising=False)
    KeyRing(data / "api_keys.json").issue("acme")
    code, out, err = cli(capsys, "tenants", "users", "--tenant", "acmee", "--data-dir", str(data))
    assert (code, out) == (0, '{"users":0,"next":null}\n') and "tenant 'acmee' shows nowhere here" in err, err


def _hint(tmp_path, capsys, row: dict) -> str:
    path = write_jsonl(tmp_path / "rows.jsonl", [row])
    code, out, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", path, "--user", "ann")
    assert code == 2 and out == "" and "field `prompt`: missing" in err, err
    return err


@pytest.mark.parametrize(("row", "renamed"), [
    # a question's id (a number) before its question
    ({"qid": 3, "question": "How do I exit vim?", "chosen": ":q", "rejected": "Unplug it."}, "question"),
    # Alpaca's empty `input` beside its `instruction`, in either order
    ({"input": "", "instruction": "Name a fruit.", "chosen": "Apple.", "rejected": "Rock."}, "instruction"),
    ({"system": "Be brief.", "question": "2 + 2?", "chosen": "4.", "rejected": "5."}, "question"),  # Intel/orca_dpo_pairs
    ({"it's": "Name a fruit.", "chosen": "Apple.", "rejected": "Rock."}, "it's"),
])
def test_the_rename_names_the_column_holding_text_in_python_that_runs(tmp_path, capsys, row, renamed):
    err = _hint(tmp_path, capsys, row)
    call = re.search(r"\(`datasets`: (ds\.rename_column\(.*?\))\)", err)
    assert call, err
    tree = ast.parse(call[1], mode="eval")  # Python that parses, naming the column
    assert [ast.literal_eval(a) for a in tree.body.args] == [renamed, "prompt"], err


def test_no_rename_is_shown_for_a_column_cut_short_or_none_holding_text(tmp_path, capsys):
    err = _hint(tmp_path, capsys, {"x" * 80: "Name a fruit.", "chosen": "Apple.", "rejected": "Rock."})
    assert "rename_column" not in err and "if it holds the prompt, name it `prompt`" in err, err
    err = _hint(tmp_path, capsys, {"qid": 3, "chosen": "Apple.", "rejected": "Rock."})
    assert "rename_column" not in err and "the row's `qid` is a column no row takes" in err, err


def test_a_tenant_seen_only_in_its_removal_or_its_jobs_gets_no_warning(tmp_path, capsys, monkeypatch):
    """What `tenants remove` counts as seen (`tenant_seen`) is not called a typo by `tenants users` either."""
    from service.tenants import begin_removal

    data = tmp_path / "data"
    (data / "jobs" / "data" / "initech").mkdir(parents=True)  # an adapter job's snapshots of one of its users
    monkeypatch.delenv("PLURALIGN_STORE_URI", raising=False)
    monkeypatch.delenv("PLURALIGN_KEYS_FILE", raising=False)
    begin_removal(data, KeyRing(data / "api_keys.json"), "globex")
    for tenant in ("globex", "initech"):
        code, out, err = cli(capsys, "tenants", "users", "--tenant", tenant, "--data-dir", str(data))
        assert (code, out, err) == (0, '{"users":0,"next":null}\n', ""), (tenant, err)
