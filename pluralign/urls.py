"""The base URL of a server the library talks to (`RemoteGenerator`, `RemoteEncoder`), checked before any request, and
the credentials of URLs left out of what is printed (`redacted`).

Standard library only: the service's settings check it before anything heavy is imported (`Settings.check_models`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

HIDDEN = "***"
# RFC 3986's authority: scheme "://" [userinfo "@"] host. The userinfo is read as running to the last "@" before a space,
# not as RFC 3986 bounds it (no "/", "?" or "#"; `urlsplit` likewise): a password or token holding one unencoded (base64's
# "/", a "#") is what a user gives and what makes the URL refused, so what is printed (review remote49: such a password
# was printed whole, the RFC's reading finding no userinfo). An "@" in a URL's path or query hides its host too: the
# safe side
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>\S*)@")
_NOT_A_USER = re.compile(r"[/?#'\"\\]")  # a user name shown before the hidden password holds none of these
# a query parameter that carries a credential: `?api_key=`, `access_token=`, S3's presigned `X-Amz-Signature=` and
# `X-Amz-Credential=`, Azure's SAS `sig=`
_QUERY_SECRET = re.compile(r"(?P<name>[?&](?:[\w.-]*(?:key|token|secret|password|passwd|signature|credential)|sig)=)(?P<value>[^&#:,;()\s'\"]*)",
                           re.IGNORECASE)


def redacted(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` (a refusal message, a log line) with the credentials of every URL in it hidden: a password
    (`https://user:secret@host` -> `https://user:***@host`), a user name alone (`https://token@host`: a token as
    GitHub's are given), a query parameter named for a key, token, secret, password, signature or credential; and each
    of `secrets` of 4 characters or more (a setting's key given on its own) replaced by `***`."""
    text = _USERINFO.sub(_hide_userinfo, text)
    text = _QUERY_SECRET.sub(lambda m: m["name"] + HIDDEN, text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, HIDDEN)
    return text


def _hide_userinfo(match: re.Match) -> str:
    user, colon, _ = match["userinfo"].partition(":")
    shown = f"{user}:" if colon and not _NOT_A_USER.search(user) else ""
    return f"{match['scheme']}{shown}{HIDDEN}@"


# a port that is no number, in a URL whose userinfo a "/", "?" or "#" cut short: `https://user:ab/cd@host` reads as host
# `user`, port `ab` (the password's start), so the port's value is not repeated (review remote49)
PORT_OR_PASSWORD = ("its port is not a number, or its user name or password holds a character a URL cannot hold there: "
                    "write / ? # @ as %2F %3F %23 %40")


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
        authority = re.split(r"[/?#]", url.partition("://")[2], maxsplit=1)[0]  # as `urlsplit` reads it
        cut = "@" in url and "@" not in authority  # its userinfo cut short: the "port" may be a password's start
        return PORT_OR_PASSWORD if cut and str(exc).startswith("Port could not be cast") else str(exc)
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
