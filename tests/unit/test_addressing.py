"""Subnets, pools, fixed IPs and MACs of VNF networks."""

from __future__ import annotations

import random

import pytest

from vimha.domain import addressing
from vimha.domain.errors import Conflict, InvalidInput


def test_default_pool_is_every_host_address_but_the_gateway() -> None:
    assert addressing.check_subnet("10.0.0.0/24", "10.0.0.1", None, None) == (
        "10.0.0.0/24",
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.254",
    )
    assert addressing.check_subnet("10.0.0.7/24", None, None, None)[2:] == (
        "10.0.0.1",
        "10.0.0.254",
    )


@pytest.mark.parametrize(
    ("cidr", "gw", "start", "end", "field"),
    [
        ("10.0.0.0/33", None, None, None, "cidr"),
        ("nonsense", None, None, None, "cidr"),
        ("10.0.0.0/31", None, None, None, "cidr"),
        ("10.0.0.0/24", "10.0.1.1", None, None, "gateway"),
        ("10.0.0.0/24", None, "10.0.0.9", "10.0.0.5", "allocationPool"),
        ("10.0.0.0/24", None, "10.0.0.0", "10.0.0.5", "allocationPool"),
    ],
)
def test_bad_subnets_name_the_field(
    cidr: str, gw: str | None, start: str | None, end: str | None, field: str
) -> None:
    with pytest.raises(InvalidInput, match=field):
        addressing.check_subnet(cidr, gw, start, end)


def test_next_free_takes_the_lowest_free_and_refuses_when_full() -> None:
    assert addressing.next_free("n", "10.0.0.2", "10.0.0.5", {"10.0.0.2", "10.0.0.4"}, 2) == [
        "10.0.0.3",
        "10.0.0.5",
    ]
    with pytest.raises(Conflict, match="network n: no free address"):
        addressing.next_free("n", "10.0.0.2", "10.0.0.3", {"10.0.0.2", "10.0.0.3"})


def test_fixed_ip_must_be_in_the_subnet_and_free() -> None:
    assert addressing.check_fixed_ip("n", "10.0.0.0/24", "10.0.0.9", set()) == "10.0.0.9"
    with pytest.raises(Conflict, match="in use"):
        addressing.check_fixed_ip("n", "10.0.0.0/24", "10.0.0.9", {"10.0.0.9"})
    with pytest.raises(InvalidInput, match="not in"):
        addressing.check_fixed_ip("n", "10.0.0.0/24", "10.0.1.9", set())
    with pytest.raises(InvalidInput, match="not a host address"):
        addressing.check_fixed_ip("n", "10.0.0.0/24", "10.0.0.255", set())


def test_macs_are_local_unicast_in_the_openstack_prefix() -> None:
    mac = addressing.random_mac(random.Random(1))
    assert mac.startswith("fa:16:3e:") and addressing.check_mac(mac.upper()) == mac
    with pytest.raises(InvalidInput, match="multicast"):
        addressing.check_mac("01:00:5e:00:00:01")
    with pytest.raises(InvalidInput, match="not a MAC"):
        addressing.check_mac("fa:16:3e:00:00")
