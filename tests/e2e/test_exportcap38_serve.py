"""Session exportcap38, under `pluralign serve`: an export whose client stopped reading is cut after
`export_send_timeout_s`, and its connection is closed at once. uvicorn closed a cut answer's connection by
writing what it still held first: to a client that reads nothing, never, so each cut export kept a file
descriptor of the server (and one of PLURALIGN_MAX_CONNECTIONS) until its client went."""

from __future__ import annotations

import os
import socket
import time
import uuid

import numpy as np
import pytest

from tests.e2e.test_conn37_connections import start

ROWS = 2_500
PAD = "x" * 4_000  # ~10 MB of export: more than loopback's socket buffers take


def stored_rows(data_dir) -> None:
    """A user of tenant `default` with ROWS comparisons, written into the store `pluralign serve` opens."""
    from pluralign.embed.named import encoder_identity
    from pluralign.store import Store, StoredPreference

    identity = encoder_identity("minilm-onnx")
    store = Store(str(data_dir / "lancedb"), identity.encoder_id, identity.dim)
    now = time.time()
    rows = [StoredPreference(tenant="default", user_id="big", pref_id=uuid.uuid4().hex, prompt=f"{PAD} {i}?", chosen=f"Soup {i}",
                             rejected=f"Salad {i}", kind="comparison", created_at=now + i, received_at=now) for i in range(ROWS)]
    vectors = np.zeros((ROWS, identity.dim), np.float32)
    store.add_preferences(rows, vectors, vectors, vectors)


@pytest.mark.slow  # ~15 s: a server process started
def test_a_cut_export_whose_client_stopped_reading_holds_no_descriptor(tmp_path, tiny_generator_dir):
    stored_rows(tmp_path / "data")
    proc = start(tmp_path, tiny_generator_dir, "httptools", PLURALIGN_EXPORT_SEND_TIMEOUT_S="1")
    held = []
    try:
        fds = lambda: len(os.listdir(f"/proc/{proc.proc.pid}/fd"))  # noqa: E731
        time.sleep(1)
        before = fds()
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", proc.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(f"GET /v1/users/big/export?format=preferences HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {proc.dev_key()}\r\n"
                      "Accept-Encoding: identity\r\n\r\n".encode())
            assert s.recv(12) == b"HTTP/1.1 200"
            held.append(s)
        assert fds() >= before + 3
        deadline = time.time() + 15  # cut ~1 s after the last piece was taken
        while time.time() < deadline and fds() > before:
            time.sleep(0.1)
        assert fds() <= before, (before, fds(), proc.log.read_text()[-2000:])
        assert "was cut: its client took no piece for 1 s" in proc.log.read_text()
    finally:
        for s in held:
            s.close()
        proc.stop()
