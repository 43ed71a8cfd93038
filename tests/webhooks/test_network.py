"""Which addresses webhook deliveries may reach (API.md 7): global ones only, also when an
IPv6 address merely wraps an IPv4 one; and the sender that makes the deliveries."""

import http.server
import ipaddress
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from returnstack.webhooks.network import ForbiddenAddress, GuardedSender, is_public


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("64:ff9b::808:808", True),  # NAT64 form of 8.8.8.8
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("10.0.0.1", False),
        ("::1", False),
        ("::ffff:10.0.0.1", False),  # IPv4-mapped
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 form of the metadata service
        ("64:ff9b::7f00:1", False),  # NAT64 form of loopback
        ("2002:7f00:1::", False),  # 6to4 of loopback
        ("::7f00:1", False),  # IPv4-compatible loopback
        ("fec0::1", False),  # site-local
        ("ff02::1", False),  # multicast
    ],
)
def test_only_global_addresses_are_public(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


# --- the sender: keep-alive connections, each opened through the address check ---------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless a handler closes

    def do_POST(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        body = self.rfile.read(int(self.headers["content-length"]))
        server.requests.append((self.client_address[1], body))
        if self.path == "/hang":
            time.sleep(1.0)
        answer = b"x" * (200 * 1024) if self.path == "/big" else b"ok"
        self.send_response(200)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
        # /drop: the server then closes the connection without having said so (as an idle
        # timeout does), and the sender must not reuse it.
        self.close_connection = self.path == "/drop"

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[int, bytes]] = []


@pytest.fixture
def http_server() -> Iterator[_Server]:
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def sender(*, allow_private: bool = True, timeout: float = 5.0) -> GuardedSender:
    return GuardedSender(
        allow_private=allow_private, connect_timeout=5.0, timeout=timeout, read_limit=64 * 1024
    )


def test_the_sender_keeps_its_connection_alive_and_replaces_one_the_receiver_closed(
    http_server: _Server,
) -> None:
    base = f"http://127.0.0.1:{http_server.server_port}"
    client = sender()
    try:
        assert client.post(f"{base}/a", b"1", {}).status == 200
        assert client.post(f"{base}/drop", b"2", {}).status == 200
        assert client.post(f"{base}/b", b"3", {}).body == b"ok"
    finally:
        client.close()
    ports = [port for port, _body in http_server.requests]
    assert [body for _port, body in http_server.requests] == [b"1", b"2", b"3"]
    assert ports[0] == ports[1] != ports[2]  # one connection, then a fresh one


def test_a_long_answer_is_read_only_up_to_the_limit(http_server: _Server) -> None:
    base = f"http://127.0.0.1:{http_server.server_port}"
    client = sender()
    try:
        answer = client.post(f"{base}/big", b"1", {})
        assert answer.status == 200
        assert len(answer.body) == 64 * 1024
        # The connection was not read to its end: it is not reused for the next one.
        assert client.post(f"{base}/a", b"2", {}).body == b"ok"
    finally:
        client.close()
    assert [body for _port, body in http_server.requests] == [b"1", b"2"]


def test_the_sender_refuses_a_private_address_before_connecting(http_server: _Server) -> None:
    client = sender(allow_private=False)
    try:
        with pytest.raises(ForbiddenAddress):
            client.post(f"http://localhost:{http_server.server_port}/a", b"1", {})
    finally:
        client.close()
    assert http_server.requests == []


def test_an_attempt_that_outlasts_the_timeout_fails_as_a_timeout(http_server: _Server) -> None:
    client = sender(timeout=0.2)
    try:
        with pytest.raises(TimeoutError):
            client.post(f"http://127.0.0.1:{http_server.server_port}/hang", b"1", {})
    finally:
        client.close()
