"""The API docs page (Swagger UI at /schema and /schema/swagger), made readable to more people than
Swagger UI's own page is: the page names its language, Swagger UI draws inside a `main` landmark
under a heading-one (hidden but read), its method badges, version stamps and Authorize button get
text colours of >= 4.5:1, focus is always drawn, a wide responses table scrolls in its own box at
320 CSS px, and its transitions and animations stop for readers
who ask for less motion (`prefers-reduced-motion`).

What stays Swagger UI's own (its markup, not its colours): a copy button inside each operation's
toggle (axe: nested-interactive), the unlabelled servers `<select>` (select-name) and 19 px tall
path links (target-size).
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from litestar import Request, Response
from litestar.openapi.plugins import SwaggerRenderPlugin

from service.errors import schema_router_hook

_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S)

STYLE = """<style>
body{margin:0;padding:0}
.visually-hidden{position:absolute;width:1px;height:1px;margin:-1px;padding:0;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap;border:0}
.swagger-ui .opblock .opblock-summary-method{color:#1a202c;text-shadow:none}
.swagger-ui .opblock.opblock-delete .opblock-summary-method{color:#fff;background:#c53030}
.swagger-ui .info .title small{background:#4a5568}
.swagger-ui .info .title small.version-stamp{background-color:#4d7302}
.swagger-ui .btn.authorize{color:#1c6b46;border-color:#1c6b46} .swagger-ui .btn.authorize svg{fill:#1c6b46}
.swagger-ui .json-schema-2020-12-expand-deep-button{color:#4a5568}
.swagger-ui :focus-visible{outline:3px solid #1a4f8b;outline-offset:2px}
.swagger-ui .responses-inner,.swagger-ui .table-container{overflow-x:auto}
@media (prefers-reduced-motion:reduce){*,*::before,*::after{animation:none!important;transition:none!important;scroll-behavior:auto!important}}
</style>"""


class SwaggerPage(SwaggerRenderPlugin):
    """Litestar's Swagger UI page with a `lang`, a main landmark and heading, and `STYLE`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(style=STYLE, **kwargs)

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        page = super().render(request, openapi_schema)
        heading = f"<h1 class='visually-hidden'>{openapi_schema['info']['title']} API reference</h1>".encode()
        page = page.replace(b"<!DOCTYPE html><html>", b'<!DOCTYPE html><html lang="en">', 1)
        return page.replace(b"<div id='swagger-container'/>", b"<main>" + heading + b"<div id='swagger-container'></div></main>", 1)


def page_policy(page: bytes) -> str:
    """The `Content-Security-Policy` of a docs page: scripts only from this service or inline ones whose
    sha256 is listed (Litestar's page starts Swagger UI in one, the OpenAPI document written into it),
    styles from here or inline (Swagger UI sets style attributes), images from here or `data:`, requests
    ("Try it out") only to this service, no plugins, no base or form elsewhere, never framed."""
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'" for body in _INLINE_SCRIPT.findall(page))
    return ("default-src 'none'; " + f"script-src 'self' {hashes}".rstrip() + "; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def docs_router_hook(response: Response) -> Response:
    """The `after_request` hook of the /schema router: the API's JSON 404 for a name it does not serve
    (`service.errors.schema_router_hook`), and `secure_docs_page`."""
    return secure_docs_page(schema_router_hook(response))


def secure_docs_page(response: Response) -> Response:
    """The /schema router's HTML pages get a content security policy fitted to their inline script,
    `X-Frame-Options: DENY` and `Referrer-Policy: no-referrer` (as the admin pages do); JSON is left alone."""
    if str(response.media_type).startswith("text/html") and isinstance(response.content, bytes):
        response.headers.update({"Content-Security-Policy": page_policy(response.content), "X-Frame-Options": "DENY",
                                 "Referrer-Policy": "no-referrer"})
    return response
