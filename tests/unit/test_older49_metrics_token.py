"""The setting `metrics_token` (PLURALIGN_METRICS_TOKEN): a bearer token, refused at the start when it could be guessed
or is not one a header carries, and beside `metrics_admin_only` (which takes an admin key alone)."""

from __future__ import annotations

import pytest

from service.settings import Settings


@pytest.mark.parametrize("token", ["short", "has a space in it 0123456789", "é" * 20, "x" * 256])
def test_a_metrics_token_that_is_not_a_bearer_token_is_refused_naming_it(token):
    with pytest.raises(ValueError, match="metrics_token"):
        Settings(metrics_token=token)


def test_a_metrics_token_with_metrics_admin_only_is_refused():
    with pytest.raises(ValueError, match="metrics_admin_only"):
        Settings(metrics_token="a" * 32, metrics_admin_only=True)
    assert Settings(metrics_token="0123456789abcdef").metrics_token == "0123456789abcdef"


def test_the_token_is_read_from_the_environment():
    assert Settings.load({"PLURALIGN_METRICS_TOKEN": "f" * 64}).metrics_token == "f" * 64


def test_a_metrics_token_refused_for_its_type_is_not_repeated(tmp_path):
    """A credential, as the store's and the generator's keys are (`SECRET_SETTINGS`): a refusal names the setting and
    withholds the value. Until the review of session older49 a token written as a TOML number was repeated whole in the
    start's error (and the log that keeps it)."""
    config = tmp_path / "pluralign.toml"
    config.write_text("metrics_token = 98765432109876543210987\n")
    with pytest.raises(ValueError, match="metrics_token") as refused:
        Settings.load({"PLURALIGN_CONFIG": str(config)})
    assert "98765432109876543210987" not in str(refused.value) and "withheld" in str(refused.value)
