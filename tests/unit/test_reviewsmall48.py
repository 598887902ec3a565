"""Review of session small48: what its checks of an emptied setting left open."""

from __future__ import annotations

import re

import pytest

NO_URL = ["openai:", "openai: ", "openai:localhost:8000/v1", "openai:ftp://gen/v1", "openai:http://", "openai:http://[::1/v1",
          "openai:http://gen:port/v1"]


@pytest.mark.parametrize("name", NO_URL)
def test_an_openai_generator_or_encoder_without_a_server_url_is_named_at_once(tmp_path, name):
    """small48 named PLURALIGN_GENERATOR= (read as the working folder), but `openai:` with no URL after it (what
    `PLURALIGN_GENERATOR=openai:$VLLM_URL` gives with VLLM_URL unset) or one no HTTP client can reach was taken: the
    service started, and every chat was a 500 "internal error" (the log: "generation server at  unreachable (2 retries)");
    the encoder's failed at start only after its imports ("embeddings server at : Connection error.")."""
    from pluralign.embed.remote import RemoteEncoder
    from pluralign.policy.remote import RemoteGenerator
    from service.runtime import make_generator
    from service.settings import Settings

    for variable, field in (("PLURALIGN_GENERATOR", "generator"), ("PLURALIGN_ENCODER", "encoder")):
        settings = Settings.load({variable: name, "PLURALIGN_DATA_DIR": str(tmp_path / "data")})
        with pytest.raises(ValueError, match=rf"^{variable} \(setting {field}\): `openai:URL` needs the server's http:// or "
                                             rf"https:// URL \(`openai:http://127\.0\.0\.1:8000/v1`\), got {re.escape(repr(name))}: "):
            settings.check_models()
    with pytest.raises(ValueError, match=r"^PLURALIGN_GENERATOR \(setting generator\): `openai:URL` needs"):
        make_generator(name)  # Runtime.build's
    url = name.removeprefix("openai:")
    for remote in (lambda: RemoteGenerator(url, "m"), lambda: RemoteEncoder(url, "m")):  # the library's, before any request
        with pytest.raises(ValueError, match=r"^`base_url` must be an http:// or https:// URL naming its host"):
            remote()


def test_a_server_url_is_still_taken(tmp_path):
    from service.runtime import make_generator
    from service.settings import Settings

    for url in ("http://127.0.0.1:8000/v1", "HTTPS://gen.internal/v1/", "http://[::1]:8000"):
        Settings.load({"PLURALIGN_GENERATOR": f"openai:{url}", "PLURALIGN_ENCODER": f"openai:{url}",
                       "PLURALIGN_DATA_DIR": str(tmp_path / "data")}).check_models()
        assert make_generator(f"openai:{url}").base_url == url.rstrip("/")
