"""An S3-compatible server on 127.0.0.1 for tests and benchmarks: moto's threaded server, with one
bucket made, and the settings (as `PLURALIGN_*` variables) that point the service at it."""

from __future__ import annotations

import logging
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
