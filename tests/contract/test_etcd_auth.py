"""etcd authentication and RBAC (issue 22) against a real etcd member: the access plan
applied (users, roles, authentication on), each node's agent writes the keys of its own
service groups only, reads everything under the prefix; the controllers write everywhere;
a wrong password, a refused write, an expired token, a rotated password."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import yaml

from tests.conftest import require_system
from tests.support.etcd import EtcdMember, find_etcd
from vimha.domain.errors import InvalidInput
from vimha.drivers.coord_etcd import AUTH_RETRY, EtcdCoordination, check_url
from vimha.drivers.etcd_access import apply_access
from vimha.etcdaccess import (
    ROOT,
    AccessPlan,
    GroupAccess,
    access_plan,
    agent_user,
    controller_user,
)
from vimha.groupspec import groups_prefix
from vimha.ports.coordination import CoordinationUnavailable, PermissionDenied

V = "v1"
G = groups_prefix(V)
TOKEN_TTL = 1  # s: etcd's simple tokens, idle


@pytest.fixture
def member(tmp_path: Path) -> Iterator[EtcdMember]:
    require_system(find_etcd() is not None, "etcd (apt: etcd-server)")
    m = EtcdMember(tmp_path, "--auth-token-ttl", str(TOKEN_TTL))
    m.start()
    try:
        yield m
    finally:
        m.stop()


def the_plan() -> AccessPlan:
    return access_plan(
        V,
        agents=["a", "b"],
        controllers=["a"],
        groups=[GroupAccess("ga", ("a",)), GroupAccess("gb", ("b",)),
                GroupAccess("ab", ("a", "b"))],
    )  # fmt: skip


class Secured:
    """A member with the plan applied: a URL per user, the password files in tmp_path."""

    def __init__(self, member: EtcdMember, base: Path, plan: AccessPlan) -> None:
        self.member, self.base, self.plan = member, base, plan
        self.passwords = {u.name: f"pw-of-{u.name}" for u in plan.users}
        for user, password in [(ROOT, "root-pw"), *self.passwords.items()]:
            self.write_password(user, password)

    def write_password(self, user: str, password: str) -> Path:
        path = self.base / f"{user}.pw"
        path.write_text(password + "\n")
        return path

    def url(self, user: str) -> str:
        return f"{self.member.url}?user={user}&password_file={self.base / f'{user}.pw'}"

    async def apply(self) -> list[str]:
        return await apply_access(self.url(ROOT), self.plan, self.passwords)


@pytest.fixture
async def secured(member: EtcdMember, tmp_path: Path) -> Secured:
    s = Secured(member, tmp_path, the_plan())
    done = await s.apply()
    assert "authentication enabled" in done
    return s


@pytest.fixture
async def clients(secured: Secured) -> AsyncIterator[dict[str, EtcdCoordination]]:
    """The agents of a and b, the controller of a."""
    made = {
        "a": EtcdCoordination(secured.url(agent_user(V, "a"))),
        "b": EtcdCoordination(secured.url(agent_user(V, "b"))),
        "ctl": EtcdCoordination(secured.url(controller_user(V, "a"))),
    }
    try:
        yield made
    finally:
        for c in made.values():
            await c.close()


async def test_an_agent_writes_the_keys_of_its_groups(
    clients: dict[str, EtcdCoordination],
) -> None:
    a = clients["a"]
    lease = await a.grant(5)
    assert await a.create(f"{G}ga/slots/0", "a", lease)
    entry = await a.get(f"{G}ga/slots/0")
    assert entry is not None
    assert await a.replace(f"{G}ga/slots/0", "a2", entry.revision, lease)
    assert await a.increment(f"{G}ga/epoch") == 1
    await a.put(f"{G}ab/members/a", "{}", lease)  # a group it shares with b
    assert await clients["b"].increment(f"{G}ab/epoch") == 1
    assert await a.delete(f"{G}ga/slots/0")
    await a.revoke(lease)  # its keys are its groups'
    assert await a.get(f"{G}ab/members/a") is None


WRITES_ELSEWHERE = {
    "put": lambda c: c.put(f"{G}gb/holder/0", "a"),
    "create": lambda c: c.create(f"{G}gb/slots/0", "a"),
    "replace": lambda c: c.replace(f"{G}gb/slots/0", "a", 1),
    "delete": lambda c: c.delete(f"{G}gb/slots/0"),
    "delete-if": lambda c: c.delete(f"{G}gb/slots/0", 1),
    "increment": lambda c: c.increment(f"{G}gb/epoch"),
    "prefix": lambda c: c.put(f"{G}gaa/epoch", "1"),  # starts like its group ga: not it
    "fenced": lambda c: c.put(f"/vimha/{V}/fenced/b", "{}"),
}


async def test_an_agent_may_not_write_another_groups_keys(
    clients: dict[str, EtcdCoordination],
) -> None:
    for what, write in WRITES_ELSEWHERE.items():
        started = time.monotonic()
        with pytest.raises(PermissionDenied) as denied:
            await write(clients["a"])
        assert f"/vimha/{V}/" in denied.value.detail, what  # the key named
        assert f"etcd user {agent_user(V, 'a')}" in denied.value.detail, what
        assert time.monotonic() - started < 1.0, what  # refused at once, not retried
    assert await clients["ctl"].get(f"{G}gb/holder/0") is None


async def test_an_agent_reads_and_watches_the_whole_prefix(
    clients: dict[str, EtcdCoordination],
) -> None:
    a, b, ctl = clients["a"], clients["b"], clients["ctl"]
    revision = await b.put(f"{G}gb/holder/0", "b")
    await ctl.put(f"/vimha/{V}/fenced/x", "{}")
    _, entries = await a.list(f"/vimha/{V}/")
    assert [e.key for e in entries] == [f"/vimha/{V}/fenced/x", f"{G}gb/holder/0"]
    watch = a.watch(f"/vimha/{V}/", revision - 1)
    change = await asyncio.wait_for(anext(aiter(watch)), 5)
    assert (change.key, change.value) == (f"{G}gb/holder/0", "b")
    with pytest.raises(PermissionDenied):
        await a.list("/vimha/other/")
    with pytest.raises(PermissionDenied, match="watch /vimha/other/"):
        await anext(aiter(a.watch("/vimha/other/", 0)))


async def test_the_controllers_user_writes_everywhere(
    clients: dict[str, EtcdCoordination],
) -> None:
    ctl = clients["ctl"]
    for key in (f"{G}ga/slots/0", f"{G}gb/slots/0", f"/vimha/{V}/fenced/b", f"/vimha/{V}/x"):
        assert await ctl.create(key, "ctl")
        assert await ctl.delete(key)
    with pytest.raises(PermissionDenied):
        await ctl.put("/vimha/other/x", "ctl")


async def test_a_wrong_password_is_a_clear_error(secured: Secured) -> None:
    user = agent_user(V, "a")
    secured.write_password(user, "not-the-password")
    coord = EtcdCoordination(secured.url(user))
    try:
        for _ in range(2):  # the second without asking etcd again (bcrypt costs its CPU)
            started = time.monotonic()
            with pytest.raises(CoordinationUnavailable) as failed:
                await coord.get(f"{G}ga/epoch")
            assert f"authentication of user {user} failed" in failed.value.detail
            assert str(secured.base / f"{user}.pw") in failed.value.detail
            assert failed.value.retry_after == AUTH_RETRY
            assert time.monotonic() - started < 1.0
    finally:
        await coord.close()
    nobody = EtcdCoordination(secured.member.url)  # no user at all
    try:
        with pytest.raises(PermissionDenied, match=r"requires authentication.*user="):
            await nobody.get(f"{G}ga/epoch")
    finally:
        await nobody.close()


async def test_an_expired_token_is_renewed_transparently(
    clients: dict[str, EtcdCoordination],
) -> None:
    a = clients["a"]
    await a.put(f"{G}ga/epoch", "1")
    first = a.token
    assert first
    await asyncio.sleep(TOKEN_TTL + 1.2)  # etcd forgets an idle token after its TTL
    revision = await a.put(f"{G}ga/epoch", "2")
    second = a.token
    assert second and second != first
    await asyncio.sleep(TOKEN_TTL + 1.2)
    change = await asyncio.wait_for(anext(aiter(a.watch(f"{G}ga/", revision - 1))), 5)
    assert change.value == "2"
    assert a.token and a.token != second  # the watch renewed it


async def test_the_calls_go_on_across_a_member_restart(
    secured: Secured, clients: dict[str, EtcdCoordination]
) -> None:
    """etcd 3.4 replays its simple tokens from its log at a restart (they are raft
    entries): the token may well outlive the member; either way the calls go on."""
    a = clients["a"]
    await a.put(f"{G}ga/epoch", "1")
    secured.member.stop()
    secured.member.start()
    assert await a.get(f"{G}ga/epoch") is not None
    with pytest.raises(PermissionDenied):
        await a.put(f"{G}gb/epoch", "1")


async def test_a_rotated_password_is_read_again(
    secured: Secured, clients: dict[str, EtcdCoordination]
) -> None:
    a = clients["a"]
    await a.put(f"{G}ga/epoch", "1")
    user = agent_user(V, "a")
    secured.passwords[user] = "rotated"
    secured.write_password(user, "rotated")  # first the node's file, then etcd's
    assert await secured.apply() == []  # nothing but the passwords changed
    await a.put(f"{G}ga/epoch", "2")  # the old token is void: authenticated with the new one
    secured.write_password("old", f"pw-of-{user}")
    stale = EtcdCoordination(secured.url(user).replace(f"{user}.pw", "old.pw"))
    try:
        with pytest.raises(CoordinationUnavailable, match="failed"):
            await stale.get(f"{G}ga/epoch")
    finally:
        await stale.close()


async def test_the_plan_applied_again_changes_what_changed(secured: Secured) -> None:
    assert await secured.apply() == []
    secured.plan = access_plan(V, ["a"], ["a"], [GroupAccess("gb", ("a",))])  # b gone
    done = await secured.apply()
    assert f"role {agent_user(V, 'a')}: a range no longer planned revoked" in done
    assert f"user {agent_user(V, 'b')} deleted (no longer planned)" in done
    assert f"role {agent_user(V, 'b')} deleted (no longer planned)" in done
    a = EtcdCoordination(secured.url(agent_user(V, "a")))
    try:
        await a.put(f"{G}gb/epoch", "1")
        with pytest.raises(PermissionDenied):
            await a.put(f"{G}ga/epoch", "1")
    finally:
        await a.close()


async def test_a_user_named_before_authentication_is_enabled(
    member: EtcdMember, tmp_path: Path
) -> None:
    """`vimha up --ha`'s order: the agents start with their users named, etcd's
    authentication is enabled a little later; they go on, now with tokens."""
    s = Secured(member, tmp_path, the_plan())
    a = EtcdCoordination(s.url(agent_user(V, "a")))
    try:
        await a.put(f"{G}gb/epoch", "1")  # authentication not enabled yet: anything goes
        assert a.token is None
        await s.apply()
        await a.put(f"{G}ga/epoch", "1")
        assert a.token
        with pytest.raises(PermissionDenied):
            await a.put(f"{G}gb/epoch", "2")
    finally:
        await a.close()


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("user=u", "an etcd user needs user and password_file"),
        ("password_file={pw}", "an etcd user needs user and password_file"),
        ("user=u&password_file={missing}", "password_file .*missing.* of etcd user u: No such"),
        ("user=u&password_file={empty}", "of etcd user u: its first line is empty"),
        ("user=u&password_file={pw}&pasword=x", "unknown parameter pasword"),
    ],
)
def test_the_credential_in_the_url_is_checked_at_load(tmp_path: Path, query: str, why: str) -> None:
    (tmp_path / "pw").write_text("secret\n")
    (tmp_path / "empty").write_text("\n")
    files = {k: tmp_path / k for k in ("pw", "empty", "missing")}
    with pytest.raises(InvalidInput, match=why):
        check_url("etcd://127.0.0.1:2379?" + query.format(**files))
    with pytest.raises(InvalidInput, match=why):
        EtcdCoordination("etcd://127.0.0.1:2379?" + query.format(**files))


async def test_the_ha_clouds_agents_write_their_own_groups(
    member: EtcdMember, tmp_path: Path
) -> None:
    """`vimha up --ha`'s plan (from the agents' configs as written), applied to one real
    member: each control node's agent, with the credential its config names, writes the
    keys of its groups and not those of the others'; its controller writes everywhere."""
    from vimha.cloud.ha import HaPlan
    from vimha.cloud.nodes import EMBEDDED_VIM, plan, write_agent_config

    data, port = tmp_path / "data", 20000
    nodes = plan(data, port)
    layout = HaPlan(data, port, tuple(nodes), data / "admin-token")
    configs = {n.name: write_agent_config(data, n, port, None, layout.patch_agent) for n in nodes}
    access = layout.access_plan(configs)
    passwords = layout.passwords(access)
    assert (data / "etcd-auth" / "root.password").stat().st_mode & 0o777 == 0o600
    ha_url = layout.etcd_url
    root_url = layout.etcd_url_of(ROOT).replace(ha_url, member.url)
    assert await apply_access(root_url, access, passwords)
    prefix = groups_prefix(EMBEDDED_VIM)
    for node in ("ctl-1", "ctl-3"):
        config = yaml.safe_load(configs[node].read_text())
        query = parse_qs(config["coordination_url"].partition("?")[2])
        assert query["user"] == [agent_user(EMBEDDED_VIM, node)]
        coord = EtcdCoordination(config["coordination_url"].replace(ha_url, member.url))
        mine = {g["name"] for g in config["groups"]}
        assert {"db", "vimha", "api", "kv"} <= mine
        assert node != "ctl-3" or "lb" not in mine  # not one of the balancers
        try:
            for group in sorted(mine | {"lb", "other"}):
                if group in mine:
                    await coord.put(f"{prefix}{group}/members/{node}", "{}")
                else:
                    with pytest.raises(PermissionDenied):
                        await coord.put(f"{prefix}{group}/members/{node}", "{}")
        finally:
            await coord.close()
    ctl_url = layout.controller_config(nodes[2])["coordination"]["url"]
    assert parse_qs(ctl_url.partition("?")[2])["user"] == [controller_user(EMBEDDED_VIM, "ctl-3")]
    ctl = EtcdCoordination(ctl_url.replace(ha_url, member.url))
    try:
        await ctl.put(f"{prefix}lb/members/ctl-3", "{}")
        await ctl.put(f"/vimha/{EMBEDDED_VIM}/fenced/cmp-1", "{}")
    finally:
        await ctl.close()
