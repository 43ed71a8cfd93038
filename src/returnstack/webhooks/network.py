"""Outbound HTTP for deliveries, guarded against SSRF.

A URL must not reach loopback, private, link-local or otherwise non-public addresses unless
the server allows them. The check is made when subscribing, and again on every connection:
the transport resolves the host itself, checks every address, and connects to an address
it checked, so a DNS answer that changes between the check and the connection (rebinding)
cannot slip through. TLS still verifies the certificate against the URL's host name.
"""

import http.client
import ipaddress
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ForbiddenAddress(Exception):
    """The URL leads to an address deliveries may not reach."""


# IPv6 prefixes that carry an IPv4 address in their last 32 bits: NAT64 (RFC 6052) and the
# deprecated IPv4-compatible form. 6to4 (2002::/16) is unwrapped by `sixtofour`.
_EMBEDS_IPV4 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::/96"))


def is_public(address: IPAddress) -> bool:
    """Whether deliveries may reach the address: a global one, also when an IPv6 address
    only wraps an IPv4 one (a NAT64 form of 169.254.169.254 is the metadata service)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public(address.ipv4_mapped)
        if address.sixtofour is not None:
            return is_public(address.sixtofour)
        if any(address in network for network in _EMBEDS_IPV4) and int(address) > 1:
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.is_site_local:
            return False
    return address.is_global and not address.is_multicast


def _parse(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address of `host` (a literal address is itself)."""
    literal = _parse(host)
    if literal is not None:
        return [literal]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for info in infos:
        address = _parse(str(info[4][0]))
        if address is not None and address not in addresses:
            addresses.append(address)
    return addresses


def allowed(addresses: Iterable[IPAddress], *, allow_private: bool) -> list[IPAddress]:
    return [a for a in addresses if allow_private or is_public(a)]


def check_url(url: str, *, allow_private: bool) -> str | None:
    """Why `url` cannot be subscribed, or None. A host that does not resolve now is
    accepted (DNS may be down or not yet set up); each delivery checks again."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    host = parts.hostname
    if not host:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password"
    if allow_private:
        return None
    if host.rstrip(".").lower() == "localhost" or host.lower().endswith(".localhost"):
        return "must not point at a loopback, private or link-local address"
    try:
        addresses = resolve(host, port or (443 if parts.scheme == "https" else 80))
    except (OSError, UnicodeError):
        return None
    if len(allowed(addresses, allow_private=False)) != len(addresses):
        return "must not point at a loopback, private or link-local address"
    return None


def guarded_connect(host: str, port: int, *, allow_private: bool, timeout: float) -> socket.socket:
    """A TCP connection to `host`: resolved here, every address checked, and only a
    checked address connected to (a DNS answer that changes in between cannot slip in)."""
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise ConnectionError(f"cannot resolve {host}: {exc}") from exc
    usable = allowed(addresses, allow_private=allow_private)
    if not usable:
        raise ForbiddenAddress(f"{host} resolves to a loopback, private or link-local address")
    error: OSError | None = None
    for address in usable:  # the checked addresses, and only those
        try:
            sock = socket.create_connection((str(address), port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as exc:
            error = exc
    assert error is not None
    raise error


class _Connection(http.client.HTTPConnection):
    """http.client's connection, connecting through the address check."""

    def __init__(self, host: str, port: int, *, allow_private: bool, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.allow_private = allow_private
        self.used_at = 0.0

    def connect(self) -> None:
        self.sock = guarded_connect(
            self.host, self.port, allow_private=self.allow_private, timeout=self.timeout or 5.0
        )


class _TLSConnection(_Connection):
    default_port = 443

    def __init__(
        self, host: str, port: int, *, allow_private: bool, timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, allow_private=allow_private, timeout=timeout)
        self.context = context

    def connect(self) -> None:
        super().connect()
        # The certificate is verified against the URL's host name, not the address.
        self.sock = self.context.wrap_socket(self.sock, server_hostname=self.host)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes  # at most `read_limit` bytes of it
    headers: http.client.HTTPMessage


@dataclass(frozen=True, slots=True)
class _Target:
    tls: bool
    host: str
    port: int
    path: str  # with its query


@lru_cache(maxsize=1024)
def _target(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the URL carries a user name or password")
    tls = parts.scheme == "https"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(tls, parts.hostname, parts.port or (443 if tls else 80), path)


class GuardedSender:
    """POSTs for deliveries, every connection through the address check.

    Each thread keeps its own keep-alive connection per host (a dispatcher's thread pool
    is sized to its concurrency, so that is the pool): no pool shared between threads to
    lock and scan on every request, which in httpx cost more CPU than the request itself.
    No proxies (they would connect for us, unchecked) and no redirects."""

    def __init__(
        self,
        *,
        allow_private: bool,
        connect_timeout: float,
        timeout: float,
        read_limit: int,
        keepalive_expiry: float = 30.0,
    ) -> None:
        self.allow_private = allow_private
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.read_limit = read_limit
        self.keepalive_expiry = keepalive_expiry
        self._local = threading.local()
        self._all: list[_Connection] = []
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None

    def _connection(self, target: _Target) -> tuple[_Connection, bool]:
        """This thread's connection to the target's host, and whether it was used before."""
        pool: dict[tuple[bool, str, int], _Connection] | None = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        key = (target.tls, target.host, target.port)
        conn = pool.get(key)
        if conn is not None:
            if conn.sock is not None and (
                time.monotonic() - conn.used_at > self.keepalive_expiry or _closed(conn.sock)
            ):
                conn.close()  # idle too long, or the receiver closed it: a fresh one
            return conn, conn.sock is not None
        if target.tls:
            if self._context is None:
                self._context = ssl.create_default_context()
            conn = _TLSConnection(
                target.host,
                target.port,
                allow_private=self.allow_private,
                timeout=self.connect_timeout,
                context=self._context,
            )
        else:
            conn = _Connection(
                target.host,
                target.port,
                allow_private=self.allow_private,
                timeout=self.connect_timeout,
            )
        pool[key] = conn
        with self._lock:
            self._all.append(conn)
        return conn, False

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        """POST `body`; the status, up to `read_limit` bytes of the answer, its headers.
        Raises ForbiddenAddress, TimeoutError (the whole attempt is bounded by `timeout`),
        or another OSError / http.client.HTTPException."""
        target = _target(url)
        deadline = time.monotonic() + self.timeout
        conn, reused = self._connection(target)
        try:
            try:
                response = self._request(conn, target, body, headers, deadline)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if not reused:
                    raise
                # A kept-alive connection the receiver closed as we sent: once, afresh.
                conn.close()
                response = self._request(conn, target, body, headers, deadline)
            received = bytearray()
            while len(received) < self.read_limit:
                _timeout(conn, deadline)
                chunk = response.read(min(16384, self.read_limit - len(received)))
                if not chunk:
                    break
                received += chunk
            if not response.isclosed():  # not read to the end: the connection is spent
                conn.close()
            conn.used_at = time.monotonic()
            return Answer(response.status, bytes(received), response.headers)
        except BaseException:
            conn.close()
            raise

    def _request(
        self,
        conn: _Connection,
        target: _Target,
        body: bytes,
        headers: dict[str, str],
        deadline: float,
    ) -> http.client.HTTPResponse:
        if conn.sock is None:
            conn.connect()
        _timeout(conn, deadline)
        conn.request("POST", target.path, body=body, headers=headers)
        _timeout(conn, deadline)
        return conn.getresponse()

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


def _timeout(conn: _Connection, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the attempt ran out of time")
    if conn.sock is not None:
        conn.sock.settimeout(left)


def _closed(sock: socket.socket) -> bool:
    """Whether an idle kept-alive socket was closed by the other end (it is readable:
    end of file, or bytes nobody asked for)."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True
