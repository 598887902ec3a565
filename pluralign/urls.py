"""The base URL of a server the library talks to (`RemoteGenerator`, `RemoteEncoder`), checked before any request.

Standard library only: the service's settings check it before anything heavy is imported (`Settings.check_models`)."""

from __future__ import annotations

from urllib.parse import urlsplit


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
                         f"got {url!r}: {problem}")
