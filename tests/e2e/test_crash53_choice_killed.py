"""`pluralign serve` SIGKILLed while it records a `choice` feedback sent without an `Idempotency-Key`: after its rows
are durable in the feedback log (`FeedbackLog.append_async` returned) and before the answer is sent, so the client saw
no answer. The kill is a fault-injection hook of the test's own (`KILLED_AFTER_THE_APPEND`, armed by a file).

Restarted on the same data folder, by HTTP: the chat answered before the kill is still there to take feedback (its
interaction was stored before its answer); the client's retry of the same choice (a button clicked again, no key) is
answered from what the killed process stored (`Idempotent-Replayed: true`), so the pick is stored once; the user's
next pick on the same response (they changed their mind) is stored as a turn of its own; the export holds each once.
A guard: it held at once (`same_feedback_replay` finds the response's last turn pending in the replayed log). Slow:
two service starts and a tiny generator (~60 s on two shared cores); `make test-crash`."""

from __future__ import annotations

import contextlib
import json

import httpx
import pytest

from tests.e2e.test_e2e_serve import ServeProcess

KILLED_AFTER_THE_APPEND = """
import os, signal, sys
from pluralign.store.feedback_log import FeedbackLog

append_async = FeedbackLog.append_async

async def killed(self, rows, *args, **kwargs):
    out = await append_async(self, rows, *args, **kwargs)
    if os.path.exists(os.environ["ARMED"]) and rows and rows[0].kind == "choice":  # durable, not answered
        os.kill(os.getpid(), signal.SIGKILL)
    return out

FeedbackLog.append_async = killed
from training.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_choice_killed_before_its_answer_is_stored_once_when_clicked_again(tmp_path, tiny_generator_dir, tiny_pal_dir):
    data, armed = tmp_path / "data", tmp_path / "armed"
    env = {"PLURALIGN_CACHE_DIR": str(tmp_path / "cache")}
    proc = ServeProcess(data, tiny_generator_dir, tiny_pal_dir, code=KILLED_AFTER_THE_APPEND, ARMED=str(armed), **env)
    headers = {"Authorization": f"Bearer {proc.dev_key()}"}
    try:
        with httpx.Client(base_url=proc.url, headers=headers, timeout=120) as c:
            chat = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "cal", "n": 2, "max_tokens": 4,
                                                         "messages": [{"role": "user", "content": "Name a colour."}]})
            assert chat.status_code == 200, chat.text
            response_id = chat.json()["id"]
            assert len(chat.json()["choices"]) == 2, chat.text
            armed.touch()
            with contextlib.suppress(httpx.TransportError):  # killed before it answers
                r = c.post("/v1/feedback", json={"type": "choice", "response_id": response_id, "chosen_index": 1})
                raise AssertionError(f"answered {r.status_code} {r.text}")
        proc.killed()
    finally:
        proc.stop()
    again = ServeProcess(data, tiny_generator_dir, tiny_pal_dir, **env)
    try:
        with httpx.Client(base_url=again.url, headers=headers, timeout=120) as c:
            pick = {"type": "choice", "response_id": response_id, "chosen_index": 1}
            retried = c.post("/v1/feedback", json=pick)
            assert retried.status_code == 201 and retried.headers.get("idempotent-replayed") == "true", (retried.headers, retried.text)
            changed = c.post("/v1/feedback", json={**pick, "chosen_index": 0})  # the user's next word: a turn of its own
            assert changed.status_code == 201 and changed.headers.get("idempotent-replayed") is None, changed.text
            rows = c.get("/v1/users/cal/preferences", params={"limit": 100}).json()["data"]
            assert sorted(r["pref_id"] for r in rows) == sorted(retried.json()["stored"] + changed.json()["stored"]), rows
            assert [r["kind"] for r in rows] == ["choice", "choice"], rows
            export = [json.loads(line) for line in c.get("/v1/users/cal/export").text.splitlines()]
            assert sorted(x["pref_id"] for x in export if x["type"] == "preference") == sorted(r["pref_id"] for r in rows)
            assert [x["response_id"] for x in export if x["type"] == "interaction"] == [response_id]
    finally:
        with contextlib.suppress(Exception):
            again.stop()
