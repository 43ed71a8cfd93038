"""Outbound HTTP for deliveries, guarded against SSRF.

A URL must not reach loopback, private, link-local or otherwise non-public addresses unless
the server allows them. The check is made when subscribing, and again on every connection:
the transport resolves the host itself, checks every address, and connects to an address
it checked, so a DNS answer that changes between the check and the connection (rebinding)
cannot slip through. TLS still verifies the certificate against the URL's host name.
"""

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

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


class _GuardedBackend(httpcore.SyncBackend):
    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        usable = allowed(addresses, allow_private=self.allow_private)
        if not usable:
            raise ForbiddenAddress(f"{host} resolves to a loopback, private or link-local address")
        error: Exception | None = None
        for address in usable:  # the checked addresses, and only those
            try:
                return super().connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error


def guarded_client(
    *, allow_private: bool, connect_timeout: float, timeout: float, connections: int
) -> httpx.Client:
    """An httpx client whose every connection passes the address check. No proxies from
    the environment (they would connect for us, unchecked) and no redirects."""
    transport = httpx.HTTPTransport(retries=0)
    # httpx builds its pool without a way to pass a network backend: replace it.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=connections,
        max_keepalive_connections=connections,
        keepalive_expiry=30.0,
        network_backend=_GuardedBackend(allow_private=allow_private),
    )
    return httpx.Client(
        transport=transport,
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": "returnstack-webhooks/1"},
    )
