"""The adapter pool on a remote generation server whose unload fails (review of session pool48): the real
`AdapterPool` and `RemoteGenerator` against a few lines of `http.server` on loopback that speak vLLM's adapter routes.

pool48 moved every drop of the pool's to a thread of its own and puts an adapter whose drop failed back in the table;
a user whose retrained adapter must wait for the old one's drop then asks again, and the old one is dropped again."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec
import pytest
from safetensors.numpy import save_file

from pluralign.policy.adapters import AdapterMeta, AdapterPool, AdapterRegistry, adapter_name, read_meta, write_meta
from pluralign.policy.remote import RemoteGenerator, RemoteGeneratorError, RemotePolicy


class _Server(BaseHTTPRequestHandler):
    """vLLM's runtime adapter routes: a load is held; an unload answers `unload_status` (200 while it works)."""

    held: set[str]
    unloads: list[str]
    unload_status: int

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        status, answer = 200, b""
        if self.path.endswith("/load_lora_adapter"):
            self.held.add(body["lora_name"])
        elif self.path.endswith("/unload_lora_adapter"):
            self.unloads.append(body["lora_name"])
            status = self.unload_status
            if status == 200 and body["lora_name"] not in self.held:  # vLLM's answer for an adapter it does not hold
                status = 404
                answer = json.dumps({"object": "error", "message": f"The lora adapter '{body['lora_name']}' cannot be "
                                     "found.", "type": "NotFoundError", "code": 404}).encode()
            elif status == 200:
                self.held.discard(body["lora_name"])
            else:
                answer = json.dumps({"object": "error", "message": "the server cannot unload adapters now",
                                     "type": "ServiceUnavailable", "code": status}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    handler = type("Handler", (_Server,), {"held": set(), "unloads": [], "unload_status": 200})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", handler
    httpd.shutdown()
    httpd.server_close()


def user_adapter(registry: AdapterRegistry, tenant: str, user: str) -> None:
    """A small LoRA adapter folder of `user`'s, as a registration leaves it (peft's two files and our metadata)."""
    import numpy as np

    folder = registry.folder(tenant, user)
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                            "target_modules": ["q_proj"], "base_model_name_or_path": "m"}))
    save_file({"base_model.model.q_proj.lora_A.weight": np.zeros((4, 8), dtype=np.float32)}, str(folder / "adapter_model.safetensors"))
    write_meta(folder, AdapterMeta(kind="user", base_model="m", shots=0, data_version="test", tenant=tenant, user=user))


def retrained(registry: AdapterRegistry, tenant: str, user: str) -> None:
    folder = registry.folder(tenant, user)
    write_meta(folder, msgspec.structs.replace(read_meta(folder), created_at=read_meta(folder).created_at + 1))


def test_a_retrained_adapter_whose_old_ones_drop_fails_is_an_error_for_its_chat_not_a_hang(server, tmp_path):
    """u's adapter is loaded on the server; u's adapter is retrained (a promotion on another replica, or one whose
    `forget` failed), and the server answers its unload with an error for as long as it lasts. Since pool48 u's chat
    waited for the old one's drop on a thread of its own, which failed and put it back; the chat asked again, dropped it
    again, and so on without end: the chat hung (a thread and an error logged per try). Now the chat that waited for
    the drop fails with the drop's error (as it did before pool48, under the lock); u's next chat tries the drop again
    and, once the server unloads it, is served the retrained adapter."""
    url, handler = server
    registry = AdapterRegistry(tmp_path / "adapters")
    user_adapter(registry, "t", "u")
    pool = AdapterPool(RemoteGenerator(url, "m", policy=RemotePolicy(max_retries=0)), registry, "m", budget_bytes=1 << 30)
    name = pool.adapter_for("t", "u")
    old = pool.host.served_name(name, registry.folder("t", "u"))  # its name on the server (remote50: its version's)
    assert name == adapter_name("t", "u") and handler.held == {old}
    retrained(registry, "t", "u")
    handler.unload_status = 503
    out: list = []

    def chat():
        try:
            out.append(pool.adapter_for("t", "u"))
        except Exception as exc:
            out.append(exc)

    thread = threading.Thread(target=chat, daemon=True)
    thread.start()
    thread.join(10)
    tries = len(handler.unloads)
    handler.unload_status = 200  # lets a hanging call end, so the test's threads do
    thread.join(10)
    assert tries == 1, f"u's chat asked the server to unload the old adapter {tries} times in 10 s"
    assert len(out) == 1 and isinstance(out[0], RemoteGeneratorError) and "503" in str(out[0]), out
    assert pool.adapter_for("t", "u") == name and handler.unloads == [old, old]
    assert handler.held == {pool.host.served_name(name, registry.folder("t", "u"))}
    assert pool.loaded[name][1] == read_meta(registry.folder("t", "u")).created_at and not pool._dropping


def test_a_users_delete_after_the_generation_server_restarted_forgets_the_adapter_it_no_longer_holds(server, tmp_path):
    """The generation server restarted (or its operator unloaded an adapter): it holds none of the adapters the service
    loaded at run time, and answers their unload 404 (vLLM: "The lora adapter '...' cannot be found"). Before (review of
    pool48) the drop raised on that answer and the adapter stayed counted as loaded: the user's DELETE, whose `forget`
    comes before its last steps (population files, the note that stops their chats in flight from storing), failed
    at each try, and an eviction of it failed at each load. Now a 404 means the server holds no such adapter: it is
    forgotten here too."""
    url, handler = server
    registry = AdapterRegistry(tmp_path / "adapters")
    user_adapter(registry, "t", "u")
    pool = AdapterPool(RemoteGenerator(url, "m", policy=RemotePolicy(max_retries=0)), registry, "m", budget_bytes=1 << 30)
    name = pool.adapter_for("t", "u")
    handler.held.clear()  # the server restarted
    registry.delete("t", "u")  # the user's DELETE: their files, then their adapter in memory
    pool.forget("t", "u")
    assert len(handler.unloads) == 1 and handler.unloads[0].startswith(f"{name}-")
    assert name not in pool.loaded and pool.host.adapters == set() and not pool._dropping
