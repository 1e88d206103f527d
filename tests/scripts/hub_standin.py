"""A stand-in for the few Hugging Face hub endpoints `create_repo` + `upload_folder` call, on 127.0.0.1.

It records every request and keeps the files of each commit (sent inline, base64, because the
preupload answer asks for "regular" uploads), so a test can assert what arrived. Endpoints (as
huggingface_hub 0.30+ calls them): POST /api/repos/create, POST /api/models/{repo}/preupload/{rev},
POST /api/models/{repo}/commit/{rev} (NDJSON: a header line, then one line per file).
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HubStandIn:
    def __init__(self):
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.repos: list[dict] = []  # create_repo payloads
        self.files: dict[str, dict[str, bytes]] = {}  # repo id -> path -> content
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _reply(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self):
                hub.requests.append(("GET", self.path))
                self._reply(404, {"error": "not found"})

            def do_POST(self):
                hub.requests.append(("POST", self.path))
                body = self._body()
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[:3] == ["api", "repos", "create"]:
                    payload = json.loads(body)
                    hub.repos.append(payload)
                    repo_id = f"{payload['organization']}/{payload['name']}"
                    if not payload.get("organization"):
                        repo_id = payload["name"]
                    return self._reply(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})
                if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "preupload":
                    files = json.loads(body)["files"]
                    modes = [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                    ]
                    return self._reply(200, {"files": modes})
                if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "commit":
                    repo_id = "/".join(parts[2:4])
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            value = item["value"]
                            content = base64.b64decode(value["content"])
                            hub.files.setdefault(repo_id, {})[value["path"]] = content
                    return self._reply(
                        200,
                        {"commitUrl": f"{hub.url}/{repo_id}/commit/{'0' * 40}", "commitOid": "0" * 40},
                    )
                self._reply(404, {"error": f"unknown endpoint {self.path}"})

        return Handler
