"""A tiny HTTP server on 127.0.0.1 for download tests: real HTTP, Range requests, injected drops.

``drop_after`` makes the first response for a path stop after that many bytes (a dropped
connection), so resume logic is exercised against a real socket.
"""

from __future__ import annotations

import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Handler(SimpleHTTPRequestHandler):
    server: LocalServer.Server  # type: ignore[name-defined]

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _file(self) -> Path | None:
        path = Path(self.server.root) / self.path.lstrip("/").split("?")[0]
        return path if path.is_file() else None

    def do_HEAD(self) -> None:
        path = self._file()
        self.server.requests.append(("HEAD", self.path, None))
        if path is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()

    def do_GET(self) -> None:
        path = self._file()
        rng = self.headers.get("Range")
        self.server.requests.append(("GET", self.path, rng))
        if path is None:
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        drop = self.server.drop_after.pop(self.path, None)
        if drop is not None:
            self.wfile.write(body[:drop])
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection drops mid-body
            return
        self.wfile.write(body)


class LocalServer:
    class Server(ThreadingHTTPServer):
        daemon_threads = True

    def __init__(self, root: Path):
        self.httpd = self.Server(("127.0.0.1", 0), _Handler)
        self.httpd.root = str(root)
        self.httpd.requests = []
        self.httpd.drop_after = {}
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def requests(self) -> list:
        return self.httpd.requests

    def drop_first(self, path: str, after_bytes: int) -> None:
        self.httpd.drop_after[path] = after_bytes

    def __enter__(self) -> LocalServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
