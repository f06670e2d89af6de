"""Link-local and cloud metadata addresses stay refused even with allow_private_http."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workflows.engine.steps.http_pinning import ALWAYS_BLOCKED, BlockedAddress, addresses_resolve
from workflows.tasks import http_perform

METADATA = [
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean
    "169.254.170.2",  # AWS ECS task credentials
    "169.254.0.1",
    "100.100.100.200",  # Alibaba
    "192.0.0.192",  # Oracle classic
    "fd00:ec2::254",  # AWS IMDS over IPv6
    "fe80::1",
    "::ffff:169.254.169.254",  # IPv4-mapped
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
]


@pytest.mark.parametrize("address", METADATA)
def test_metadata_and_link_local_addresses_are_refused_even_when_private_is_allowed(address):
    with pytest.raises(BlockedAddress, match="never allowed"):
        addresses_resolve(address, 80, allow_private=True)


@pytest.mark.parametrize("spelling", ["2852039166", "0xa9fea9fe", "169.254.43518"])
def test_other_spellings_of_the_metadata_address_are_refused_too(spelling):
    with pytest.raises(BlockedAddress, match=r"169\.254\.169\.254"):
        addresses_resolve(spelling, 80, allow_private=True)


def test_a_name_resolving_to_the_metadata_address_is_refused(monkeypatch):
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host != "metadata.internal.test":
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    result = http_perform(
        {"method": "GET", "url": "http://metadata.internal.test/latest/meta-data/"},
        allow_private=True,
    )
    assert result["ok"] is False and "cloud metadata" in result["error"]


def test_private_and_loopback_addresses_still_pass_when_allowed():
    assert addresses_resolve("127.0.0.1", 80, allow_private=True) == ["127.0.0.1"]
    assert addresses_resolve("10.1.2.3", 80, allow_private=True) == ["10.1.2.3"]
    assert addresses_resolve("fd12:3456::1", 80, allow_private=True) == ["fd12:3456::1"]


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_every_address_of_the_blocked_ranges_is_refused(data):
    network = data.draw(st.sampled_from(ALWAYS_BLOCKED))
    offset = data.draw(st.integers(min_value=0, max_value=network.num_addresses - 1))
    address = network.network_address + offset
    with pytest.raises(BlockedAddress):
        addresses_resolve(str(address), 443, allow_private=True)
    if isinstance(address, ipaddress.IPv4Address):
        with pytest.raises(BlockedAddress):
            addresses_resolve(f"::ffff:{address}", 443, allow_private=True)
