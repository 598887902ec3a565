"""`pluralign serve` with PLURALIGN_KEYS_FILE (setting keys_file, session 49: the key file replicas share on a volume)
naming a file whose folder is not there (the volume not mounted, a typo) or a folder.

In session 49 such a start went on: it made the folder, found no key there, and printed a new development key, so
every client's key was refused (401) by that replica while the others took them; a folder was "Is a directory",
naming no setting. Now the start stops at once, in one line naming the setting and the path, and makes nothing."""

from __future__ import annotations

from tests.service.test_break25b_failed_start import last_line, serve


def test_a_keys_file_in_a_missing_folder_stops_serve_naming_the_setting(tmp_path):
    data, unmounted = tmp_path / "data", tmp_path / "shared" / "keys"
    result = serve(tmp_path, data, timeout=60, PLURALIGN_KEYS_FILE=str(unmounted / "api_keys.json"))  # before: it served
    assert result.returncode == 2, result.stderr[-3000:]
    said = last_line(result)
    assert said.startswith(f"pluralign: error: PLURALIGN_KEYS_FILE (setting keys_file) {unmounted / 'api_keys.json'}: "
                           f"no such folder as {unmounted}"), said
    assert not (tmp_path / "shared").exists() and not data.exists()

    # (a folder named as the key file: `pluralign keys`, which checks it the same way, in tests/unit/test_reviewreplicas49_keys_file.py)
