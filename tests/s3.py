"""An S3-compatible server on 127.0.0.1 for tests and benchmarks: moto's threaded server, with one
bucket made, and the settings (as `PLURALIGN_*` variables) that point the service at it."""

from __future__ import annotations

import logging
import re
import socket
from dataclasses import dataclass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    """`with S3Server("bucket") as s3:` starts moto on a free loopback port and makes the bucket."""

    bucket: str = "pluralign-test"  # S3 bucket names have 3 to 63 characters
    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = "us-east-1"

    def __enter__(self) -> S3Server:
        import boto3
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=self.region,
        ).create_bucket(Bucket=self.bucket)
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop()

    def stop(self) -> None:
        """The endpoint goes away (connections refused); what the bucket holds is kept for `start`."""
        self._server.stop()

    def start(self) -> None:
        """The endpoint back on the same port, with what the bucket held (moto keeps it in this process)."""
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)

    def settings(self, prefix: str, endpoint: str | None = None) -> dict:
        """`env(prefix)` as `Settings` fields, reaching the bucket through `endpoint` (a proxy) if given."""
        return {"store_uri": self.uri(prefix), "store_endpoint": endpoint or self.endpoint, "store_region": self.region,
                "store_allow_http": True, "store_access_key_id": self.access_key, "store_secret_access_key": self.secret_key}

    def uri(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    @property
    def options(self) -> dict[str, str]:
        """Lance storage options (what `Settings.storage_options` gives for `env()`)."""
        return {
            "aws_endpoint": self.endpoint, "aws_region": self.region, "allow_http": "true",
            "aws_access_key_id": self.access_key, "aws_secret_access_key": self.secret_key,
        }

    def env(self, prefix: str) -> dict[str, str]:
        """The service's settings for a store under `prefix` in the bucket."""
        return {
            "PLURALIGN_STORE_URI": self.uri(prefix), "PLURALIGN_STORE_ENDPOINT": self.endpoint,
            "PLURALIGN_STORE_REGION": self.region, "PLURALIGN_STORE_ALLOW_HTTP": "true",
            "PLURALIGN_STORE_ACCESS_KEY_ID": self.access_key, "PLURALIGN_STORE_SECRET_ACCESS_KEY": self.secret_key,
        }


class FaultyProxy:
    """An HTTP proxy on 127.0.0.1 in front of `upstream` (moto) that answers chosen requests itself:
    `proxy.fault = lambda method, path, headers: ...` returns None (pass the request on), an
    (status, S3 error code) pair (answered with S3's XML error body), "drop" (the connection closed
    unanswered) or "hang" (no answer until `release` is set or the proxy stops). Its error bodies repeat
    what S3's do: a 403 the access key id, an ExpiredToken or InvalidToken the session token. `requests` counts
    what reached it, and `asked` lists each as (method, path). `with FaultyProxy(s3.endpoint) as proxy:`; point the store at `proxy.endpoint`."""

    def __init__(self, upstream: str):
        import threading

        self.upstream = upstream.removeprefix("http://")
        self.fault = lambda method, path, headers: None
        self.release = threading.Event()
        self.requests = 0
        self.asked: list[tuple[str, str]] = []

    def __enter__(self) -> FaultyProxy:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _any(self) -> None:
                proxy.requests += 1
                proxy.asked.append((self.command, self.path))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy.fault(self.command, self.path, self.headers)
                if fault == "hang":
                    proxy.release.wait()
                    fault = "drop"
                if fault == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault is not None:  # S3's error body; a 403 repeats the access key id it was signed with, as S3 does
                    status, code = fault
                    key = re.search(r"Credential=([^/,]+)", self.headers.get("Authorization", ""))
                    echoed = f"<AWSAccessKeyId>{key.group(1)}</AWSAccessKeyId>" if key and status == 403 else ""
                    token = self.headers.get("X-Amz-Security-Token")
                    if token and code in ("ExpiredToken", "InvalidToken"):  # S3 repeats the session token it refuses (a 400)
                        echoed += f"<Token-0>{token}</Token-0>"
                    self._answer(status, [("Content-Type", "application/xml")],
                                 f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{code}</Message>{echoed}</Error>".encode())
                    return
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=dict(self.headers))
                    answer = upstream.getresponse()
                    skip = ("transfer-encoding", "connection") if self.command == "HEAD" else ("transfer-encoding", "content-length", "connection")
                    self._answer(answer.status, [(k, v) for k, v in answer.getheaders() if k.lower() not in skip], answer.read())
                finally:
                    upstream.close()

            def _answer(self, status: int, headers: list, body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
