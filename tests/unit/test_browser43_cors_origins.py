"""`cors_origins` set as every other setting is: its variable, and the TOML file (docs/operations.md,
"Browsers on another origin"). An origin the browser can never send is refused at start, naming it."""

from __future__ import annotations

import pytest

from service.settings import Settings


def test_cors_origins_from_its_variable_comma_separated():
    """Before: PLURALIGN_CORS_ORIGINS could not be set at all: any value (one origin, a list with
    commas, a JSON array) was "expected `array`, got `str`", so a container configured by variables
    had no way to turn CORS on."""
    one = Settings.load({"PLURALIGN_CORS_ORIGINS": "https://app.example"})
    assert one.cors_origins == ("https://app.example",)
    two = Settings.load({"PLURALIGN_CORS_ORIGINS": " https://app.example, http://localhost:5173 ,"})
    assert two.cors_origins == ("https://app.example", "http://localhost:5173")
    assert Settings.load({"PLURALIGN_CORS_ORIGINS": ""}).cors_origins == ()


def test_cors_origins_from_the_toml_file(tmp_path):
    config = tmp_path / "pluralign.toml"
    config.write_text('cors_origins = ["https://app.example", "capacitor://localhost"]\n')
    assert Settings.load({"PLURALIGN_CONFIG": str(config)}).cors_origins == ("https://app.example", "capacitor://localhost")


@pytest.mark.parametrize(("given", "meant"), [
    ("http://localhost:5173/", "http://localhost:5173"),  # a trailing slash: never matches a browser's Origin
    ("https://app.example/chat", "https://app.example"),
    ("HTTPS://App.Example", "https://app.example"),
    ("https://app.example:443", "https://app.example"),
    ("app.example", None),
])
def test_an_origin_a_browser_never_sends_is_refused_naming_it(given, meant):
    with pytest.raises(ValueError) as refused:
        Settings.load({"PLURALIGN_CORS_ORIGINS": given})
    message = str(refused.value)
    assert message.startswith("PLURALIGN_CORS_ORIGINS (setting cors_origins): "), message
    assert repr(given) in message, message
    if meant is not None:
        assert f"`{meant}`" in message, message


@pytest.mark.parametrize(("given", "meant"), [
    # reviewbr43: hosts a browser writes in another form were accepted, so CORS never matched them and pages
    # failed with no word at start: an IDN host goes out in its punycode (A-label) form, an IPv6 address
    # compressed in lower case, an IPv4 address in four decimal parts
    ("https://bücher.example", "https://xn--bcher-kva.example"),
    ("http://[0:0:0:0:0:0:0:1]:8080", "http://[::1]:8080"),
    ("http://[2001:DB8::1]", "http://[2001:db8::1]"),
    ("http://127.1:5173", "http://127.0.0.1:5173"),
    # a `*` anywhere but a whole first label is Litestar's `.*`: `https://app.example*` let in https://app.example.evil.net
    ("https://app.example*", None),
])
def test_a_host_a_browser_writes_otherwise_is_refused_naming_its_form(given, meant):
    with pytest.raises(ValueError) as refused:
        Settings.load({"PLURALIGN_CORS_ORIGINS": given})
    message = str(refused.value)
    assert repr(given) in message, message
    if meant is not None:
        assert f"`{meant}`" in message, message


def test_origins_in_a_browsers_form_are_kept():
    given = ("https://xn--bcher-kva.example", "http://[::1]:8080", "http://127.0.0.1:5173", "https://*.example.com", "*",
             "http://my_app.internal:8000", "capacitor://localhost")
    assert Settings.load({"PLURALIGN_CORS_ORIGINS": ",".join(given)}).cors_origins == given
