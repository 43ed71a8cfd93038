"""Which addresses webhook deliveries may reach (API.md 7): global ones only, also when an
IPv6 address merely wraps an IPv4 one."""

import ipaddress

import pytest

from returnstack.webhooks.network import is_public


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
