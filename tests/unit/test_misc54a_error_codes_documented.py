"""Review misc54a: docs/api.md's list of error `type`s and `code`s lacked 415, 417 and `expectation_failed`, and codes the
service had sent for sessions (`method_not_allowed`, `permission_denied`, `conflict`, ...). Every `type` and `code` the
service's source can send is now documented: the API's in docs/api.md, an admin route's in docs/api.md or docs/admin.md."""

from __future__ import annotations

import re
from pathlib import Path

from service.errors import ERROR_CODES, ERROR_TYPES

ROOT = Path(__file__).resolve().parents[2]
# the forms a code is given in: `code="x"`, `"code": "x"`, `code = "x"`, a (status, code) pair
_CODE = re.compile(r'\bcode\s*=\s*"([a-z_]+)"|"code":\s*"([a-z_]+)"|\(\d{3}, "([a-z_]+)"\)')
# codes passed by position, each with the source text that sends it (so a changed call fails here, not silently)
POSITIONAL = {"text_refused": ("service/encoders.py", '"text_refused")'),
              "client_closed_request": ("service/errors.py", '"body", "client_closed_request")')}
SOURCES = [*sorted((ROOT / "service").rglob("*.py")), ROOT / "training" / "commands" / "serve.py"]


def sent_codes() -> dict[str, set[str]]:
    """Each code the service's source gives an error, with the files that give it."""
    found: dict[str, set[str]] = {code: {"service/errors.py"} for code in ERROR_CODES.values()}
    for path in SOURCES:
        for match in _CODE.finditer(path.read_text()):
            code = next(group for group in match.groups() if group)
            found.setdefault(code, set()).add(str(path.relative_to(ROOT)))
    for code, (path, text) in POSITIONAL.items():
        assert text in (ROOT / path).read_text(), f"{path} no longer sends {code} as {text}: update POSITIONAL"
        found.setdefault(code, set()).add(path)
    return found


def test_every_error_code_the_service_sends_is_documented():
    api, admin = (ROOT / "docs" / "api.md").read_text(), (ROOT / "docs" / "admin.md").read_text()
    found = sent_codes()
    assert {"expectation_failed", "unsupported_media_type", "invalid_json", "text_refused"} <= set(found), sorted(found)
    missing = []
    for code, paths in sorted(found.items()):
        admin_only = all(p.startswith("service/admin/") for p in paths)
        docs = api + admin if admin_only else api
        if not re.search(rf"[`\"]{code}[`\"]|code: {code}\b", docs):  # as a code is written: not a word of prose
            missing.append(f"{code} ({', '.join(sorted(paths))})")
    assert not missing, f"error codes the service sends that its docs do not name: {missing}"


def test_every_error_type_and_its_status_is_in_the_api_s_list():
    api = (ROOT / "docs" / "api.md").read_text()
    listed = re.search(r"`type` follows the status\s*\((.*?)\);\s*`code`", api, re.S)
    assert listed, "docs/api.md's sentence listing the error types moved"
    for status, kind in ERROR_TYPES.items():
        assert re.search(rf"`{kind}` [^`]*\b{status}\b", listed[1]), f"{status} {kind} is not in docs/api.md's list: {listed[1]}"
