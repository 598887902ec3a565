"""An operator's object-store settings, as deploy/README.md gives them, mistyped the way a first try does (session
ops53): each refused at start with one line naming the setting and what to do, nothing left in the data folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MINIO = {"PLURALIGN_STORE_URI": "s3://pluralign-test/pluralign", "PLURALIGN_STORE_ENDPOINT": "http://127.0.0.1:9000"}


def test_a_plain_http_endpoint_without_allow_http_is_refused_naming_the_setting(monkeypatch):
    """Before: `PLURALIGN_STORE_ENDPOINT=http://minio:9000` without `PLURALIGN_STORE_ALLOW_HTTP=true` loaded, and the
    start failed once the tables were opened with Lance's words alone (`pluralign: error: Invalid input, Failed to
    connect to namespace: IO { ... reqwest::Error { kind: Builder, source: BadScheme } ...`), naming no setting."""
    monkeypatch.delenv("AWS_ALLOW_HTTP", raising=False)
    with pytest.raises(ValueError, match=r"^PLURALIGN_STORE_ENDPOINT \(setting store_endpoint\): `store_allow_http` must be "
                                         r"true .*PLURALIGN_STORE_ALLOW_HTTP=true"):
        Settings.load(MINIO)
    with pytest.raises(ValueError, match=r"^PLURALIGN_STORE_ALLOW_HTTP \(setting store_allow_http\): `store_allow_http` must be true"):
        Settings.load({**MINIO, "PLURALIGN_STORE_ALLOW_HTTP": "false"})
    assert Settings.load({**MINIO, "PLURALIGN_STORE_ALLOW_HTTP": "true"}).storage_options["allow_http"] == "true"
    assert Settings.load({**MINIO, "PLURALIGN_STORE_ENDPOINT": "https://minio:9000"}).store_endpoint == "https://minio:9000"
    assert Settings.load({"PLURALIGN_STORE_ENDPOINT": "http://127.0.0.1:9000"}).store_uri is None  # a folder: the endpoint unused
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")  # Lance's own fallback for an option not given
    assert Settings.load(MINIO).store_allow_http is False


def test_serve_on_a_plain_http_endpoint_without_allow_http_stops_with_one_line(tmp_path):
    env = {**os.environ, **MINIO, "PLURALIGN_STORE_ACCESS_KEY_ID": "id", "PLURALIGN_STORE_SECRET_ACCESS_KEY": "secret"}
    env.pop("AWS_ALLOW_HTTP", None)
    env.pop("PLURALIGN_STORE_ALLOW_HTTP", None)
    done = subprocess.run([sys.executable, "-m", "training.cli", "serve", "--data-dir", str(tmp_path / "data"), "--port", "0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("pluralign: error: PLURALIGN_STORE_ENDPOINT (setting store_endpoint): `store_allow_http` "
                                  "must be true"), done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "data").exists()
