"""Break session 35: hostile or damaged preference files (`.jsonl.gz` bombs, damaged streams, pipes, long
unknown keys) and options given to the CLI (`pluralign data stats`, as every command reads a preference file)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

from pluralign.data.io import MAX_LINE_BYTES
from pluralign.data.record import USER_ID_RULE
from tests.unit.test_newuser31_cli import ROW, one_error_line, pluralign


def peak_rss_mb(cwd, *argv: str) -> tuple[subprocess.CompletedProcess, float]:
    """`pluralign(cwd, *argv)` run from a fresh Python whose only child it is: (its result, its peak RSS in MB)."""
    wrapper = ("import json, resource, sys; from tests.unit.test_newuser31_cli import pluralign; "
               "r = pluralign(sys.argv[1], *sys.argv[2:]); "
               "print(json.dumps([r.returncode, r.stdout, r.stderr, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    from tests.conftest import REPO

    done = subprocess.run([sys.executable, "-c", wrapper, str(cwd), *argv], cwd=REPO, capture_output=True, text=True, timeout=300)
    code, out, err, kb = json.loads(done.stdout)
    return subprocess.CompletedProcess(argv, code, out, err), kb / 1024


def test_a_gzip_bomb_of_one_endless_line_is_refused_without_reading_it_whole(tmp_path):
    """512 MiB of spaces after a row, no newline: a 0.5 MB file. Before: the line was read whole (and
    copied to strip it): ~1.1 GB resident for this file (2.1 GB for 1 GiB, 13 s), and a few MB more of
    such a file fills any machine. Now the line is refused once past MAX_LINE_BYTES, naming it."""
    path = tmp_path / "bomb.jsonl.gz"
    # one MiB of spaces compressed once and written 512 times: gzip members one after another are one stream to a
    # reader (RFC 1952, 2.2; Python's gzip, zcat); compressing the 512 MiB whole took ~3 CPU-s of this test's ~4
    spaces = gzip.compress(b" " * (1 << 20))
    with open(path, "wb") as f:
        f.write(gzip.compress(json.dumps(ROW).encode() + b"\n" + b'{"prompt": "'))
        for _ in range(512):
            f.write(spaces)
    assert path.stat().st_size < 1 << 20
    with gzip.open(path, "rb") as whole:  # what a reader gets: the row, then the line of spaces past MAX_LINE_BYTES
        assert whole.readline() == json.dumps(ROW).encode() + b"\n" and len(whole.read(MAX_LINE_BYTES + 13)) == MAX_LINE_BYTES + 13
    result, peak = peak_rss_mb(tmp_path, "data", "stats", "--source", "jsonl", "--path", str(path), "--skip-bad", "--json")
    line = one_error_line(result)
    assert line == (f"pluralign: error: --path {path}: line 2: longer than {MAX_LINE_BYTES >> 20} MiB, past any preference row "
                    "(not JSON lines, or a compressed file made to fill memory); nothing past it was read"), line
    assert peak < 200 + 3 * (MAX_LINE_BYTES >> 20), peak


def test_a_damaged_gzip_file_is_named_as_one_not_as_a_bad_row_to_skip(tmp_path):
    """A byte changed inside the compressed stream: the lines after it come out as garbage, then its CRC
    fails. Before: `line 1005: malformed JSON (...) (--skip-bad skips bad rows)`, and with --skip-bad the
    command read on to fail on the CRC instead. Now the first run names the damaged file."""
    rows = "".join(json.dumps({**ROW, "prompt": f"Tea or coffee {i}?"}) + "\n" for i in range(2000)).encode()
    data = bytearray(gzip.compress(rows))
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "damaged.jsonl.gz"
    path.write_bytes(bytes(data))
    line = one_error_line(pluralign(tmp_path, "data", "stats", "--source", "jsonl", "--path", str(path), "--json"))
    assert line.startswith(f"pluralign: error: --path {path}: line ") and "not a whole gzip file (truncated or damaged: " in line, line
    assert "--skip-bad" not in line and "malformed JSON" not in line, line


def piped(cwd, data: bytes, *argv: str) -> subprocess.CompletedProcess:
    """The CLI reading `--path /dev/stdin` with `data` written into a pipe (as `--path <(zcat f)` or `cmd |`)."""
    from tests.conftest import REPO

    env = {k: v for k, v in os.environ.items() if not k.startswith("PLURALIGN_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "training.cli", *argv, "--path", "/dev/stdin"], cwd=cwd, env=env, input=data,
                          capture_output=True, timeout=120)


def test_a_preference_file_read_from_a_pipe_is_read_whole(tmp_path):
    """`--path <(jq -c ... f)` or `... | pluralign data import --path /dev/stdin`: a pipe is read once. Before
    (since the gzip sniff opened the file twice): 2000 rows piped in counted 1947 with --skip-bad ("skipped 1
    bad row": the first 8 KB were gone with the sniff, the line cut there skipped), 3 rows "holds no preference
    rows", and a piped .jsonl.gz was "not a whole gzip file"."""
    rows = "".join(json.dumps({**ROW, "prompt": f"Tea or coffee {i}?"}) + "\n" for i in range(2000)).encode()
    for data in (rows, rows[: rows.index(b"\n") + 1], gzip.compress(rows)):
        result = piped(tmp_path, data, "data", "stats", "--source", "jsonl", "--skip-bad", "--json")
        assert result.returncode == 0 and result.stderr == b"", result
        pairs = rows[: len(data)].count(b"\n") if data[:2] != b"\x1f\x8b" else 2000
        assert json.loads(result.stdout) == {"source": "jsonl", "pairs": pairs, "judgments": pairs, "users": 1, "ties": 0}


def test_a_files_long_unknown_field_is_one_short_error_line(tmp_path):
    """Before: `--path f: line 1, field `yyy...`: Object contains unknown field `yyy...`` with the
    5,000-character key twice (10 kB of one line)."""
    path = tmp_path / "f.jsonl"
    path.write_text(json.dumps({**ROW, "y" * 5000: 1}) + "\n")
    line = one_error_line(pluralign(tmp_path, "data", "stats", "--source", "jsonl", "--path", str(path)))
    assert len(line) < 300 and line.startswith(f"pluralign: error: --path {path}: line 1, field `yyy"), line
    assert "unknown field (README, 'Preference files', names the fields a row takes)" in line, line


def test_a_blank_user_option_is_refused_naming_the_option(tmp_path):
    """`--user ''` (an unset shell variable: `--user "$NAME"`) for a TRL file. Before: `--path trl.jsonl:
    line 1: `user_id` must not be empty (...) (--skip-bad skips bad rows)`: the file's first line blamed,
    and --skip-bad offered, which skips every row; the option was never named."""
    path = tmp_path / "trl.jsonl"
    path.write_text(json.dumps({"prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}) + "\n")
    for user in ("", "  "):
        result = pluralign(tmp_path, "data", "stats", "--source", "jsonl", "--path", str(path), "--user", user)
        assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr, result
        line = result.stderr.strip().splitlines()[-1]  # after argparse's usage lines
        # the service's user-id rule (edges35's `training.common.user_id`, merged beside this test)
        assert line.startswith(f"pluralign: error: argument --user: {user!r}: {USER_ID_RULE}"), line
