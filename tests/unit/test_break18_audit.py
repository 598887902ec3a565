"""What a hostile pass on `pluralign audit` and the trainers' `--k` found (break session 18): a
misspelled `--group-by`, bad rows in `audit --data`, a malformed `--user-groups` file and a `--k`
larger than the data each ran on (or ran silently wrong); each is now a one-line error naming the
option or file, line and field, exit code 2, before anything is embedded or trained.

The tests call the CLI's `main` with real files in a temp dir, as tests/unit/test_break18_cli.py does."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO
from tests.unit.clitools import cli, write_jsonl


def rows(n_users: int = 2, per_user: int = 6, attributes=lambda u, i: {"segment": f"s{u % 2}"}) -> list[dict]:
    return [
        {"user_id": f"u{u}", "prompt": f"Tell me about topic {i}", "chosen": f"Short {i}.", "rejected": f"A much longer answer {i}.",
         "attributes": attributes(u, i)}
        for u in range(n_users) for i in range(per_user)
    ]






@pytest.fixture
def cache() -> list[str]:
    """The suite's shared embedding cache (MiniLM vectors), so the audits that run embed little."""
    return ["--cache", str(REPO / ".cache" / "pluralign" / "test-embeddings.sqlite")]


# -- 1. a --group-by no comparison has ---------------------------------------------------------------


def test_a_misspelled_group_by_is_an_error_listing_the_attributes_there_are(tmp_path, capsys, cache):
    data = write_jsonl(tmp_path / "p.jsonl", rows(attributes=lambda u, i: {"segment": f"s{u % 2}", "plan": "pro"}))
    code, out, err = cli(capsys, "audit", "--data", data, "--group-by", "segmnt", "--json", *cache)
    assert code == 2 and out == "" and "Traceback" not in err, err
    (line,) = err.strip().splitlines()
    assert line.startswith("pluralign: error: --group-by segmnt:") and "'segmnt'" in line
    assert "plan, segment" in line  # the attributes that do exist
    assert "pal_prototype (with --pal)" in line and "em_cluster (with --em)" in line


def test_group_by_an_attribute_some_comparisons_lack_puts_those_in_no_value(tmp_path, capsys, cache):
    # u0 and u2 carry the segment, u1 and u3 do not: the audit runs, and the rest are in NO_VALUE (" (no value)")
    data = write_jsonl(tmp_path / "p.jsonl", rows(4, attributes=lambda u, i: {"segment": "s0"} if u % 2 == 0 else {}))
    code, out, err = cli(capsys, "audit", "--data", data, "--group-by", "segment", "--min-comparisons", "1", "--json", *cache)
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert {g["group"]: g["users"] for g in report["groups"]} == {"s0": 2, " (no value)": 2}


def test_a_store_audit_by_a_misspelled_attribute_names_it_and_lists_comparison_and_user_attributes(tmp_path, capsys):
    """`audit --store` (what the admin route's job runs): the names come from stored comparisons and users."""
    import time

    import numpy as np

    from pluralign.fairness.audit import UnknownGroupBy
    from pluralign.fairness.store_source import comparisons_from_store
    from pluralign.store import Store, StoredPreference
    from pluralign.store.tables import UserRecord

    store = Store(str(tmp_path / "db"), "enc", 4)
    stored = [
        StoredPreference(tenant="acme", user_id=f"u{u}", pref_id=f"p{u}{i}", prompt=f"q{i}", chosen="yes", rejected="no",
                         kind="comparison", created_at=float(i), attributes={"segment": "s0"} if u == 0 else {})
        for u in range(2) for i in range(3)
    ]
    vectors = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    store.add_preferences(stored, vectors, vectors, -vectors)
    store.put_user(UserRecord(tenant="acme", user_id="u1", created_at=time.time(), updated_at=time.time(), attributes={"country": "fr"}))
    with pytest.raises(UnknownGroupBy, match="'segmnt'.*country, segment") as caught:
        comparisons_from_store(str(tmp_path / "db"), "segmnt")
    assert caught.value.available == ["country", "segment"]
    # an attribute only users carry is a group; comparisons of users without it are in NO_VALUE
    assert sorted(comparisons_from_store(str(tmp_path / "db"), "country").groups) == [" (no value)", "fr"]
    code, _, err = cli(capsys, "audit", "--store", str(tmp_path / "db"), "--group-by", "segmnt", "--json")
    assert code == 2 and err.startswith("pluralign: error: --group-by segmnt: no stored comparison or user has") and "Traceback" not in err



def test_a_misspelt_group_by_lists_a_stored_name_s_control_characters_escaped_on_one_line(tmp_path, capsys):
    """Review of newsvc55: a name stored with a newline (before feedback refused control characters) was listed as
    stored, so the error took two lines and the service, which reads an audit job's error from its worker's last line,
    answered a misspelt `group_by` with a 422 quoting "ment" rather than the 400 naming it. Listed escaped now."""
    import numpy as np

    from pluralign.store import Store, StoredPreference

    store = Store(str(tmp_path / "db"), "enc", 4)
    stored = [StoredPreference(tenant="acme", user_id="u0", pref_id="p0", prompt="q", chosen="yes", rejected="no",
                               kind="comparison", created_at=1.0, attributes={"seg\nment": "s0", "la\x1b[2Jng": "fr"})]
    vectors = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    store.add_preferences(stored, vectors, vectors, -vectors)
    code, _, err = cli(capsys, "audit", "--store", str(tmp_path / "db"), "--group-by", "segmnt", "--json")
    assert code == 2 and err.count("\n") == 1 and "\x1b" not in err, err
    assert err.rstrip().endswith("attributes that exist: la\\x1b[2Jng, seg\\nment"), err


def test_a_misspelt_group_by_holding_a_newline_is_named_escaped_on_one_line(tmp_path, capsys):
    """Review of review newsvc55: the error named a misspelt `--group-by` holding a newline as it was, over two lines,
    so the service, reading an audit job's error from its worker's last line, answered a 422 quoting the name's second
    half, not the 400 naming `group_by`. Named with its control characters escaped now, as the stored names are."""
    import numpy as np

    from pluralign.store import Store, StoredPreference

    store = Store(str(tmp_path / "db"), "enc", 4)
    stored = [StoredPreference(tenant="acme", user_id="u0", pref_id="p0", prompt="q", chosen="yes", rejected="no",
                               kind="comparison", created_at=1.0, attributes={"segment": "s0"})]
    vectors = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    store.add_preferences(stored, vectors, vectors, -vectors)
    code, _, err = cli(capsys, "audit", "--store", str(tmp_path / "db"), "--group-by", "seg\nmnt\u202e", "--json")
    assert code == 2 and err.count("\n") == 1 and "\u202e" not in err, err
    assert err.startswith("pluralign: error: --group-by seg\\nmnt\\u202e: no stored comparison or user has"), err


# -- 2. bad rows in audit --data ----------------------------------------------------------------------


def test_a_bad_row_in_audit_data_fails_naming_the_file_line_and_field(tmp_path, capsys, cache):
    good = rows()
    bad = [*good[:2], {**good[2], "chosen": 3}, *good[3:]]  # line 3: `chosen` is a number
    data = write_jsonl(tmp_path / "p.jsonl", bad)
    code, out, err = cli(capsys, "audit", "--data", data, "--group-by", "segment", "--json", *cache)
    assert code == 2 and out == "" and "Traceback" not in err, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"pluralign: error: --data {data}: line 3, field `chosen`:") and "--skip-bad" in line
    # a line that is not JSON at all is named too
    data = write_jsonl(tmp_path / "q.jsonl", [*good[:4], "{not json", *good[4:]])
    code, out, err = cli(capsys, "audit", "--data", data, "--group-by", "segment", "--json", *cache)
    assert code == 2 and out == "" and f"--data {data}: line 5: malformed JSON" in err, err


def test_audit_skip_bad_skips_bad_rows_and_says_how_many(tmp_path, capsys, cache):
    good = rows()
    data = write_jsonl(tmp_path / "p.jsonl", [*good[:2], {**good[2], "chosen": 3}, "{not json", *good[3:]])
    code, out, err = cli(capsys, "audit", "--data", data, "--group-by", "segment", "--skip-bad", "--json", *cache)
    assert code == 0, err
    assert "skipped 2 bad rows" in err
    assert json.loads(out.strip().splitlines()[-1])["comparisons"] == len(good) - 1


# -- 3. a malformed --user-groups file ----------------------------------------------------------------


@pytest.mark.parametrize("text, named", [
    ('{\n  "u0": "a",\n  "u1": "b",\n}\n', "line 4, column 1: malformed JSON"),  # a trailing comma
    ('{\n  "u0": "a",\n  "u1": 7\n}\n', "line 3, field `u1`: expected a group name (a string), got a number (7)"),
    ('{"u0": "a",\n "u1": null}', "line 2, field `u1`: expected a group name (a string), got null"),
    ('{"u0": "a", "u1": {"group": "b"}}', "line 1, field `u1`: expected a group name (a string), got an object"),
    # review session 44: a blank name was a group of its own, written as nothing (now names are trimmed: "")
    ('{"u0": "a",\n "u1": " \\u00a0"}', "line 2, field `u1`: a group name must not be empty (it has no visible character)"),
    ('\n["u0", "a"]\n', "line 2: expected a JSON object user_id -> group, got an array"),
    ("", "is empty: expected a JSON object user_id -> group name"),  # 25b: was "line 1, column 1: malformed JSON"
    ("{}", "maps no user to a group"),
    ('{"alice": "a", "bob": "b"}', "none of its 2 users is among the 2 users audited (it maps 'alice'; the data has 'u0')"),
])
def test_a_malformed_user_groups_file_is_an_error_naming_the_file_line_and_field(tmp_path, capsys, cache, text, named):
    data = write_jsonl(tmp_path / "p.jsonl", rows())
    groups = tmp_path / "groups.json"
    groups.write_text(text)
    code, out, err = cli(capsys, "audit", "--data", data, "--group-by", "cluster", "--user-groups", str(groups), "--json", *cache)
    assert code == 2 and out == "" and "Traceback" not in err, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"pluralign: error: --user-groups {groups}: ") and named in line, line


def test_a_user_groups_file_that_is_not_utf8_names_the_line(tmp_path, capsys, cache):
    data = write_jsonl(tmp_path / "p.jsonl", rows())
    groups = tmp_path / "groups.json"
    groups.write_bytes(b'{"u0": "a",\n "u1": "caf\xe9"}')
    code, _, err = cli(capsys, "audit", "--data", data, "--group-by", "cluster", "--user-groups", str(groups), "--json", *cache)
    assert code == 2 and f"--user-groups {groups}: line 2: not valid UTF-8 (byte 0xe9)" in err, err


def test_a_good_user_groups_file_groups_the_users_it_names_and_the_rest_have_no_value(tmp_path, capsys, cache):
    """The users a `--user-groups` file does not name are in NO_VALUE (`" (no value)"`), as the service's audits put
    users without the attribute. Before (until session 44) they were in `unassigned`, which is also a group name the file
    may give (here u1's): the two kinds of users were one group."""
    from pluralign.fairness.audit import NO_VALUE

    data = write_jsonl(tmp_path / "p.jsonl", rows(6))  # two users a group: a group of one is suppressed (session 49)
    groups = tmp_path / "groups.json"
    groups.write_text('{"u0": "a", "u3": "a", "u1": "unassigned", "u4": "unassigned", "someone-else": "c"}')
    code, out, err = cli(capsys, "audit", "--data", data, "--group-by", "cluster", "--user-groups", str(groups),
                         "--min-comparisons", "1", "--json", *cache)
    assert code == 0, err
    assert {g["group"]: g["users"] for g in json.loads(out.strip().splitlines()[-1])["groups"]} == {"a": 2, "unassigned": 2, NO_VALUE: 2}


def test_a_user_groups_file_cannot_put_its_users_with_those_it_does_not_name(tmp_path, capsys, cache):
    """A group name in the file is read as an attribute's value is (`answer_key`: trimmed), so the file cannot give
    NO_VALUE itself: `" (no value)"` (its leading space) is the group `(no value)`, apart from the users the file does
    not name; and `" a "` is the group `a`, as a client's value `" a "` is. Before (review session 44) the file's
    `" (no value)"` and the users it did not name were one group, as `unassigned` had been until session 44.
    The text table (no `--json`) tells them apart too: a value quoted, NO_VALUE written `(without a value)`; before
    (wire44b) it wrote `(no value)` for both, the group's one space to the right, and `worst group  (no value)`."""
    from pluralign.fairness.audit import NO_VALUE

    data = write_jsonl(tmp_path / "p.jsonl", rows(6))  # two users a group: a group of one is suppressed (session 49)
    groups = tmp_path / "groups.json"
    groups.write_text('{"u0": " (no value)", "u4": " (no value)", "u1": "a", "u2": " a "}')  # u3, u5: not named
    code, out, err = cli(capsys, "audit", "--data", data, "--group-by", "cluster", "--user-groups", str(groups),
                         "--min-comparisons", "1", *cache)
    assert code == 0, err
    *table, last = out.strip().splitlines()
    report = json.loads(last)  # the report's JSON, as --json prints it alone
    assert {g["group"]: g["users"] for g in report["groups"]} == {"(no value)": 2, "a": 2, NO_VALUE: 2}
    shown = table[2 : 2 + len(report["groups"]) + 1]  # the groups' rows and `all` (the worst group and notes follow)
    rows_shown = dict(line[2:].rsplit(None, 8)[:2] for line in shown)  # a group's name as written -> its users
    assert rows_shown == {'"(no value)"': "2", '"a"': "2", "(without a value)": "2", "all": "6"}, table
    worst = {NO_VALUE: "(without a value)"}.get(report["worst_group"], f'"{report["worst_group"]}"')
    assert table[2 + len(report["groups"]) + 1].startswith(f"  worst group {worst} "), table


# -- 4. a --k larger than the data --------------------------------------------------------------------


@pytest.fixture
def no_embedding(monkeypatch):
    """Fails the test if a trainer gets as far as building its encoder (embedding, then training)."""
    def refuse(args):
        raise AssertionError("the trainer went on to embed and train")

    for name in ("train_pal", "train_em", "eval"):
        monkeypatch.setattr(f"training.commands.{name}.cached_encoder", refuse)


@pytest.mark.parametrize("trainer", ["pal", "em"])
@pytest.mark.parametrize("ks, named", [(["50"], "--k 50:"), (["2", "5", "50"], "--k 5 50:")])
def test_a_k_above_the_number_of_training_users_is_refused_before_training(tmp_path, capsys, no_embedding, trainer, ks, named):
    data = write_jsonl(tmp_path / "p.jsonl", rows(4, per_user=8))
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "train", trainer, "--protocol", "file", "--data", data, "--k", *ks, "--out", str(out))
    assert code == 2 and stdout == "" and "Traceback" not in err, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"pluralign: error: {named} more than the 4 training users") and "at most" in line, line
    assert not out.exists() or list(out.iterdir()) == []  # nothing trained, nothing saved


@pytest.mark.skipif(not (REPO.parent / "shared" / "data" / "anthropic_persona").is_dir(), reason="shared persona data not present")
def test_eval_refuses_a_k_above_the_number_of_training_users_the_same_way(capsys, no_embedding):
    code, _, err = cli(capsys, "eval", "--model", "em", "--k", "5000", "--protocol", "persona", "--groups", "2",
                       "--data-dir", str(REPO.parent / "shared" / "data"))
    assert code == 2 and err.startswith("pluralign: error: --k 5000: more than the ") and "training users" in err, err


def test_k_equal_to_the_number_of_users_trains_and_the_search_stops_there(tmp_path, capsys, cache):
    data = write_jsonl(tmp_path / "p.jsonl", rows(2, per_user=8))
    code, out, err = cli(capsys, "train", "em", "--protocol", "file", "--data", data, "--k", "2", "--out", str(tmp_path / "em2"),
                         "--quiet", *cache)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["k"] == 2
    # without --k the search tries K = 1, 2 on two users, never 3 (it used to, as --k-max 12 allowed)
    code, out, err = cli(capsys, "train", "em", "--protocol", "file", "--data", data, "--out", str(tmp_path / "em"), "--quiet", *cache)
    assert code == 0, err
    assert sorted(json.loads(out.strip().splitlines()[-1])["k_criterion"]) == ["1", "2"]
    assert "K = 1..2" in err


def test_the_k_search_on_few_users_stops_at_their_number_and_refuses_larger_candidates():
    from pluralign.reward.model_selection import KSearch, TooManyComponents

    assert KSearch(k_max=12).for_users(3) == KSearch(k_max=3)  # what `eval` and train without --k search
    assert KSearch(k_max=2).for_users(3) == KSearch(k_max=2)
    assert KSearch(candidates=(1, 3)).for_users(3).candidates == (1, 3)
    with pytest.raises(TooManyComponents, match="K = 4, 9 is more than the 3 training users"):
        KSearch(candidates=(2, 9, 4)).for_users(3)


def test_ukps_own_unknown_stance_is_not_the_group_of_comparisons_without_one(tmp_path, shared_data):
    """The real UKPConvArg1 import writes `worker_stance: unknown` for a worker who gave none (half of them); a tenant's
    other comparisons, with no `worker_stance` at all, were put in the audit's group "unknown" too: one group of two
    kinds of users, its figures a mix. Now comparisons with no value are the group NO_VALUE, a name no value can have."""
    import numpy as np

    from pluralign.data.ukp import load_ukp
    from pluralign.fairness.audit import NO_VALUE
    from pluralign.fairness.store_source import comparisons_from_store
    from pluralign.store import Store, StoredPreference

    folder = tmp_path / "ukp"
    folder.mkdir()
    (folder / "topic.xml").symlink_to(shared_data / "ukp_convarg1" / "UKPConvArg1-full-XML" / "is-porn-wrong-_yes-porn-is-wrong.xml")
    records, _ = load_ukp(folder)
    records = [r for r in records if not r.tie][:300]
    stances = {r.user_id: r.attributes["worker_stance"] for r in records}
    assert "unknown" in stances.values() and len(set(stances.values())) > 1  # UKP's own value, beside real stances
    store = Store(str(tmp_path / "db"), "enc", 4)
    stored = [StoredPreference(tenant="acme", user_id=r.user_id, pref_id=f"u{i}", prompt=r.prompt, chosen=r.chosen, rejected=r.rejected,
                               kind="comparison", created_at=float(i), attributes=r.attributes) for i, r in enumerate(records)]
    stored += [StoredPreference(tenant="acme", user_id=f"chat{u}", pref_id=f"c{u}{i}", prompt=f"q{i}", chosen="yes", rejected="no",
                                kind="comparison", created_at=1000.0 + i) for u in range(2) for i in range(3)]
    vectors = np.random.default_rng(0).standard_normal((len(stored), 4)).astype(np.float32)
    store.add_preferences(stored, vectors, vectors, -vectors)
    c = comparisons_from_store(str(tmp_path / "db"), "worker_stance")
    members = {name: {c.users[u] for u in set(c.user[c.group == g].tolist())} for g, name in enumerate(c.groups)}
    assert members[NO_VALUE] == {"acme/chat0", "acme/chat1"}
    assert members["unknown"] == {f"acme/{u}" for u, s in stances.items() if s == "unknown"}
    assert NO_VALUE.strip() != NO_VALUE  # no value has it: labels are trimmed (`answer_key`)


def test_a_line_or_paragraph_separator_in_a_name_is_escaped_so_the_error_stays_one_line(tmp_path, capsys):
    """Review of left56: a name holding U+2028 LINE SEPARATOR or U+2029 PARAGRAPH SEPARATOR (no control character,
    which feedback took) was repeated as it was, and the job runner reads a worker's lines with `str.splitlines`,
    which ends a line at each: a misspelt `group_by` of a tenant storing such a name was a 422 `audit_failed` quoting
    the names' last fragment ("ment"), not the 400 naming `group_by`. Both separators are written as their escapes,
    in the stored names listed and in the `--group-by` named."""
    import numpy as np

    from pluralign.store import Store, StoredPreference

    store = Store(str(tmp_path / "db"), "enc", 4)
    stored = [StoredPreference(tenant="acme", user_id="u0", pref_id="p0", prompt="q", chosen="yes", rejected="no",
                               kind="comparison", created_at=1.0, attributes={"seg\u2028ment": "s0"})]
    vectors = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    store.add_preferences(stored, vectors, vectors, -vectors)
    code, _, err = cli(capsys, "audit", "--store", str(tmp_path / "db"), "--group-by", "s\u2029mnt", "--json")
    assert code == 2 and len(err.splitlines()) == 1, err.splitlines()
    assert err.startswith("pluralign: error: --group-by s\\u2029mnt: no stored comparison or user has"), err
    assert err.rstrip().endswith("attributes that exist: seg\\u2028ment"), err
