"""The import route takes the key/value attributes `datasets` writes back from pluralign's Parquet (session trial60)."""

from __future__ import annotations


def test_an_import_line_with_attributes_as_key_value_pairs_stores_them_as_labels(serve):
    """Before: a line of a `datasets` `to_json` of an exported Parquet file, `"attributes": [{"key": "stance",
    "value": "pro"}]`, was a 400, "`line 1.attributes`: expected an object of labels". Now it stores the labels."""
    _, server, service = serve()
    body = (b'{"prompt": "Q?", "chosen": "Short.", "rejected": "A longer answer.", '
            b'"attributes": [{"key": "stance", "value": "pro"}, {"key": "age", "value": null}]}\n')
    with server, service.client("acme") as c:
        r = c.post("/v1/users/kv/import", content=body, headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 201, r.text
        rows = c.get("/v1/users/kv/preferences").json()["data"]
        assert [row["attributes"] for row in rows] == [{"stance": "pro"}]
        twice = body.replace(b'"age", "value": null', b'"stance", "value": "con"')
        r = c.post("/v1/users/kv2/import", content=twice, headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "line 1.attributes", r.text
        assert "`stance` given 2 times" in r.json()["error"]["message"], r.text
