"""HTTP to the portal on loopback: multipart bodies, a small API client, a free port, waiting until it answers."""

from __future__ import annotations

import http.client
import json
import socket
import time
import uuid

OCTET_STREAM = "application/octet-stream"


def multipart(fields: dict[str, str], files: list[tuple[str, str, bytes, str]]) -> tuple[bytes, str]:
    """(body, Content-Type) of a multipart/form-data request; `files` are (field, file name, bytes, type)."""
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for name, value in fields.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, filename, data, content_type in files:
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def decode(raw: bytes) -> dict:
    """An answer's JSON; anything else (gunicorn's own HTML page when it kills a worker at its timeout) as
    {"raw": its start, "error": {"message": its <title>}}, the shape of the portal's errors."""
    try:
        return json.loads(raw or b"{}")
    except json.JSONDecodeError:
        text = raw.decode(errors="replace")
        title = text.split("<title>")[-1].split("</title>")[0].strip()
        return {"raw": text[:500], "error": {"message": f"{title or 'not JSON'} (not the portal's answer)"}}


class Api:
    """A keep-alive HTTP client for one thread. With `retry` (the default) a request whose connection
    dropped is sent once more on a new one; without, the error is raised: a hostile upload must not be
    sent twice, and a dropped connection is what it measures."""

    def __init__(self, port: int, token: str = "", *, retry: bool = True) -> None:
        self.port, self.token, self.retry = port, token, retry
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def send(self, method: str, path: str, body: bytes | None = None, content_type: str = "") -> tuple[int, bytes]:
        """(status, the answer's bytes)."""
        headers = {"Accept": "application/json"}  # and http.client's Host: 127.0.0.1:PORT
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        if content_type:
            headers["Content-Type"] = content_type
        try:
            return self._send_once(method, path, body, headers)
        except (http.client.HTTPException, ConnectionError):
            if not self.retry:
                raise
        return self._send_once(method, path, body, headers)

    def _send_once(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            return response.status, response.read()
        except (http.client.HTTPException, ConnectionError):
            # This connection is broken: the next request gets a new one.
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
            raise

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "") -> tuple[int, dict]:
        status, raw = self.send(method, path, body, content_type)
        return status, decode(raw)

    def json(self, method: str, path: str, data: dict | None = None, expect: int = 200) -> dict:
        body = json.dumps(data).encode() if data is not None else None
        status, payload = self.request(method, path, body, "application/json" if body else "")
        if status != expect:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {payload}")
        return payload

    def close(self) -> None:
        self.conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, timeout: float = 90) -> None:
    """Until GET /readyz answers 200: the database, the cache, the broker and the model are usable."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            status, body = Api(port).request("GET", "/readyz")
            if status == 200:
                return
            last = str(body)
        except OSError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise RuntimeError(f"/readyz never answered 200: {last}")
