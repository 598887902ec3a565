"""Settings a start took without a rule, though no value of theirs out of range could serve (trial53): each is now
refused at start in one line naming the variable, as every other bad value is (docs/api.md, README "Use it")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]

# (variable, value, what the refusal says). Before: each loaded, and the service started on it:
BROKEN = [
    # every chat that sent no `pluralign.shots` was a 400 blaming the client: "`pluralign.shots`: must be between 0 and 16, got -1"
    ("PLURALIGN_SHOTS", "-1", "`shots` must be 0 to 16"),
    ("PLURALIGN_SHOTS", "17", "`shots` must be 0 to 16"),
    # every chat that sent no `max_tokens` was a 400 blaming the client: "`max_tokens`: must be between 1 and 1024, got 0"
    ("PLURALIGN_MAX_TOKENS", "0", "`max_tokens` must be at least 1 and at most `max_tokens_limit` (1024)"),
    ("PLURALIGN_MAX_TOKENS", "2000", "`max_tokens` must be at least 1 and at most `max_tokens_limit` (1024)"),
    ("PLURALIGN_MAX_TOKENS_LIMIT", "0", "`max_tokens_limit` must be at least 1"),  # every chat a 400
    ("PLURALIGN_MAX_BODY_BYTES", "0", "`max_body_bytes` must be at least 1"),  # every body a 413
    # the start failed once the models had loaded: "`every` must be at least 1 comparison", naming no setting
    ("PLURALIGN_ADAPTER_EVERY", "0", "`adapter_every` must be at least 1"),
    ("PLURALIGN_JOB_WORKERS", "-1", "`job_workers` must be 0 or more"),  # 0: jobs queued, none run (tests use it)
    ("PLURALIGN_COMPACT_EVERY", "-5", "`compact_every` must be at least 1"),
    ("PLURALIGN_HISTORY_CACHE_MB", "-1", "`history_cache_mb` must be 0 or more"),  # a cache of -1 MiB (-1 << 20 bytes)
    ("PLURALIGN_ADAPTER_BUDGET_MB", "-1", "`adapter_budget_mb` must be 0 or more"),
    # 0 was read as unset (the model's own context), a negative value refused every chat
    ("PLURALIGN_MAX_CONTEXT_TOKENS", "0", "`max_context_tokens` must be at least 1 when set"),
    # (review of trial53) no room left for a prompt beside the default reply's tokens: every chat that sent no
    # `max_tokens` was a 400 naming `messages`, "with max_tokens 128 it exceeds the model's context of 128 tokens"
    ("PLURALIGN_MAX_CONTEXT_TOKENS", "1", "`max_context_tokens` must be above `max_tokens` (128)"),
    ("PLURALIGN_MAX_CONTEXT_TOKENS", "128", "`max_context_tokens` must be above `max_tokens` (128)"),
]


@pytest.mark.parametrize(("variable", "value", "said"), BROKEN)
def test_a_setting_no_service_can_run_on_is_refused_naming_its_variable(variable, value, said):
    setting = variable.removeprefix("PLURALIGN_").lower()
    with pytest.raises(ValueError) as refused:
        Settings.load({variable: value})
    assert str(refused.value).startswith(f"{variable} (setting {setting}): {said[:1].lower()}{said[1:]}"), str(refused.value)


def test_the_edges_of_those_ranges_still_load():
    assert Settings.load({"PLURALIGN_SHOTS": "0"}).shots == 0
    assert Settings.load({"PLURALIGN_SHOTS": "16"}).shots == 16
    assert Settings.load({"PLURALIGN_MAX_TOKENS": "1024"}).max_tokens == 1024
    assert Settings.load({"PLURALIGN_MAX_TOKENS": "2000", "PLURALIGN_MAX_TOKENS_LIMIT": "2048"}).max_tokens == 2000
    assert Settings.load({"PLURALIGN_HISTORY_CACHE_MB": "0", "PLURALIGN_ADAPTER_BUDGET_MB": "0"}).history_cache_mb == 0
    assert Settings.load({"PLURALIGN_MAX_CONTEXT_TOKENS": "129"}).max_context_tokens == 129
    assert Settings.load({"PLURALIGN_MAX_CONTEXT_TOKENS": "2", "PLURALIGN_MAX_TOKENS": "1"}).max_context_tokens == 2
    assert Settings.load({}).max_context_tokens is None


def test_pluralign_serve_refuses_it_in_one_line_before_anything_is_made(tmp_path):
    """As the README says of a bad setting: exit 2, one line naming the variable, nothing made in the data folder
    (before: the service started, then answered every chat 400 `pluralign.shots`, a field no client had sent)."""
    env = {**os.environ, "PLURALIGN_SHOTS": "20"}
    result = subprocess.run([sys.executable, "-m", "training.cli", "serve", "--data-dir", str(tmp_path / "data"), "--port", "0"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr == "pluralign: error: PLURALIGN_SHOTS (setting shots): `shots` must be 0 to 16 (past comparisons put in a chat's context), got 20\n"
    assert not (tmp_path / "data").exists()


EMPTY_DATA_DIR = "`data_dir` is empty: name the data folder, or leave the setting out for ./data"


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_data_folder_is_refused_naming_where_it_came_from(tmp_path, value):
    """`PLURALIGN_DATA_DIR=$DATA` with DATA unset (or `data_dir = ""` in the TOML file, `--data-dir ""`) was the
    working folder itself: `pluralign serve` put its tables, key file and PAL checkpoint beside whatever was there
    (a checkout's root), as an empty PORT was port 8000 until session 40."""
    with pytest.raises(ValueError, match=f"^PLURALIGN_DATA_DIR \\(setting data_dir\\): {EMPTY_DATA_DIR}"):
        Settings.load({"PLURALIGN_DATA_DIR": value})
    (tmp_path / "pluralign.toml").write_text(f'data_dir = "{value}"\n')
    with pytest.raises(ValueError, match=f"^PLURALIGN_CONFIG {tmp_path}/pluralign.toml \\(setting data_dir\\): {EMPTY_DATA_DIR}"):
        Settings.load({"PLURALIGN_CONFIG": str(tmp_path / "pluralign.toml")})
    with pytest.raises(ValueError, match=f"^--data-dir: {EMPTY_DATA_DIR}"):
        Settings.load({}, data_dir=value)


def test_pluralign_serve_with_an_empty_data_folder_makes_nothing_in_the_working_folder(tmp_path):
    """Before: it began its first start in the working folder ("no PAL checkpoint in <cwd>/pal: training one ...")."""
    env = {**os.environ, "PLURALIGN_DATA_DIR": "", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "training.cli", "serve", "--port", "0"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr == f"pluralign: error: PLURALIGN_DATA_DIR (setting data_dir): {EMPTY_DATA_DIR}\n"
    assert list(tmp_path.iterdir()) == []


def test_a_default_max_tokens_the_models_own_context_cannot_hold_is_refused_at_start(tmp_path, tiny_generator_dir, minilm):
    """Review late53: the review of trial53 refused `max_context_tokens` at or below `max_tokens` (every chat that sent
    no `max_tokens` a 400 naming `messages`, "cannot fit the prompt budget of 0 tokens"), but only when it is set; left
    unset (the default), the context is the model's own and was not checked: with `PLURALIGN_MAX_TOKENS=4096
    PLURALIGN_MAX_TOKENS_LIMIT=4096` and a model of 4096 positions (SmolLM2's 8192 the same at 8192) `pluralign serve`
    started and answered every such chat "with max_tokens 4096 it exceeds the model's context of 4096 tokens". Refused
    once the generator is loaded and its context known, before the tables are opened, naming the setting."""
    from service.runtime import Runtime
    from tests.service.tiny import tiny_generator

    # no PAL checkpoint there: the refusal comes before one is loaded (or, before the fix, bootstrapped)
    settings = Settings(data_dir=str(tmp_path / "data"), generator=str(tiny_generator_dir), pal_dir=str(tmp_path / "pal"),
                        max_tokens=4096, max_tokens_limit=4096)
    generator = tiny_generator(tiny_generator_dir)
    assert generator.context_tokens == 4096
    with pytest.raises(ValueError, match=r"^PLURALIGN_MAX_TOKENS \(setting max_tokens\): 4096 leaves no room for a prompt in the "
                                         r"generator's context of 4096 tokens"):
        Runtime.build(settings, generator=generator, encoder=minilm)
    assert not (tmp_path / "data" / "lancedb").exists() and not (tmp_path / "pal").exists()  # before the tables and PAL
