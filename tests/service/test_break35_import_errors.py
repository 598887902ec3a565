"""Break session 35: an import row with a long unknown key. Session 34 cut long client values in error
messages, but an import row's unknown field came back whole inside msgspec's own words."""

from __future__ import annotations

import json

from tests.service.tiny import field_named


def test_an_import_rows_long_unknown_field_is_cut_in_the_error(serve):
    """Before: a 5,000-character key made a 5.3 kB error body, its message
    "`line 2.yyy...`: Object contains unknown field `yyy` (all 5,000)"."""
    _, server, svc = serve()
    key = "y" * 5000
    rows = [{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}, {"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", key: 1}]
    with server, svc.client("acme") as c:
        r = c.post("/v1/users/ann/import", content="\n".join(map(json.dumps, rows)))
        assert r.status_code == 400 and len(r.content) < 1000, (r.status_code, len(r.content))
        message = r.json()["error"]["message"]
        assert message.startswith("`line 2.yyyy") and message.endswith("`: unknown field (README, 'Preference files', names "
                                                                        "the fields a row takes)"), message
        assert field_named(r).startswith("line 2.yyy")
