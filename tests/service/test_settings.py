"""Settings: defaults < TOML file < PLURALIGN_* variables < explicit overrides; bad values refused."""

from __future__ import annotations

import pytest

from service.settings import Settings


def test_settings_layers(tmp_path):
    toml = tmp_path / "pluralign.toml"
    toml.write_text('data_dir = "/srv/pluralign"\ncandidates = 6\nshots = 2\n')
    env = {"PLURALIGN_CONFIG": str(toml), "PLURALIGN_SHOTS": "3", "PLURALIGN_RERANK": "true"}
    settings = Settings.load(env, candidates=5)
    assert (settings.data_dir, settings.candidates, settings.shots, settings.rerank) == ("/srv/pluralign", 5, 3, True)
    assert settings.lancedb_uri == "/srv/pluralign/lancedb" and str(settings.pal_path) == "/srv/pluralign/pal"
    assert Settings.load({}).data_dir == "./data"


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="candidates"):
        Settings.load({"PLURALIGN_CANDIDATES": "many"})
    with pytest.raises(ValueError, match="at least 2"):
        Settings.load({"PLURALIGN_CANDIDATES": "1"})
    with pytest.raises(ValueError, match="unknown field"):
        Settings.load({}, colour="blue")
    with pytest.raises(ValueError, match="compare_target"):
        Settings.load({"PLURALIGN_COMPARE_TARGET": "everything"})
    assert Settings.load({"PLURALIGN_COMPARE_TARGET": "coefficients"}).compare_target == "coefficients"


def test_object_store_settings_become_lance_storage_options():
    env = {
        "PLURALIGN_STORE_URI": "s3://bucket/pluralign", "PLURALIGN_STORE_ENDPOINT": "http://127.0.0.1:9000",
        "PLURALIGN_STORE_ALLOW_HTTP": "true", "PLURALIGN_STORE_ACCESS_KEY_ID": "id", "PLURALIGN_STORE_SECRET_ACCESS_KEY": "secret",
    }
    settings = Settings.load(env)
    assert settings.lancedb_uri == "s3://bucket/pluralign"
    assert settings.storage_options == {
        "aws_endpoint": "http://127.0.0.1:9000", "allow_http": "true", "aws_access_key_id": "id", "aws_secret_access_key": "secret",
        # object_store's own bounds (30 s a request, retried for 180 s) held a request on a hung store for minutes
        "timeout": "10000ms", "connect_timeout": "5000ms", "client_max_retries": "3", "client_retry_timeout": "10",
    }
    quick = Settings.load({**env, "PLURALIGN_STORE_TIMEOUT_S": "1.5", "PLURALIGN_STORE_RETRIES": "0"}).storage_options
    assert (quick["timeout"], quick["connect_timeout"], quick["client_max_retries"], quick["client_retry_timeout"]) == ("1500ms", "1500ms", "0", "2")
    for name, value in (("PLURALIGN_STORE_TIMEOUT_S", "0"), ("PLURALIGN_STORE_TIMEOUT_S", "nan"), ("PLURALIGN_STORE_RETRIES", "-1")):
        with pytest.raises(ValueError, match=name.removeprefix("PLURALIGN_").lower()):
            Settings.load({**env, name: value})
    assert Settings.load({}).storage_options == {}
    with pytest.raises(ValueError, match="store_allow_http"):
        Settings.load({"PLURALIGN_STORE_ALLOW_HTTP": "perhaps"})


def test_a_store_timeout_too_short_for_any_request_is_refused_at_start(tmp_path):
    """Before: PLURALIGN_STORE_TIMEOUT_S=0.0001 was accepted and became a 1 ms timeout that failed every
    request to the store (each read and write 503 'did not answer in time'). Now one line naming the
    variable and the floor, exit 2, before a model loads or the data folder is made."""
    import os
    import subprocess
    import sys

    from service.settings import MIN_STORE_TIMEOUT_S

    with pytest.raises(ValueError, match=f"`store_timeout_s` must be at least {MIN_STORE_TIMEOUT_S:g}"):
        Settings.load({"PLURALIGN_STORE_TIMEOUT_S": "0.05"})
    assert Settings.load({"PLURALIGN_STORE_TIMEOUT_S": str(MIN_STORE_TIMEOUT_S)}).store_timeout_s == MIN_STORE_TIMEOUT_S
    env = {**os.environ, "PLURALIGN_STORE_URI": "s3://bucket/pluralign", "PLURALIGN_STORE_TIMEOUT_S": "0.0001",
           # were it accepted: a closed port on loopback, not AWS
           "PLURALIGN_STORE_ENDPOINT": "http://127.0.0.1:1", "PLURALIGN_STORE_ALLOW_HTTP": "true", "AWS_EC2_METADATA_DISABLED": "true"}
    result = subprocess.run([sys.executable, "-m", "training.cli", "serve", "--data-dir", str(tmp_path / "data"), "--port", "0"],
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("pluralign: error: PLURALIGN_STORE_TIMEOUT_S (setting store_timeout_s): "), result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "data").exists()


def test_replica_settings():
    shared = {"PLURALIGN_STORE_URI": "/srv/store", "PLURALIGN_REPLICAS": "2"}
    assert Settings.load({**shared, "PLURALIGN_REPLICA_INDEX": "1"}).sync_seconds == 1.0  # several: reads look for others' commits
    assert Settings.load({}).sync_seconds is None
    assert Settings.load({**shared, "PLURALIGN_STORE_SYNC_MS": "250"}).sync_seconds == 0.25
    with pytest.raises(ValueError, match="replica_index"):
        Settings.load({**shared, "PLURALIGN_REPLICA_INDEX": "2"})
    with pytest.raises(ValueError, match="store_uri"):
        Settings.load({"PLURALIGN_REPLICAS": "2"})


def test_a_store_cache_beyond_any_machine_is_refused_naming_the_variable():
    """PLURALIGN_STORE_CACHE_MB above what LanceDB's session takes (a 64-bit count of bytes) was accepted,
    and the start failed once the models were loaded with a traceback ending 'OverflowError: int too big to
    convert', naming no setting. Now refused with the other bad values (0, negative, not a whole number)."""
    for value, problem in (("0", "at least 1"), ("-1", "at least 1"), ("1.5", "expected `int`"), ("lots", "expected `int`"),
                           ("100000000000000000000", "at most")):
        with pytest.raises(ValueError, match=f"PLURALIGN_STORE_CACHE_MB \\(setting store_cache_mb\\): .*{problem}"):
            Settings.load({"PLURALIGN_STORE_CACHE_MB": value})
    assert Settings.load({"PLURALIGN_STORE_CACHE_MB": "1"}).store_cache_mb == 1
