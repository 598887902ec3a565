"""Session trial57: a new user's trial with the tools people already use (Hugging Face `datasets`, httpx over the
real app). Each test is a defect found then, driven as that user drove it."""

from __future__ import annotations

import json

import pytest

from tests.service.tiny import start_service

# HuggingFaceH4/ultrafeedback_binarized's layout (the dataset of the Zephyr recipe): a text `prompt` beside `chosen`
# and `rejected` conversations that open with that prompt as a user turn, `messages` (the chosen conversation again,
# for SFT), `prompt_id` and the two scores
H4 = [{"prompt": f"How long do I boil egg {i}?", "prompt_id": f"p{i}",
       "chosen": [{"role": "user", "content": f"How long do I boil egg {i}?"}, {"role": "assistant", "content": f"{6 + i} minutes."}],
       "rejected": [{"role": "user", "content": f"How long do I boil egg {i}?"}, {"role": "assistant", "content": "An hour!"}],
       "score_chosen": 8.0, "score_rejected": 3.5} for i in range(3)]


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("trial57"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


def written_by_datasets(hf, tmp_path, rows: list[dict], name: str) -> bytes:
    """`rows` as `datasets.Dataset.from_list(rows).to_json(...)` writes them."""
    out = tmp_path / name
    hf.run("datasets.Dataset.from_list(rows).to_json(out)", rows=rows, out=str(out))
    return out.read_bytes()


def test_an_ultrafeedback_binarized_layout_imports_as_trl_reads_it_and_exports_as_it_came(svc, hf, tmp_path):
    """A text `prompt` beside conversations that hold it (HuggingFaceH4/ultrafeedback_binarized, less its `messages`)
    is read as TRL reads it (`trl.data_utils.maybe_extract_prompt`: the prompt is the answers' shared opening turns,
    the text column aside). It was a 400 naming `line 1.prompt` whose advice, "give the prompt as messages too",
    would have put the prompt in the conversation twice."""
    body = written_by_datasets(hf, tmp_path, H4, "h4.jsonl")
    with svc.client("acme") as c:
        r = c.post("/v1/users/h4user/import", content=body)
        assert r.status_code == 201 and len(r.json()["stored"]) == 3, r.text  # before: 400 `line 1.prompt`
        page = c.get("/v1/users/h4user/preferences").json()["data"]
        export = c.get("/v1/users/h4user/export", params={"format": "preferences"})
        assert export.status_code == 200, export.text
        again = c.post("/v1/users/h4user/import", content=export.content)
        assert again.status_code == 201 and again.json()["stored"] == [], again.text  # the rows held, not stored twice
    # what the models read: the user turn's text and the assistant's answers, as TRL's DPO trainer splits them
    assert sorted((p["prompt"], p["chosen"], p["rejected"]) for p in page) == [
        (f"How long do I boil egg {i}?", f"{6 + i} minutes.", "An hour!") for i in range(3)], page
    (tmp_path / "export.jsonl").write_bytes(export.content)
    loaded = hf.run("result = datasets.load_dataset('json', data_files=path, split='train', cache_dir=cache).to_list()",
                    path=str(tmp_path / "export.jsonl"), cache=str(tmp_path / "hf"))
    columns = ("prompt", "prompt_id", "chosen", "rejected", "score_chosen", "score_rejected")
    assert sorted(({k: row[k] for k in columns} for row in loaded), key=lambda row: row["prompt_id"]) == H4  # as it came


def test_a_prompt_beside_answers_that_do_not_hold_it_is_still_refused_with_how_to_mend_it(svc):
    """Answers of one assistant turn each share no prompt: TRL would read an empty one, so the row stays a 400 naming
    `line 1.prompt`, which says to give the prompt as messages."""
    row = {"prompt": "Tea?", "chosen": [{"role": "assistant", "content": "Yes."}], "rejected": [{"role": "assistant", "content": "No."}]}
    with svc.client("acme") as c:
        r = c.post("/v1/users/h4bad/import", content=json.dumps(row))
    assert r.status_code == 400 and r.json()["error"]["param"] == "line 1.prompt", r.text
    assert "give the prompt as messages too" in r.json()["error"]["message"], r.text


def test_the_sft_messages_column_of_a_preference_dataset_is_named_for_what_it_is(svc, hf, tmp_path):
    """HuggingFaceH4/ultrafeedback_binarized carries `messages` (the chosen conversation again, for SFT) beside its
    preference columns. The 400 said only "unknown field"; it now says what the column is and to drop it."""
    body = written_by_datasets(hf, tmp_path, [{**row, "messages": row["chosen"]} for row in H4], "h4-messages.jsonl")
    with svc.client("acme") as c:
        r = c.post("/v1/users/h4msg/import", content=body)
        assert c.get("/v1/users/h4msg").status_code == 404  # nothing of it stored
    assert r.status_code == 400 and r.json()["error"]["param"] == "line 1.messages", r.text
    message = r.json()["error"]["message"]
    assert "SFT" in message and "remove_columns" in message, message  # before: "unknown field (README, ...)"


@pytest.mark.parametrize(("method", "path", "kwargs", "param", "meant"), [
    ("POST", "/v1/feedback", {"json": {"type": "comparision", "user": "typo57", "prompt": "p", "chosen": "a", "rejected": "b"}},
     "type", "comparison"),
    ("POST", "/v1/users/typo57/next-comparison", {"json": {"target": "populaton"}}, "target", "population"),
    ("POST", "/v1/chat/completions", {"json": {"model": "pluralign", "messages": [{"role": "usr", "content": "Hi"}]}},
     "messages[0].role", "user"),
    ("GET", "/v1/users/alice57/export", {"params": {"format": "preference"}}, "format", "preferences"),
    ("PATCH", "/v1/users/typo57/stated-preferences", {"json": {"preferences": {"lenght": "less"}}}, "preferences.lenght", "length"),
])
def test_a_misspelt_value_of_a_closed_set_is_answered_with_the_closest_one(svc, method, path, kwargs, param, meant):
    """A misspelt field name was answered "did you mean `user`?", a misspelt value of a field that takes a few
    (a feedback `type`, next-comparison's `target`, a message's `role`, the export's `format`, a stated feature) only
    with the whole list; both now name the closest, nothing done."""
    with svc.client("acme") as c:
        r = c.request(method, path, **kwargs)
        assert c.get("/v1/users/typo57").status_code == 404  # nothing stored
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert f"(did you mean `{meant}`?)" in r.json()["error"]["message"], r.text


def test_a_misspelt_column_of_an_import_is_named_with_the_one_meant(svc):
    """An import's row with `choosen`, or `user` (the chat and feedback routes' name for the end user) beside its
    answers: the 400 said "missing required field" or "unknown field" alone; it now names the column meant."""
    rows = {"chosen": {"prompt": "Tea?", "choosen": "Yes.", "rejected": "No."},
            "user": {"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "user": "typo57b"}}
    with svc.client("acme") as c:
        missing = c.post("/v1/users/typo57b/import", content=json.dumps(rows["chosen"]))
        unknown = c.post("/v1/users/typo57b/import", content=json.dumps(rows["user"]))
        assert c.get("/v1/users/typo57b").status_code == 404  # nothing stored
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "line 1.chosen", missing.text
    assert "the row has `choosen` (did you mean `chosen`?)" in missing.json()["error"]["message"], missing.text
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "line 1.user", unknown.text
    assert "(did you mean `user_id`?)" in unknown.json()["error"]["message"], unknown.text
