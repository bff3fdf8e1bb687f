"""A local HTTP server for download tests: Range requests, one dropped connection on demand.

Serves in-memory files on 127.0.0.1 from a thread; records every request's path and Range
header so tests can see a download resume.
"""
from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class ModelServer:
    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files: dict[str, bytes] = dict(files or {})
        self.drop_after: dict[str, int] = {}  # path -> bytes sent before cutting, once
        self.ignore_range = False  # answer 200 with the whole file, as some servers do
        self.throttle = 0.0  # seconds of pause per 16 KiB sent, to keep a download in flight
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    def __enter__(self) -> ModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def unused_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _handler(server: ModelServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.lstrip("/")
            header = self.headers.get("Range")
            server.requests.append((path, header))
            body = server.files.get(path)
            if body is None:
                self.send_error(404)
                return
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", header or "")
            if match and not server.ignore_range:
                start = int(match.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            cut = server.drop_after.pop(path, None)
            if cut is not None and cut > start:
                self.wfile.write(body[start:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if not server.throttle:
                self.wfile.write(body[start:])
                return
            for i in range(start, len(body), 16384):
                try:
                    self.wfile.write(body[i:i + 16384])
                    self.wfile.flush()
                except OSError:
                    return  # the client went away (a cancelled download)
                time.sleep(server.throttle)

    return Handler


@pytest.fixture
def server():
    """A running ModelServer (tests import this fixture by name)."""
    with ModelServer() as s:
        yield s


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
