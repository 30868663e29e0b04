"""A threaded HTTP proxy in front of moto for fault injection: forwards every request and relays the answer, but
answers 500 (S3's InternalError) for a window of requests, optionally after forwarding them (the write happened,
the client hears it failed), and can slow requests down."""

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

S3_INTERNAL_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client killed mid-request (the tests kill -9 the archiver) is expected, not worth a traceback."""


class FaultProxy:
    """`fail_next(n, methods=("PUT",), after_forwarding=False)` answers the next n matching requests with 500;
    `delay` seconds are waited before each forwarded request. Counts in `forwarded` and `faults_answered`."""

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self.upstream = (target.hostname, target.port)
        self.delay = 0.0
        self.forwarded = 0
        self.faults_answered = 0
        self._faults_left = 0
        self._fault_methods: tuple[str, ...] = ()
        self._after_forwarding = False
        self._lock = threading.Lock()
        self._sleep = threading.Event()  # never set: an interruptible-looking sleep without time.sleep
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                body = self._body()
                fault, after = proxy._take_fault(self.command)
                if fault and not after:
                    return self._answer(500, S3_INTERNAL_ERROR, {"Content-Type": "application/xml"})
                if proxy.delay:
                    proxy._sleep.wait(proxy.delay)
                status, headers, payload = proxy._forward(self.command, self.path, self.headers, body)
                if fault:
                    return self._answer(500, S3_INTERNAL_ERROR, {"Content-Type": "application/xml"})
                return self._answer(status, payload, headers)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                upstream_length = {k.lower(): v for k, v in headers.items()}.get("content-length")
                length = upstream_length if self.command == "HEAD" and upstream_length else str(len(payload))
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

            def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
                pass

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def fail_next(self, count: int, *, methods: tuple[str, ...] = ("PUT",), after_forwarding: bool = False) -> None:
        with self._lock:
            self._faults_left, self._fault_methods, self._after_forwarding = count, methods, after_forwarding

    def _take_fault(self, method: str) -> tuple[bool, bool]:
        with self._lock:
            if self._faults_left and method in self._fault_methods:
                self._faults_left -= 1
                self.faults_answered += 1
                return True, self._after_forwarding
            return False, False

    def _forward(self, method: str, path: str, headers, body: bytes) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            forwarded = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
            if body or method in ("PUT", "POST"):
                forwarded["Content-Length"] = str(len(body))
            connection.request(method, path, body=body, headers=forwarded)
            response = connection.getresponse()
            payload = response.read()
            with self._lock:
                self.forwarded += 1
            return response.status, dict(response.getheaders()), payload
        finally:
            connection.close()

    @property
    def faults_left(self) -> int:
        with self._lock:
            return self._faults_left

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
