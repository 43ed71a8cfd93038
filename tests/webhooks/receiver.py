"""A real HTTP receiver on loopback for webhook tests: records every request and answers
what the test tells it to (by default 200)."""

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


# (request) -> (status, headers, body)
Answer = Callable[[Received], tuple[int, dict[str, str], bytes]]


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.answer: Answer = lambda _request: (200, {}, b"ok")
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender died mid-request (a test kills the server while deliveries
                    # are in flight): nothing was delivered, as for any HTTP server.
                    self.close_connection = True
                    return
                request = Received(
                    headers={k.lower(): v for k, v in self.headers.items()}, body=body
                )
                with receiver.lock:
                    receiver.received.append(request)
                status, headers, body = receiver.answer(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def ids(self) -> list[str]:
        with self.lock:
            return [r.id for r in self.received]

    def types(self) -> list[str]:
        with self.lock:
            return [r.json["type"] for r in self.received]

    def answer_with(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.answer = lambda _request: (status, headers or {}, b"answer %d" % status)


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(5)
