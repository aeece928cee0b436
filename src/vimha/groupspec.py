"""A service group's declaration (issue 4), as each member's agent reads it: the group (name,
policy, members), this node's member (the handler that runs it, the address clients reach
it at) and the lease that holds its role. The same list is written into the config of every
member node; each agent runs the groups its node is a member of.

    groups:
      - name: kv
        policy: active-standby
        members: [ctl-1, ctl-2, ctl-3]
        address: 127.0.1.1:6390          # this node's member
        handler: {type: redis, port: 6390, bind: 127.0.1.1}
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vimha.domain.election import LeasePolicy
from vimha.domain.errors import InvalidInput
from vimha.domain.groups import GroupPolicy, OnStale, Peer, Policy


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProcessHandlerConfig(_Model):
    """A generic member: a long-running command, a health check, optional role commands
    (run with VIMHA_GROUP, VIMHA_ROLE, VIMHA_EPOCH and VIMHA_ACTIVE in their environment)."""

    type: Literal["process"] = "process"
    command: tuple[str, ...] = Field(min_length=1)
    check: Literal["process", "tcp", "http", "command"] = "process"
    target: str | None = Field(None, description="host:port (tcp) or URL (http)")
    check_command: tuple[str, ...] = ()
    timeout: float = Field(0.5, gt=0, description="Of a health check (s)")
    promote: tuple[str, ...] = Field((), description="Run when this member becomes active")
    demote: tuple[str, ...] = Field((), description="Run when it becomes a standby")


class RedisHandlerConfig(_Model):
    """A Redis server: a read-only replica until promoted (REPLICAOF NO ONE); standbys
    replicate from the active; the epoch is written under the key `vimha:epoch`."""

    type: Literal["redis"] = "redis"
    port: int = Field(ge=1, le=65535)
    bind: str = "127.0.0.1"
    server: str = Field("redis-server", description="The redis-server binary")
    data_dir: str | None = Field(None, description="Default: a folder under the run dir")
    timeout: float = Field(0.3, gt=0, description="Of a PING (s)")


class PostgresHandlerConfig(_Model):
    """PostgreSQL primary and hot standbys with streaming replication (agent/pg_handler.py)."""

    type: Literal["postgresql"] = "postgresql"
    port: int = Field(ge=1, le=65535)
    bind: str = "127.0.0.1"
    bin_dir: str | None = Field(None, description="Default: the newest /usr/lib/postgresql/*/bin")
    data_dir: str | None = Field(None, description="Default: a folder under the run dir")
    os_user: str = Field("postgres", description="The server's OS user when the agent is root")
    synchronous: bool = Field(
        True, description="Commits wait for one standby (ANY 1): no acknowledged write is lost"
    )
    synchronous_commit: Literal["on", "remote_write", "remote_apply", "local", "off"] = "on"
    databases: tuple[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")], ...] = Field(
        (), description="Databases the group serves: created by the first promotion"
    )
    fsync: bool = True
    timeout: float = Field(0.5, gt=0, description="Of a monitoring query (s)")
    stream_grace: float = Field(
        10.0,
        gt=0,
        description="A standby that has not streamed for this long from an active that "
        "answers as the primary is unhealthy, and cloned afresh at its restart (s): its "
        "history diverged, or it cannot reach the active",
    )
    password_file: str | None = Field(
        None,
        description="A file (0600) holding the password of the `postgres` role: with it, "
        "pg_hba.conf is written at every start of the member, `trusted` networks connect "
        "without a password and `networks` (the other members', the clients') with "
        "scram-sha-256; the agent, pg_basebackup and the standbys' streaming use it",
    )
    trusted: tuple[str, ...] = Field(
        ("127.0.0.0/8",),
        description="Networks (CIDR) that need no password (with password_file; without it "
        "only loopback is trusted, as always); [] to require one from everyone",
    )
    networks: tuple[str, ...] = Field(
        (),
        description="Networks (CIDR) of the other members and of the clients, authenticated "
        "with scram-sha-256 (needs password_file)",
    )

    @model_validator(mode="after")
    def _auth(self) -> PostgresHandlerConfig:
        for net in (*self.trusted, *self.networks):
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not a network (CIDR, e.g. 10.0.0.0/24)") from None
        if self.networks and self.password_file is None:
            raise ValueError("networks are authenticated with a password: set password_file")
        return self


class GaleraConfig(_Model):
    """A MariaDB Galera member (agent/galera_handler.py): where it talks to the others."""

    provider: str = "/usr/lib/galera/libgalera_smm.so"
    port: int = Field(4567, ge=1, le=65535, description="Group communication (gcomm)")
    ist_port: int = Field(4568, ge=1, le=65535, description="Incremental state transfers")
    sst_port: int = Field(4444, ge=1, le=65535, description="Full state transfers")
    sst_method: Literal["rsync"] = Field(
        "rsync",
        description="How a member with no usable data gets all of it from a donor (the donor "
        "is read-locked meanwhile); mariabackup is not supported yet",
    )
    suspect_timeout: float = Field(
        1.0,
        ge=0.5,
        description="A member silent this long is suspected, then evicted (s): how long the "
        "cluster's commits stall when a member dies or is cut off",
    )
    start_timeout: float = Field(
        600, gt=0, description="A member joining (state transfer) is left alone this long (s)"
    )

    @model_validator(mode="after")
    def _ports(self) -> GaleraConfig:
        if len({self.port, self.ist_port, self.sst_port}) != 3:
            raise ValueError("galera: port, ist_port and sst_port must differ")
        return self


class MariadbHandlerConfig(_Model):
    """MariaDB primary and replicas with GTID replication (agent/mariadb_handler.py)."""

    type: Literal["mariadb"] = "mariadb"
    port: int = Field(ge=1, le=65535)
    bind: str = "127.0.0.1"
    server: str = Field("mariadbd", description="The server binary")
    install_db: str = Field("mariadb-install-db", description="Initialises a data dir")
    data_dir: str | None = Field(None, description="Default: a folder under the run dir")
    user: str = Field("vimha", description="The account of clients and replicas (no password)")
    os_user: str = Field("mysql", description="The server's OS user when the agent is root")
    semi_sync: bool = Field(
        True,
        description="A commit is acknowledged once a replica has it (semi-synchronous, "
        "AFTER_SYNC): no acknowledged write is lost when the primary is",
    )
    fsync: bool = True
    buffer_pool: str = Field("64M", description="innodb_buffer_pool_size")
    timeout: float = Field(0.5, gt=0, description="Of a monitoring query (s)")
    stream_grace: float = Field(
        10.0,
        gt=0,
        description="A replica that has received nothing for this long from an active that "
        "answers as the primary is unhealthy, and replays the history afresh at its restart "
        "(s): its history diverged, or it cannot reach the active",
    )
    databases: tuple[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")], ...] = Field(
        (), description="Databases the group serves: created at promotion when missing"
    )
    galera: GaleraConfig = Field(
        default_factory=GaleraConfig,
        description="The Galera cluster (a group in `mode: cluster`)",
    )


class RabbitmqHandlerConfig(_Model):
    """A RabbitMQ cluster member (agent/rabbitmq_handler.py): an N-way cluster (`mode:
    cluster`), quorum queues replicated on every member."""

    type: Literal["rabbitmq"] = "rabbitmq"
    port: int = Field(ge=1, le=65535, description="AMQP")
    bind: str = "127.0.0.1"
    dist_port: int = Field(25672, ge=1, le=65535, description="Erlang distribution (the cluster)")
    cookie: str = Field(
        min_length=16, pattern=r"^[A-Za-z0-9]+$", description="The Erlang cookie, a secret"
    )
    bin_dir: str = Field("/usr/lib/rabbitmq/bin", description="rabbitmq-server and its tools")
    data_dir: str | None = Field(None, description="Default: a folder under the run dir")
    os_user: str = Field("rabbitmq", description="The server's OS user when the agent is root")
    tick_time: float = Field(
        2.0, ge=1, le=120, description="Erlang net_ticktime: a silent peer is down after ~this (s)"
    )
    detector_interval: float = Field(
        0.2,
        ge=0.05,
        le=10,
        description="The quorum queues' failure detector (aten) polls this often (s): a "
        "queue leader cut off is replaced after a few polls",
    )
    status_interval: float = Field(
        15.0,
        gt=0,
        description="Between `rabbitmq-diagnostics cluster_status` (s): each call boots an "
        "Erlang VM (about a second of CPU); a member whose AMQP port goes quiet is asked at once",
    )
    start_timeout: float = Field(
        300, gt=0, description="A member starting or joining is left alone this long (s)"
    )
    timeout: float = Field(0.5, gt=0, description="Of the AMQP port check (s)")


class KeepalivedHandlerConfig(_Model):
    """A virtual IP held by keepalived (VRRP v3) among the members of an all-active group:
    the load-balancer pair's address. vimha runs and supervises keepalived; VRRP moves the
    address (with gratuitous ARP) when the holder's node goes."""

    type: Literal["keepalived"] = "keepalived"
    binary: str = "keepalived"
    interface: str = Field(min_length=1, description="Where the adverts go and the VIP lives")
    vip: str = Field(min_length=3, description="address/prefix, e.g. 10.100.0.250/24")
    router_id: int = Field(51, ge=1, le=255, description="VRRP virtual router id")
    priority: int = Field(100, ge=1, le=254)
    advert_interval: float = Field(0.1, ge=0.01, le=40, description="VRRP v3 advert (s)")
    preempt: bool = Field(
        False,
        description="A higher-priority member that comes back takes the address back (its "
        "clients' connections through the other one are cut once more); off: it stays backup",
    )
    track: str | None = Field(
        None,
        min_length=1,
        description="A group this node is a member of (the balancers'): while its member here "
        "is not healthy, keepalived gives the address up (FAULT) and a peer takes it",
    )


class VipHandlerConfig(_Model):
    """A virtual IP as an active-standby member: the holder of the slot adds the address to
    its interface and announces it with gratuitous ARP; demoted, it removes it. Healthy while
    the interface is up. Needs root (netns mode or a real node)."""

    type: Literal["vip"] = "vip"
    interface: str = Field(min_length=1)
    vip: str = Field(min_length=3, description="address/prefix, e.g. 10.100.0.240/24")
    garps: int = Field(3, ge=1, le=20, description="Gratuitous ARPs sent on promotion")


class FrontendConfig(_Model):
    group: str = Field(min_length=1, description="The service group behind this frontend")
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Of the frontend (default: the group's name); two frontends of one group "
        "(writes and reads, say) need names of their own",
    )
    balance: Literal["all", "one"] = Field(
        "all",
        description="`one`: every connection goes to a single ready member (the same one while "
        "it stays ready), e.g. the writes of a Galera cluster, free of certification conflicts",
    )
    bind: str = Field(min_length=3, description="host:port the clients connect to")
    mode: Literal["tcp", "http"] = "tcp"
    check: Literal["tcp", "http", "redis"] = Field(
        "tcp", description="HAProxy's own health check of each server (redis: PING + master)"
    )
    path: str = "/"
    inter: float = Field(0.2, gt=0, description="Health-check interval (s)")
    fall: int = Field(2, ge=1)
    rise: int = Field(1, ge=1)
    server_timeout: float = Field(
        30.0,
        gt=0,
        description="A server silent this long (a hung member) is given up; in http mode the "
        "request is retried on another server",
    )


class HaproxyHandlerConfig(_Model):
    """A load balancer member: HAProxy with one frontend per group; vimha keeps each backend's
    servers in step with the group through HAProxy's runtime API (no reload)."""

    type: Literal["haproxy"] = "haproxy"
    binary: str = "haproxy"
    frontends: tuple[FrontendConfig, ...] = Field(min_length=1)
    connect_timeout: float = Field(
        0.05,
        gt=0,
        description="Before a retry on another server; also HAProxy's pause before it retries "
        "a backend with a single ready server (min(this, 1 s)): an active-standby group's "
        "clients wait it out once at every switch-over",
    )
    check_timeout: float = Field(0.2, gt=0, description="A health check's answer, at most")

    @model_validator(mode="after")
    def _names(self) -> HaproxyHandlerConfig:
        names = [f.name or f.group for f in self.frontends]
        if len(set(names)) != len(names):
            raise ValueError("frontends need distinct names (`name`, default: the group)")
        return self


class SdnHandlerConfig(_Model):
    """An SDN controller instance (`vimha sdn run`, issue 18): in an active-standby group the
    centralised model (the active is MASTER of every switch), in an all-active group the
    distributed one (each switch's master elected, balanced); every role request carries the
    group's epoch as its generation id."""

    type: Literal["sdn"] = "sdn"
    listen: str = Field(min_length=3, description="host:port where the switches connect")
    coordination_url: str = Field(
        min_length=1, description="The instance's coordination backend (the agent's)"
    )
    echo_interval: float = Field(0.1, gt=0, description="OpenFlow echo requests (s)")
    echo_misses: int = Field(3, ge=1, description="Unanswered echoes: the switch is lost")
    cut_off_grace: float = Field(
        0.5, ge=0, description="Switches a peer sees and this one not, for this long: cut off"
    )
    lease_ttl: float = Field(1.0, gt=0, description="Distributed model: masterships' lease (s)")
    timeout: float = Field(0.5, gt=0, description="Of a status request (s)")
    start_timeout: float = Field(
        60, gt=0, description="An instance starting (os-ken loads slowly) is left alone this long"
    )


HandlerConfig = Annotated[
    ProcessHandlerConfig
    | RedisHandlerConfig
    | PostgresHandlerConfig
    | MariadbHandlerConfig
    | RabbitmqHandlerConfig
    | HaproxyHandlerConfig
    | KeepalivedHandlerConfig
    | VipHandlerConfig
    | SdnHandlerConfig,
    Field(discriminator="type"),
]


class LeaseConfig(_Model):
    ttl: float = Field(3.0, description="Lease of the member's role (s): the last line of defence")
    renew: float = Field(0.5, description="Renewal interval (s)")
    demote_after: float = Field(
        2.0, description="Without a successful renewal for this long the active demotes itself"
    )

    def policy(self) -> LeasePolicy:
        return LeasePolicy(self.ttl, self.renew, self.demote_after)


class GroupConfig(_Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    policy: Policy
    members: tuple[str, ...] = Field(min_length=1, description="Member nodes")
    active: int = Field(1, ge=1, description="N active members (n-plus-m)")
    mode: Literal["slots", "cluster"] = Field(
        "slots",
        description="n-plus-m only: `cluster` makes every member an active of a quorum cluster",
    )
    max_lag: int | None = Field(None, ge=0, description="Replication positions a standby may lag")
    on_stale: OnStale = OnStale.WAIT
    address: str = Field(min_length=1, description="host:port where clients reach this member")
    handler: HandlerConfig
    monitor_interval: float = Field(0.1, gt=0, description="Local health checks (s)")
    monitor_failures: int = Field(
        2,
        ge=1,
        description="Failed checks in a row before a running member counts as failed (one slow "
        "answer under load is not a failure); a member whose process exited or is stopped "
        "counts at once",
    )
    monitor_grace: float = Field(
        0.0,
        ge=0,
        description="Failed checks of a running member (no answer, an error) count only once "
        "they have also lasted this long (s); a process gone or stopped counts at once. For a "
        "database or broker, whose switch-over or restart costs a re-seed or a state "
        "transfer, a member slow to answer under load is not a failed one",
    )
    restart_backoff: float = Field(1.0, gt=0, description="Between restarts of a failed member")
    start_grace: float = Field(
        0.0,
        ge=0,
        description="For this long (s) after its member was (re)started, failed checks of a "
        "running member (no answer, an error) do not count: on a loaded box a server still "
        "starting answers slowly, and a holder deposed for it is a switch-over with no fault. "
        "A process gone or stopped counts at once",
    )
    fresher_wait: float = Field(
        10.0,
        ge=0,
        description="A free slot waits this long (s) for a live standby that is fresher than "
        "every healthy one but unable to serve (a slow check, a restart): the commits only it "
        "acknowledged would be lost. After that it is passed over, with an alarm",
    )
    lease: LeaseConfig = LeaseConfig()

    @model_validator(mode="after")
    def _valid(self) -> GroupConfig:
        if len(set(self.members)) != len(self.members):
            raise ValueError("members must be unique")
        try:
            self.group_policy()
            self.lease.policy()
        except InvalidInput as exc:
            raise ValueError(exc.detail) from None
        if self.mode == "cluster" and self.policy is not Policy.N_PLUS_M:
            raise ValueError("mode: cluster is for n-plus-m groups")
        if self.handler.type == "sdn" and self.policy is Policy.N_PLUS_M:
            raise ValueError(
                "an sdn group is active-standby (centralised) or all-active (distributed)"
            )
        return self

    def group_policy(self) -> GroupPolicy:
        if self.policy is Policy.N_PLUS_M and self.mode == "cluster":
            return GroupPolicy(Policy.ALL_ACTIVE, len(self.members), quorum=True)
        active = self.active if self.policy is Policy.N_PLUS_M else 1
        return GroupPolicy(
            self.policy,
            len(self.members),
            active,
            self.max_lag,
            self.on_stale,
            fresher_wait=self.fresher_wait,
        )

    def published(self) -> dict[str, Any]:
        """What members publish of the group, for the controllers' view."""
        return {
            "name": self.name,
            "policy": self.policy.value,
            "mode": self.mode,
            "members": list(self.members),
            "active": self.group_policy().active,
            "maxLag": self.max_lag,
            "onStale": self.on_stale.value,
        }


def groups_prefix(vim: str) -> str:
    return f"/vimha/{vim}/groups/"


def fenced_prefix(vim: str) -> str:
    return f"/vimha/{vim}/fenced/"


def peer_from(doc: dict[str, Any]) -> Peer:
    """A member as it publishes itself (members/<node>)."""
    return Peer(
        str(doc.get("member", "")),
        str(doc.get("host", "")),
        bool(doc.get("healthy")),
        int(doc.get("position", -1)),
        doc.get("slot"),
        bool(doc.get("partitioned")),
        frozenset(str(k) for k in doc.get("seen") or ()),
        bool(doc.get("empty")),
    )
