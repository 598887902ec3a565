"""The base URL of a server the library talks to (`RemoteGenerator`, `RemoteEncoder`), checked before any request, and
the credentials of URLs left out of what is printed (`redacted`).

Standard library only (and `idna`, httpx's encoder, for a host name not in ASCII): the service's settings check it before
anything heavy is imported (`Settings.check_models`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

HIDDEN = "***"
# RFC 3986's authority: scheme "://" [userinfo "@"] host. The userinfo is read as running to the last "@" before a space,
# not as RFC 3986 bounds it (no "/", "?" or "#"; `urlsplit` likewise): a password or token holding one unencoded (base64's
# "/", a "#") is what a user gives and what makes the URL refused, so what is printed (by the RFC's reading, which finds
# no userinfo, such a password would be printed whole). An "@" in a URL's path or query hides its host too: the
# safe side. Found by plain scans, each character looked at a bounded number of times: a regular expression for it
# (`\b[A-Za-z][A-Za-z0-9+.-]*://\S*@`) backtracks over the rest of the text at each possible scheme: 11-20 s for 64 KB
_SCHEME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+.-")
_SPACES = re.compile(r"(\s+)")
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
    text = "".join(_hide_userinfo(part) for part in _SPACES.split(text))
    return without_secrets(_QUERY_SECRET.sub(lambda m: m["name"] + HIDDEN, text), secrets)


def without_secrets(text: str, secrets: Iterable[str | None], marker: str = HIDDEN) -> str:
    """`text` with each of `secrets` of 4 characters or more replaced by `marker` (shorter ones would hide common
    words: a key set to "abc"); `redacted`'s last step, and `pluralign.store.failures.scrub`'s with its own marker."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, marker)
    return text


def _hide_userinfo(token: str) -> str:
    """`token` (no space in it) with the userinfo of its first URL, `scheme://` to the token's last "@", hidden."""
    at = token.rfind("@")
    start = 0
    while at >= 0 and (sep := token.find("://", start, at)) >= 0:
        begin = sep
        while begin > start and token[begin - 1] in _SCHEME_CHARS:
            begin -= 1
        # as `\b[A-Za-z]`: the scheme's first letter, no letter, digit or "_" before it
        first = next((i for i in range(begin, sep) if token[i].isascii() and token[i].isalpha()
                      and (i == 0 or not (token[i - 1].isalnum() or token[i - 1] == "_"))), None)
        if first is not None:
            user, colon, _ = token[sep + 3:at].partition(":")
            shown = f"{user}:" if colon and not _NOT_A_USER.search(user) else ""
            return f"{token[:sep + 3]}{shown}{HIDDEN}{token[at:]}"
        start = sep + 3
    return token


# a port that is no number, in a URL whose userinfo a "/", "?" or "#" cut short: `https://user:ab/cd@host` reads as host
# `user`, port `ab` (the password's start), so the port's value is not repeated
PORT_OR_PASSWORD = ("its port is not a number, or its user name or password holds a character a URL cannot hold there: "
                    "write / ? # @ as %2F %3F %23 %40")


def base_url_problem(url: str) -> str | None:
    """Why `url` is not the base URL of an HTTP server (`http://127.0.0.1:8000/v1`: scheme http or https, a host that
    is an address or a name a resolver can look up, a port that is a number), or None. The `openai` client takes anything, '' included, and each request then fails as a
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
    try:  # as the system resolver's lookup (`socket.getaddrinfo`) encodes the name: an empty label (`vllm..svc`) or one
        # past 63 characters would raise UnicodeError at each request, a 500: refused here. A name
        # not in ASCII as httpx encodes it when the client is made (IDNA 2008: the `idna` package, which Python's codec,
        # IDNA 2003, is not): `bü..svc` failed there with httpx's InvalidURL, naming no setting
        if parts.hostname.isascii():
            parts.hostname.encode("idna")
        else:
            import idna  # httpx's dependency: imported only for such a name

            idna.encode(parts.hostname)
    except UnicodeError as exc:  # idna.IDNAError is one
        return f"its host {parts.hostname!r} is no name a resolver can look up ({exc})"
    return None


def check_base_url(url: str) -> None:
    """ValueError naming `base_url` unless `url` is the base URL of an HTTP server (`base_url_problem`)."""
    if problem := base_url_problem(url):
        raise ValueError(f"`base_url` must be an http:// or https:// URL naming its host (`http://127.0.0.1:8000/v1`), "
                         f"got {redacted(repr(url))}: {problem}")
