"""Session trial51: a new user's `pluralign data import --url`, in-process as a user runs it (the test failed before
its fix)."""

from __future__ import annotations

from tests.unit.clitools import cli, write_jsonl

ROW = {"user_id": "ann", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}


def test_an_import_url_without_http_is_a_usage_error_that_says_how_to_write_it(capsys, tmp_path):
    """`--url localhost:8000` (the host and port `make serve` prints, without `http://`) was 'cannot reach the service
    (Request URL has an unsupported protocol 'localhost://'. ...; the same command run again stores only what the
    service does not hold)': httpx's words, and advice to run it again unchanged, which fails the same way. It is
    the URL that is wrong, before anything is sent: say so, and how to write it."""
    path = write_jsonl(tmp_path / "prefs.jsonl", [ROW])
    for url, hint in (("localhost:8000", "http://localhost:8000"), ("127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
                      ("ftp://example.org", None), ("http://", None), ("http:/127.0.0.1:8000", None)):
        code, out, err = cli(capsys, "data", "import", "--source", "jsonl", "--path", path, "--url", url, "--key", "pk-unused")
        assert code == 2 and out == "", (url, code, out, err)
        (line,) = err.strip().splitlines()
        assert line.startswith(f"pluralign: error: --url {url}: not an http:// or https:// URL"), (url, line)
        assert "cannot reach" not in line and "run again" not in line, line
        if hint:
            assert f"did you mean {hint}?" in line, line


def test_an_import_url_whose_port_or_spacing_is_wrong_is_the_same_usage_error(capsys, tmp_path):
    """Review reviewtrial51: the check above was its own parse of the URL, which took a port that is no number
    (`:800O`, a letter O), one past 65535 (`:80000`, a digit too many) and a URL pasted with a space before it as
    URLs of the service: each was still 'cannot reach the service (...; the same command run again ...)', the advice
    the check was written to end; and an empty `--url` was asked 'did you mean http://?'. The library's check of a
    base URL (`pluralign.urls.base_url_problem`) knows each of these: it is the one used."""
    path = write_jsonl(tmp_path / "prefs.jsonl", [ROW])
    for url, problem in (("http://127.0.0.1:800O", "Port could not be cast"), ("http://127.0.0.1:80000", "Port out of range"),
                         (" http://127.0.0.1:8000", "spaces around it"), ("", "no scheme")):
        code, out, err = cli(capsys, "data", "import", "--source", "jsonl", "--path", path, "--url", url, "--key", "pk-unused")
        assert code == 2 and out == "", (url, code, out, err)
        (line,) = err.strip().splitlines()
        assert line.startswith(f"pluralign: error: --url {url}: not an http:// or https:// URL"), (url, line)
        assert problem in line and "nothing was sent" in line, (url, line)
        assert "cannot reach" not in line and "run again" not in line and "did you mean http://?" not in line, line
