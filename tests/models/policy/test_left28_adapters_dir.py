"""Session 28: `pluralign train adapter` and the service agree on where users' adapters live.

Before: the service read `PLURALIGN_ADAPTERS_DIR` (default `<data_dir>/adapters`, ./data/adapters),
while `train adapter` without `--registry` or `--store` wrote to `PLURALIGN_ADAPTER_DIR` (one letter
less), else ~/.cache/pluralign/adapters, which the service never reads; and with `--store` it wrote
to `<store>/adapters` even where PLURALIGN_ADAPTERS_DIR pointed the service elsewhere."""

from __future__ import annotations

import pytest

from pluralign.data.io import write_jsonl
from pluralign.data.record import Preference
from pluralign.policy.adapters import AdapterRegistry
from service.settings import Settings
from training.cli import main


@pytest.fixture
def trained(make_tiny_lm, tokenizer, tmp_path, monkeypatch, capsys):
    """`train(comparisons=5, **env)`: `pluralign train adapter` for user alice of tenant acme, run in
    tmp_path without --registry; returns (exit status, stderr)."""
    base = tmp_path / "tiny"
    make_tiny_lm("tiny-dir").save_pretrained(base)
    tokenizer.save_pretrained(base)
    monkeypatch.chdir(tmp_path)
    for name in ("PLURALIGN_ADAPTERS_DIR", "PLURALIGN_ADAPTER_DIR", "PLURALIGN_DATA_DIR", "PLURALIGN_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def train(comparisons: int = 5, **env) -> tuple[int, str]:
        write_jsonl([Preference(user_id="alice", prompt=f"Pick {i}?", chosen="yes", rejected="no") for i in range(comparisons)],
                    tmp_path / "prefs.jsonl")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        code = main(["train", "adapter", "--user", "alice", "--tenant", "acme", "--data", "prefs.jsonl", "--base", str(base),
                     "--steps", "1", "--batch-size", "1"])
        return code, capsys.readouterr().err

    return train


def served_from(environ: dict) -> AdapterRegistry:
    return AdapterRegistry(Settings.load(environ).adapters_path)


def test_by_default_the_adapter_goes_where_the_service_reads(trained, tmp_path):
    code, err = trained()
    assert code == 0, err
    assert served_from({}).meta("acme", "alice").user == "alice"  # ./data/adapters, the service's default
    assert not (tmp_path / "home").exists()


def test_the_service_s_variable_moves_both(trained, tmp_path):
    code, err = trained(PLURALIGN_ADAPTERS_DIR=str(tmp_path / "shared"))
    assert code == 0, err
    assert served_from({"PLURALIGN_ADAPTERS_DIR": str(tmp_path / "shared")}).meta("acme", "alice").user == "alice"


def test_the_old_name_still_works_for_both_and_says_the_new_one(trained, tmp_path):
    old = {"PLURALIGN_ADAPTER_DIR": str(tmp_path / "old")}
    with pytest.warns(FutureWarning, match="PLURALIGN_ADAPTER_DIR is deprecated: use PLURALIGN_ADAPTERS_DIR"):
        code, err = trained(**old)
    assert code == 0, err
    with pytest.warns(FutureWarning, match="PLURALIGN_ADAPTER_DIR is deprecated: use PLURALIGN_ADAPTERS_DIR"):
        assert served_from(old).meta("acme", "alice").user == "alice"  # the service reads it there too


def test_the_two_names_for_different_folders_are_refused(trained, tmp_path):
    code, err = trained(PLURALIGN_ADAPTER_DIR=str(tmp_path / "old"), PLURALIGN_ADAPTERS_DIR=str(tmp_path / "new"))
    assert code == 2, err
    assert "pluralign: error: PLURALIGN_ADAPTER_DIR" in err and "PLURALIGN_ADAPTERS_DIR" in err, err
    assert not (tmp_path / "old").exists() and not (tmp_path / "new").exists()


def test_a_command_says_the_old_name_is_deprecated_in_one_line(tmp_path):
    """As an operator sees it: `pluralign keys list` (which reads the settings) with the old name set."""
    from tests.service.test_break26b_unknown_variables import pluralign

    (tmp_path / "data").mkdir()  # the service's data folder: `keys list` of one that does not exist is an error
    result = pluralign(tmp_path, "keys", "list", PLURALIGN_ADAPTER_DIR=str(tmp_path / "old"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.splitlines() == ["pluralign: warning: PLURALIGN_ADAPTER_DIR is deprecated: use PLURALIGN_ADAPTERS_DIR"], result.stderr


def test_an_adapter_trained_on_too_few_comparisons_to_hold_any_out_can_be_read(trained):
    """Under 5 comparisons none is held out, so the held-out accuracies were NaN, which JSON writes as
    null: `pluralign.json` then failed to load ("Expected `float`, got `null` - at `$.metrics[...]`"),
    and the service served the user the fallback, counting the adapter unusable."""
    code, err = trained(comparisons=3)
    assert code == 0, err
    meta = served_from({}).meta("acme", "alice")
    assert meta.metrics["held_out"] == 0 and meta.metrics["held_out_acc_after"] is None, meta.metrics
