"""Break session F63: data in and out (TRL forms, imports, exports) with the rules feedback keeps."""

from __future__ import annotations

import json

import pytest

from pluralign.data.io import json_lines, read_preference_lines, read_preferences
from pluralign.data.record import PreferenceError
from service.users.services import in_preference_file
from tests.unit.clitools import cli, write_jsonl

# pairs feedback refuses as "the same answer" (`look_key`: spacing, ligatures, presentation forms) that `answer_key` tells apart
LOOK_ALIKE = [("a b", "a\u00a0b"), ("a b", "a  b"), ("fine", "\ufb01ne"), ("Yes.\r\nNo.", "Yes.\nNo."), ("\u0644", "\ufedd")]


def _rows(chosen: str, rejected: str) -> list[dict]:
    """A good row, then the look-alike pair as a plain row (line 2) and as TRL's conversational implicit-prompt form (line 3)."""
    ask = [{"role": "user", "content": "Q?"}]
    return [{"prompt": "Q?", "chosen": "Yes.", "rejected": "No."},
            {"prompt": "Q?", "chosen": chosen, "rejected": rejected},
            {"chosen": [*ask, {"role": "assistant", "content": chosen}], "rejected": [*ask, {"role": "assistant", "content": rejected}]}]


@pytest.mark.parametrize(("chosen", "rejected"), LOOK_ALIKE)
def test_an_import_row_whose_answers_only_look_alike_is_refused_naming_line_and_field(chosen, rejected, tmp_path, capsys):
    """`POST /v1/feedback` refuses a comparison of `a b` and `a` + U+00A0 + `b` (a 400 naming `rejected`: docs/api.md
    "The same answer"), but `POST /v1/users/{id}/import` (`read_preference_lines`) and a preference file the CLI reads
    stored it as a comparison: the import read only NFC, invisible characters at either end and inside (`answer_key`),
    not spacing or the compatibility forms a font draws as letters. Each form of the row is now refused, naming its line."""
    rows = _rows(chosen, rejected)
    for line in (2, 3):
        body = "\n".join(json.dumps(r) for r in (rows[0], rows[line - 1])).encode()
        with pytest.raises(PreferenceError) as info:
            read_preference_lines(json_lines(body), default_user="u")
        assert (info.value.line, info.value.field) == (2, "rejected"), (line, str(info.value))
        assert "same answer" in str(info.value)
    path = write_jsonl(tmp_path / "p.jsonl", [{"user_id": "u", **r} for r in rows])
    records, report = read_preferences(path, skip_bad=True)
    assert len(records) == 1 and report.skipped == 2, report
    code, out, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", path, "--json")
    assert code != 0 and "line 2" in err and "rejected" in err and "same answer" in err, (code, out, err)


@pytest.mark.parametrize(("chosen", "rejected"), LOOK_ALIKE)
def test_a_stored_look_alike_pair_is_left_out_of_the_preference_export(chosen, rejected):
    """A row an older release's import stored of two answers that only look alike: `export?format=preferences` wrote it,
    and importing that file is now refused at its line (above), so the file the export is made for could not be
    imported. It is left out as a same-answer row is (`in_preference_file`); a row of two answers told apart is kept."""
    from pluralign.store.tables import StoredPreference

    def stored(c: str, r: str) -> StoredPreference:
        return StoredPreference(tenant="t", user_id="u", pref_id="p1", prompt="Q?", chosen=c, rejected=r, kind="comparison", created_at=1.0)

    assert not in_preference_file(stored(chosen, rejected))
    assert in_preference_file(stored(chosen, rejected + "!"))


def test_look_key_reads_an_answer_of_several_lines_without_a_step_per_space(monkeypatch):
    """An import now reads each row's answers by `look_key` (above). An answer of several lines went through a Python
    callback per run of whitespace, each space included (an answer of 1,616 characters in 22 lines: 0.5 ms, against
    `answer_key`'s 0.2 µs; 8,000 import lines with a line break in one answer: 158 ms of CPU against 50). A text whose
    runs are one space or line feeds only is read whole, and one that folds calls back once per run it redraws."""
    import pluralign.data.text as text

    calls = []
    spaces = text._spaces_shown
    monkeypatch.setattr(text, "_spaces_shown", lambda run: calls.append(run.group()) or spaces(run))
    answer = "A first line of words.\n- an item\n- another\n\nA paragraph after a blank line."
    assert text.look_key(answer) == answer and calls == []
    assert text.look_key(answer.replace("\n", "\r\n")) == answer and calls == ["\r\n", "\r\n", "\r\n\r\n"]
    calls.clear()
    assert text.look_key("It  is \ufb01ne.\n \nOK.") == "It is fine.\n\nOK." and calls == ["  ", "\n \n"]


def test_ukp_export_leaves_out_the_judgments_of_an_argument_against_its_look_alike(tmp_path, capsys):
    """review breakF63: `data export --source ukp_convarg1` leaves out the judgments of a pair whose two arguments are
    one answer (`_same_answer`), now by `look_key`: the file's reader refuses such a row, so a pair of `It is fine.` and
    `It is ﬁne.` written by the export made the file it wrote unreadable. Before, reverting `_same_answer` to
    `answer_key` failed no test (UKPConvArg1 has no such pair: still 75 either way)."""
    from tests.unit.test_trial46a_cli import _ukp_with_a_pair_of_one_text

    ukp = _ukp_with_a_pair_of_one_text(tmp_path / "ukp")
    xml = tmp_path / "ukp" / "topic.xml"
    xml.write_text(xml.read_text().replace("<text>Same.</text><stance>s</stance></arg1>", "<text>It is \ufb01ne.</text><stance>s</stance></arg1>")
                   .replace("<text>Same.</text>", "<text>It is fine.</text>"), encoding="utf-8")
    assert xml.read_text(encoding="utf-8").count("fine.") == 1 and xml.read_text(encoding="utf-8").count("\ufb01ne.") == 1
    out_file = tmp_path / "ukp.jsonl"
    code, out, err = cli(capsys, "data", "export", "--source", "ukp_convarg1", "--path", ukp, "--out", str(out_file))
    assert code == 0 and '"records":2' in out and '"left_out_same_answer":2' in out, out + err
    code, out, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", str(out_file), "--json")
    assert code == 0 and '"judgments":2' in out, out + err
