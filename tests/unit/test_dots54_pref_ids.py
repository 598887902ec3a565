"""Review dots54: a row's `pref_id` a URL client resolves as a dot segment (`..`, `.`, `a/../..`). Its retraction,
DELETE /v1/users/{user_id}/preferences/{pref_id}, is then sent by curl, httpx and requests as the DELETE of the user
(tests/service/test_dots54_pref_ids.py): no preference file, `pluralign data import` and `Preference` take one."""

from __future__ import annotations

import pytest

from pluralign.data.io import read_preferences
from pluralign.data.record import Preference, PreferenceError, pref_id_problem
from tests.unit.clitools import cli, write_jsonl

ROW = {"user_id": "ann", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}
# what a URL client resolves (tested in review dots54): curl, httpx and requests remove `.` and `..` segments, whole
# or between `/`, percent-encoded by `quote(safe="")` or not (`.` is unreserved), after cutting the path at `?` or `#`;
# fetch in browsers and Node (the WHATWG URL parser) also reads `\` as `/` and `%2e` as `.`
CLIMBING = ["..", "a/../..", ".", "a/..", "../../bob", "a/./b", "..#x", "x/..?y", "a\\..\\..", "%2E%2E", ".%2e", "%2e"]
# sent percent-encoded whole, as docs/api.md says, each reaches its own row; `#`, `?`, `%` sent as they are cut or
# decode the id (at worst another row of the same user, whose id the 200 names), no client climbs with them
SAFE = ["...", "a..b", ".a", "x/y", "a#b", "#", "a?b", "?..", "a#../..", "%61", "%", "a\\b", "uuid-0f3c"]


@pytest.mark.parametrize("pref_id", CLIMBING)
def test_a_climbing_pref_id_is_refused_by_the_cli_naming_line_and_field_before_anything_is_sent(tmp_path, capsys, pref_id):
    path = write_jsonl(tmp_path / "prefs.jsonl", [ROW, {**ROW, "prompt": "Milk?", "pref_id": pref_id}])
    code, out, err = cli(capsys, "data", "import", "--source", "jsonl", "--path", path,
                         "--url", "http://127.0.0.1:9", "--key", "pk-unused")  # nothing answers there: nothing was sent
    assert code == 2 and out == "", (code, out, err)
    assert f"{path}: line 2, field `pref_id`: " in err and "a URL client resolves it" in err, err
    with pytest.raises(ValueError, match="`pref_id` may not hold a path segment"):
        Preference(user_id="ann", prompt="Milk?", chosen="Tea.", rejected="Coffee.", pref_id=pref_id)


def test_a_parquet_file_is_refused_the_same(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "prefs.parquet"
    pq.write_table(pa.Table.from_pylist([{**ROW, "pref_id": "ok"}, {**ROW, "prompt": "Milk?", "pref_id": ".."}]), path)
    with pytest.raises(PreferenceError) as caught:
        read_preferences(str(path))
    assert (caught.value.line, caught.value.field) == (2, "pref_id"), caught.value


def test_ids_no_client_climbs_with_are_taken_and_every_climbing_one_is_still_well_formed(tmp_path):
    from pluralign.data.record import pref_id_climbs

    path = write_jsonl(tmp_path / "prefs.jsonl", [{**ROW, "prompt": f"Q{i}?", "pref_id": p} for i, p in enumerate(SAFE)])
    assert [p.pref_id for p in read_preferences(path)[0]] == SAFE
    assert not any(pref_id_climbs(p) for p in SAFE)
    # the rule of an id to look up (an export, a retraction) takes what an older release stored
    assert all(pref_id_problem(p) is None and pref_id_climbs(p) for p in CLIMBING)
