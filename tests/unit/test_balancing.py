"""What the load balancer sends traffic to, and how a backend is brought there."""

from __future__ import annotations

from vimha.domain.balancing import Current, Server, commands, desired_servers, one_ready
from vimha.domain.groups import Policy


def member(
    name: str, healthy: bool = True, slot: int | None = None, role: str = "standby"
) -> dict[str, object]:
    return {
        "member": name,
        "address": f"10.0.0.{name[-1]}:80",
        "healthy": healthy,
        "slot": slot,
        "role": role,
    }


def test_all_active_sends_to_every_healthy_member() -> None:
    want = desired_servers(Policy.ALL_ACTIVE, [member("m1"), member("m2", healthy=False)])
    assert want["m1"].ready and not want["m2"].ready


def test_active_standby_sends_only_to_the_holder() -> None:
    members = [member("m1", slot=0, role="active"), member("m2"), member("m3")]
    want = desired_servers(Policy.ACTIVE_STANDBY, members)
    assert [n for n, s in want.items() if s.ready] == ["m1"]
    # a holder whose monitor fails is out at once, before it even resigns
    want = desired_servers(Policy.ACTIVE_STANDBY, [member("m1", False, 0, "active"), member("m2")])
    assert not any(s.ready for s in want.values())


def test_n_plus_m_sends_to_the_slot_holders() -> None:
    members = [
        member("m1", slot=0, role="active"),
        member("m2", slot=1, role="active"),
        member("m3"),
    ]
    want = desired_servers(Policy.N_PLUS_M, members)
    assert sorted(n for n, s in want.items() if s.ready) == ["m1", "m2"]


def test_members_without_an_address_are_not_servers() -> None:
    assert desired_servers(Policy.ALL_ACTIVE, [{"member": "m1", "healthy": True}]) == {}


def test_a_switch_over_takes_the_old_active_out_before_the_new_one_in() -> None:
    current = {"m1": Current("10.0.0.1:80", True), "m2": Current("10.0.0.2:80", False)}
    desired = {"m1": Server("10.0.0.1:80", False), "m2": Server("10.0.0.2:80", True)}
    cmds = commands("be_kv", current, desired)
    assert cmds == [
        "set server be_kv/m1 state maint",
        "shutdown sessions server be_kv/m1",
        "set server be_kv/m2 state ready",
        "set server be_kv/m2 health up",
    ]


def test_new_members_are_added_with_checks_and_moved_members_readdressed() -> None:
    current = {"m1": Current("10.0.0.1:80", True)}
    desired = {"m1": Server("10.0.0.9:81", True), "m2": Server("10.0.0.2:80", True)}
    cmds = commands("be_api", current, desired, "check inter 200 fall 2 rise 1")
    assert "set server be_api/m1 addr 10.0.0.9 port 81" in cmds
    assert "add server be_api/m2 10.0.0.2:80 check inter 200 fall 2 rise 1" in cmds
    assert cmds.index(
        "add server be_api/m2 10.0.0.2:80 check inter 200 fall 2 rise 1"
    ) < cmds.index("set server be_api/m2 state ready")
    assert "enable health be_api/m2" in cmds


def test_nothing_to_do_when_in_step() -> None:
    current = {"m1": Current("10.0.0.1:80", True)}
    assert commands("be", current, {"m1": Server("10.0.0.1:80", True)}) == []


def test_one_writer_stays_while_fit_and_the_first_fit_takes_over() -> None:
    want = {
        "a": Server("h:1", True, "healthy"),
        "b": Server("h:2", True, "healthy"),
        "c": Server("h:3", False, "unhealthy"),
    }
    fresh = one_ready(want, {})
    assert [n for n, s in fresh.items() if s.ready] == ["a"]  # the first by name
    serving = {"a": Current("h:1", False), "b": Current("h:2", True)}
    assert [n for n, s in one_ready(want, serving).items() if s.ready] == ["b"]  # it stays
    gone = {**want, "b": Server("h:2", False, "unhealthy")}
    assert [n for n, s in one_ready(gone, serving).items() if s.ready] == ["a"]
    nobody = {n: Server(s.address, False, "unhealthy") for n, s in want.items()}
    assert not any(s.ready for s in one_ready(nobody, serving).values())
