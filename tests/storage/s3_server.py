"""A real S3-protocol server for tests: moto's S3 app on 127.0.0.1 (a free port), in a thread.

Self-contained: needs only the `moto[server]` package, no network, no credentials. `hold` makes
the PUTs whose path contains it wait (until `release` is set), after letting the first
`hold_after` of them through, so a test can kill a client in the middle of an upload with some
of its objects stored.
"""

from __future__ import annotations

import threading

from werkzeug.serving import make_server


class S3Server:
    def __init__(self):
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )

        self._app = DomainDispatcherApplication(create_backend_app)
        self.hold: str | None = None
        self.hold_after = 0
        self._matched = 0
        self.held = threading.Event()  # a PUT matching `hold` arrived and is waiting
        self.release = threading.Event()
        self._server = make_server(
            "127.0.0.1", 0, self._gate, threaded=True, request_handler=MotoRequestHandler
        )
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _gate(self, environ, start_response):
        if self.hold and environ["REQUEST_METHOD"] == "PUT" and self.hold in environ.get("PATH_INFO", ""):
            self._matched += 1
            if self._matched > self.hold_after:
                self.held.set()
                self.release.wait(300)
        return self._app(environ, start_response)

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs to reach this server (fake credentials)."""
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ENDPOINT_URL_S3": self.url,
        }

    def start(self) -> S3Server:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._thread.join(10)

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))
