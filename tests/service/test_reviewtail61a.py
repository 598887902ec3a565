"""What tail61a's moves to slow targets left unguarded in the default suite (review tail61a's mutation checks):
- an adapter save asking the hub for the base model's config (`save_adapter`'s `save_embedding_layers=False`): the
  entry-point test in test_cli_process.py checks the process is offline, not that a save asks nothing; the slow
  fresh-process save (`make test-cli`) did. Here in-process, the hub's check counted (~0.1 CPU-s against ~8);
- a service sharing its replica index with another process: its /health, a DELETE's 503 naming the setting, and both
  ending once the other process's row goes stale. tests/service/test_tail61a_clocks.py checks `index_shared` at the
  library level only; the slow two-replica flow (test_review37b_replicas.py, `make test-scaleout`) checked the service.
  Here one service, the other process's row written into the shared store as its pass would."""

from __future__ import annotations

import logging
import time
import types

import lancedb
import pyarrow as pa
import pytest

import pluralign.store.clocks as clocks
from pluralign.policy.adapters import AdapterMeta, save_adapter
from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_break20_delete import GONE, MARKER, give_comparisons
from tests.service.test_left27b_began import prompts
from tests.service.test_replica37_clock_skew import compare_clocks
from tests.service.test_replicas43_counts import write_row

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a replica DELETE's wait for readers: tests/service/conftest.py


def counts_metric(client) -> float:
    lines = client.get("/metrics").text.splitlines()
    return next(float(line.split()[1]) for line in lines if line.startswith("pluralign_replica_counts_disagree "))


def test_saving_an_adapter_asks_the_hub_nothing(tiny_generator_dir, tmp_path, monkeypatch):
    """A served adapter names a hub id as its base model; peft's default save looks that id up on the hub (or warns
    it could not, offline) to see whether the vocabulary grew. LoRA leaves it alone, so `save_adapter` says so."""
    import peft.utils.save_and_load as peft_save
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    asked: list[str] = []
    monkeypatch.setattr(peft_save, "check_file_exists_on_hf_hub", lambda repo, name, **kw: asked.append(repo))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_generator_dir)), LoraConfig(r=2, target_modules=["q_proj"]))
    meta = AdapterMeta(kind="user", base_model="HuggingFaceTB/SmolLM2-135M-Instruct", shots=0, data_version="x")
    save_adapter(model, tmp_path / "adapter", meta)
    assert asked == []
    assert (tmp_path / "adapter" / "adapter_config.json").exists()


def test_a_service_whose_replica_index_another_process_writes_refuses_deletes_until_that_row_is_stale(serve, tmp_path, monkeypatch):
    """Also the scaled-away replica of the same slow file: a day-old row of replica 2 (a 5 s skew) is no skew at the
    start; once replica 2 writes again with PLURALIGN_REPLICAS=3, /health, /metrics and one error say so, until its row
    goes stale too (a warning)."""
    store = str(tmp_path / "shared-lancedb")
    lancedb.connect(store).create_table(clocks.TABLE, pa.table(
        {"replica": [2], "at": [time.time() - 86_400], "ahead_s": [5.0], "instance": ["gone"], "replicas": [None], "pal": [None],
         "pal_weights": [None], "pal_model": [None]}, schema=clocks.clock_schema()))
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS, store_uri=store, replicas=2, replica_index=0, store_sync_ms=200)
    logged: list[tuple[int, str]] = []  # the app's logging set-up replaces the root's handlers (caplog's too)
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: logged.append((record.levelno, record.getMessage()))
    with server, svc.client("acme") as acme:
        monkeypatch.setattr(logging.getLogger("pluralign.deletions"), "handlers", [handler])
        give_comparisons(acme, GONE, "tea", MARKER, n=2)
        compare_clocks(svc)  # its own row written
        assert acme.get("/health").json()["clocks"] is None and counts_metric(acme) == 0.0  # the day-old row: no skew

        for _ in range(2):  # replica 2 back with PLURALIGN_REPLICAS=3: said once, not at every pass
            write_row(store, 2, 3, f"d:{'c' * 32}:{'2' * 32}")
            compare_clocks(svc)
        assert "replica 2 runs with PLURALIGN_REPLICAS=3" in (acme.get("/health").json()["replicas"] or "")
        assert counts_metric(acme) == 1.0
        errors = [m for level, m in logged if level == logging.ERROR and "PLURALIGN_REPLICAS" in m]
        assert len(errors) == 1 and "PLURALIGN_REPLICAS=3" in errors[0], logged
        for _ in range(2):  # another process as replica 0 writes the row between this one's passes
            write_row(store, 0, 2, f"d:{'b' * 32}:{'0' * 32}")
            compare_clocks(svc)
        health = acme.get("/health").json()
        assert health["status"] == "degraded" and "PLURALIGN_REPLICA_INDEX" in (health["clocks"] or ""), health
        r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 503 and r.json()["error"]["code"] == "clocks_disagree", r.text
        assert "replica 0" in r.json()["error"]["message"] and "PLURALIGN_REPLICA_INDEX" in r.json()["error"]["message"]
        assert len(prompts(acme, GONE)) == 2  # nothing deleted
        assert len([m for level, m in logged if level == logging.ERROR and "DELETEs are refused until" in m]) == 1, logged

        later = time.monotonic() + 3 * 3600 + 1  # the other process stopped: its last write `stale_after_s` old
        monkeypatch.setattr(clocks, "time", types.SimpleNamespace(monotonic=lambda: later, time=time.time))
        compare_clocks(svc)
        health = acme.get("/health").json()
        assert (health["clocks"], health["replicas"], counts_metric(acme)) == (None, None, 0.0), health
        assert [m for level, m in logged if level == logging.WARNING and "agree on PLURALIGN_REPLICAS again" in m], logged
        assert acme.delete(f"/v1/users/{GONE}").status_code == 200
