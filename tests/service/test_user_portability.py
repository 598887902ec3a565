"""A user's export re-imports into another tenant (the same goes for another pluralign) and rebuilds
the same user model: `GET .../export?format=preferences`, then `pluralign data import` as a user
would run it, then the same PAL weights, counts and labels on the other side."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pluralign.data.io import read_preferences
from tests.service.tiny import start_service
from tests.unit.clitools import cli

PAIRS = [
    ("What should I cook tonight?", "A spicy vegetable curry.", "A plain steak."),
    ("Plan my weekend", "A quiet hike in the hills.", "A loud party downtown."),
    ("Suggest a book", "A slow literary novel.", "A fast airport thriller."),
    ("Pick a holiday", "A cabin by a lake.", "A crowded beach resort."),
    ("What music for work?", "Soft piano.", "Heavy metal."),
]


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("portable-data"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


def test_export_reimports_into_another_tenant_and_rebuilds_the_user(svc, tmp_path, capsys):
    with svc.client("acme") as acme:
        for prompt, chosen, rejected in PAIRS:
            r = acme.post("/v1/feedback", json={"type": "comparison", "user": "rita", "prompt": prompt, "chosen": chosen,
                                                "rejected": rejected, "attributes": {"segment": "calm"}})
            assert r.status_code == 201, r.text
        svc.runtime.wait_for_background()
        before = acme.get("/v1/users/rita").json()
        exported = acme.get("/v1/users/rita/export", params={"format": "preferences"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("application/x-ndjson")
    path = tmp_path / "rita.jsonl"
    path.write_bytes(exported.content)
    records, _ = read_preferences(path)  # a preference file in TRL's standard form
    assert [(r.prompt, r.chosen, r.rejected) for r in records] == PAIRS
    assert all(set(json.loads(line)) >= {"prompt", "chosen", "rejected", "user_id"} for line in exported.text.splitlines())

    # the CLI in this process (store61: a subprocess cost ~0.6 CPU-s of imports, checking no more)
    code, out, err = cli(capsys, "data", "import", "--source", "jsonl", "--path", str(path), "--url", svc.url, "--key", svc.keys["globex"])
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary == {"url": svc.url, "users": 1, "records": len(PAIRS), "stored": len(PAIRS), "already_stored": 0,
                       "left_out_same_answer": 0}
    svc.runtime.wait_for_background()
    with svc.client("globex") as globex:
        after = globex.get("/v1/users/rita").json()
    assert after["counts"]["preferences"] == before["counts"]["preferences"] == len(PAIRS)
    assert after["attributes"] == before["attributes"] == {"segment": "calm"}
    assert after["pal"]["prior"] is False
    np.testing.assert_allclose(after["pal"]["logits"], before["pal"]["logits"], atol=1e-5)  # the same user model


def test_import_names_the_bad_line_and_field(svc):
    with svc.client("acme") as acme:
        body = b'{"prompt": "p", "chosen": "c", "rejected": "r"}\n{"prompt": "p", "chosen": "c"}\n'
        r = acme.post("/v1/users/sam/import", content=body, headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "line 2.rejected"
        other = b'{"user_id": "tom", "prompt": "p", "chosen": "c", "rejected": "r"}\n'
        r = acme.post("/v1/users/sam/import", content=other)
        assert r.status_code == 400 and "tom" in r.json()["error"]["message"]
        implicit = b'{"chosen": [{"role": "user", "content": "Tea?"}, {"role": "assistant", "content": "Yes."}], ' \
                   b'"rejected": [{"role": "user", "content": "Tea?"}, {"role": "assistant", "content": "No."}], "id": "x1"}\n'
        r = acme.post("/v1/users/sam/import", content=implicit)
        assert r.status_code == 201 and len(r.json()["stored"]) == 1
        page = acme.get("/v1/users/sam/preferences").json()
    assert (page["data"][0]["prompt"], page["data"][0]["chosen"], page["data"][0]["rejected"]) == ("Tea?", "Yes.", "No.")


@pytest.mark.parametrize("row, field", [
    ({"chosen": "a", "rejected": "a\u200b"}, "line 2.rejected"),
    ({"chosen": "same", "rejected": "same"}, "line 2.rejected"),
    ({"chosen": "Yes.", "rejected": "Yes.\u3164"}, "line 2.rejected"),
    ({"chosen": "a", "rejected": "b", "margin": -1}, "line 2.margin"),
    ({"chosen": "a", "rejected": "b", "attributes": {"": "v"}}, "line 2.attributes"),
])
def test_import_refuses_what_feedback_refuses_and_stores_nothing(svc, row, field):
    body = b'{"prompt": "Q", "chosen": "fine", "rejected": "bad"}\n' + json.dumps({"prompt": "Q", **row}).encode() + b"\n"
    with svc.client("acme") as acme:
        r = acme.post("/v1/users/strict/import", content=body, headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
        assert acme.get("/v1/users/strict/preferences").status_code == 404  # nothing held: unknown


OK_ROW = b'{"prompt": "Q", "chosen": "a", "rejected": "b"}'


@pytest.mark.parametrize("body, param", [
    (b"\n\n" + OK_ROW + b"\n\n" + b'{"prompt": "Q", "chosen": "a", "rejected": "b", "source": "' + b"s" * 200 + b'"}', "line 5.source"),
    (OK_ROW + b'\n\n{"prompt": "Q", "chosen": "a", "rejected": "b", "user_id": "other"}', "line 3.user_id"),
    (OK_ROW + b'\r\n\r\n{"prompt": "Q", "chosen": "a"}', "line 3.rejected"),
    (b'{"prompt":"Q","chosen":"a\xff","rejected":"b"}', "line 1.chosen"),
    (b'\n' + OK_ROW + b'\n{"prompt":"Q","chosen":"a","rejected":"b","attributes":{"g":"\xc3"}}', "line 3.attributes"),
    (b"", "body"),
    (b"\n \n", "body"),
])
def test_import_errors_name_the_real_line_and_field(svc, body, param):
    with svc.client("acme") as acme:
        r = acme.post("/v1/users/lines/import", content=body, headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
        assert "codec" not in r.json()["error"]["message"]
        assert acme.get("/v1/users/lines/preferences").status_code == 404  # nothing held: unknown


def test_ukp_import_stores_every_judgment_but_those_of_an_argument_against_itself(svc, tmp_path, capsys):
    """`pluralign data import --source ukp_convarg1` into the real service (session reviewtrial46a; trial46a tested it
    against a stub answering as the service): UKP's judgments of an argument against the same text are left out and
    counted, the rest stored. Sent, the service refuses the user's whole import (`line 2.rejected`: the same answer)."""
    from tests.unit.clitools import cli
    from tests.unit.test_trial46a_cli import _ukp_with_a_pair_of_one_text

    ukp = _ukp_with_a_pair_of_one_text(tmp_path / "ukp")  # w1: B over A, Same. over Same.; w2: both ties
    code, out, err = cli(capsys, "data", "import", "--source", "ukp_convarg1", "--path", ukp, "--url", svc.url,
                         "--key", svc.keys["acme"])
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"url": svc.url, "users": 2, "records": 2, "stored": 2, "already_stored": 0,
                                                         "left_out_same_answer": 2}
    with svc.client("acme") as acme:
        stored = {user: [(p["chosen"], p["rejected"], p["tie"]) for p in acme.get(f"/v1/users/{user}/preferences").json()["data"]]
                  for user in ("w1", "w2")}
    assert stored == {"w1": [("B", "A", False)], "w2": [("A", "B", True)]}
