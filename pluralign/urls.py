"""The base URL of a server the library talks to (`RemoteGenerator`, `RemoteEncoder`), checked before any request, and
the credentials of URLs left out of what is printed (`redacted`).

Standard library only: the service's settings check it before anything heavy is imported (`Settings.check_models`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

HIDDEN = "***"
# RFC 3986's authority: scheme "://" [userinfo "@"] host; the userinfo's characters (no "/", "?", "#" or space; nor a
# quote, which ends a value that `repr` printed). A password runs to the authority's last "@", as `urlsplit` reads it
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s/?#@:'\"]*)(?P<password>:[^\s/?#'\"]*)?@")
# a query parameter that carries a credential: `?api_key=`, `access_token=`, S3's presigned `X-Amz-Signature=` and
# `X-Amz-Credential=`, Azure's SAS `sig=`
_QUERY_SECRET = re.compile(r"(?P<name>[?&](?:[\w.-]*(?:key|token|secret|password|passwd|signature|credential)|sig)=)(?P<value>[^&#:,;()\s'\"]*)",
                           re.IGNORECASE)


def redacted(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` (a refusal message, a log line) with the credentials of every URL in it hidden: a password
    (`https://user:secret@host` -> `https://user:***@host`), a user name alone (`https://token@host`: a token as
    GitHub's are given), a query parameter named for a key, token, secret, password, signature or credential; and each
    of `secrets` of 4 characters or more (a setting's key given on its own) replaced by `***`."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{HIDDEN}@" if m["password"] else f"{m['scheme']}{HIDDEN}@", text)
    text = _QUERY_SECRET.sub(lambda m: m["name"] + HIDDEN, text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, HIDDEN)
    return text


def base_url_problem(url: str) -> str | None:
    """Why `url` is not the base URL of an HTTP server (`http://127.0.0.1:8000/v1`: scheme http or https, a host, a port
    that is a number), or None. The `openai` client takes anything, '' included, and each request then fails as a
    "Connection error." naming nothing (RFC 3986's parts, as `urllib.parse.urlsplit` reads them)."""
    if url != url.strip():  # `urlsplit` drops leading spaces; the client does not
        return "it has spaces around it"
    try:
        parts = urlsplit(url)
        _ = parts.port  # ValueError for a port that is no number, or out of range
    except ValueError as exc:  # "Invalid IPv6 URL", "Port could not be cast to integer value as 'x'"
        return str(exc)
    if parts.scheme.lower() not in ("http", "https"):
        return f"its scheme is {parts.scheme!r}" if parts.scheme else "it has no scheme"
    if not parts.hostname:
        return "it names no host"
    return None


def check_base_url(url: str) -> None:
    """ValueError naming `base_url` unless `url` is the base URL of an HTTP server (`base_url_problem`)."""
    if problem := base_url_problem(url):
        raise ValueError(f"`base_url` must be an http:// or https:// URL naming its host (`http://127.0.0.1:8000/v1`), "
                         f"got {redacted(repr(url))}: {problem}")
