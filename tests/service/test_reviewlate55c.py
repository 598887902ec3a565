"""Review of reviewtenant55's 503 for a request the server's graceful wait cancels (`service.stopping.draining`)."""

from __future__ import annotations

import threading

from prometheus_client.parser import text_string_to_metric_families

from pluralign.store import feedback_log
from tests.service.tiny import start_service
from tests.stores import wait_for


def test_a_feedback_cut_by_the_graceful_wait_while_it_is_made_durable_is_not_told_to_send_it_again(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """A feedback whose write to the log is under way (a slow volume's fsync) when the server's graceful wait runs out:
    the log's writer goes on and the row is on disk (moved into the table at the next start), so its answer must not
    be a 503 telling the client to send it again (a comparison sent again without an Idempotency-Key is stored twice).
    Before the fix it was: 503 'the service is stopping ...: send the request again', Retry-After: 5."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    held, release = threading.Event(), threading.Event()
    write_all = feedback_log._write_all

    def slow_write(fd, data):
        if b"a slow volume" in data:
            held.set()
            release.wait(30)
        write_all(fd, data)

    monkeypatch.setattr(feedback_log, "_write_all", slow_write)
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, deletion_sweep_s=3600)
    server.server.config.timeout_graceful_shutdown = 0.3
    log = svc.runtime.ingest.log
    answers: list = []
    body = {"type": "comparison", "user": "ann", "prompt": "A drink on a slow volume?", "chosen": "Tea.", "rejected": "Coffee."}
    with svc.client("acme") as acme:
        with server:
            def post() -> None:
                try:
                    answers.append(acme.post("/v1/feedback", json=body))
                except Exception as exc:  # noqa: BLE001 (the connection closed: told to the test)
                    answers.append(exc)

            thread = threading.Thread(target=post, daemon=True)
            thread.start()
            try:
                wait_for(held.is_set, 10)
                server.server.stop()
                thread.join(5)
            finally:
                release.set()
            thread.join(10)
        wait_for(lambda: not server.thread.is_alive(), 30)
    assert answers, "no answer"
    stored = [e for e in log.oldest(100, "acme") if any(r.prompt == body["prompt"] for r in e.rows)]
    assert len(stored) == 1, stored  # the writer went on: the feedback is durable
    r = answers[0]
    if not isinstance(r, Exception):
        told_again = r.status_code == 503 and "send the request again" in r.text
        assert not told_again and "Retry-After" not in r.headers, (r.status_code, dict(r.headers), r.text)
    # counted as answered (review of flaky56): before, a 500, the metrics' count of every request the stop cut off
    counted = {(s.labels["route"], s.labels["status"]): s.value for f in text_string_to_metric_families(
        svc.runtime.metrics.render()[0].decode()) for s in f.samples if s.name == "pluralign_http_requests_total"}
    assert {status: n for (route, status), n in counted.items() if route == "/v1/feedback"} == {"503": 1.0}, counted
