"""The OpenFlow 1.3 southbound through os-ken (issue 18): an os-ken application and its
listener, run on os-ken's native hub (OS threads; os-ken 4 has no manager command, so vimha
instantiates the applications itself). Events reach the caller through `on_event`, from
os-ken's threads; requests are queued on a switch's connection and never block.

os-ken's native hub cannot kill a thread: when a switch's connection ends, the connection's
send thread would wait on its queue for ever, the datapath would never be declared dead, and
a reconnected switch would look connected twice. `_Datapath.serve` wakes it instead, and the
connection is declared dead at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

os.environ.setdefault("OSKEN_HUB_TYPE", "native")

from os_ken.base import app_manager
from os_ken.controller import controller as ofp_controller
from os_ken.controller import ofp_event
from os_ken.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from os_ken.controller.ofp_handler import OFPHandler
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from vimha.domain.sdn import COOKIE_MASK, COOKIE_PREFIX, Flow
from vimha.ports.southbound import (
    BarrierDone,
    FlowRefused,
    FlowsHeld,
    PortChanged,
    PortInfo,
    RoleAnswer,
    SouthEvent,
    SwitchDown,
    SwitchUp,
)

log = logging.getLogger("vimha.sdn.openflow")
ROLES = {"master": ofp.OFPCR_ROLE_MASTER, "slave": ofp.OFPCR_ROLE_SLAVE,
         "equal": ofp.OFPCR_ROLE_EQUAL, "nochange": ofp.OFPCR_ROLE_NOCHANGE}  # fmt: skip
ROLE_NAMES = {v: k for k, v in ROLES.items()}
ROLE_ERRORS = {ofp.OFPRRFC_STALE: "stale", ofp.OFPRRFC_UNSUP: "unsupported",
               ofp.OFPRRFC_BAD_ROLE: "bad role"}  # fmt: skip
ALL = 0xFFFFFFFFFFFFFFFF


F = TypeVar("F", bound=Callable[..., None])


def _on(event: Any, states: Any) -> Callable[[F], F]:
    """os-ken's handler decorator, typed."""
    return cast(Callable[[F], F], set_ev_cls(event, states))


class _Settings:
    """What the listener and connections use (one southbound per process: os-ken's
    application registry is global)."""

    echo_interval = 0.1
    echo_misses = 3
    on_event: Callable[[SouthEvent], None] = staticmethod(lambda ev: None)


class _Datapath(ofp_controller.Datapath):  # type: ignore[misc]
    unreplied_echo_requests: list[int]

    def __init__(self, socket: Any, address: Any) -> None:
        super().__init__(socket, address)
        self.echo_request_interval = _Settings.echo_interval
        self.max_unreplied_echo_requests = _Settings.echo_misses

    def _echo_request_loop(self) -> None:
        """An echo every interval; a switch that answered none for `misses` intervals is
        lost: its connection is declared dead (a cut link sends no FIN). An echo is not
        queued behind a send that blocks: the silence is what counts."""
        answered = time.monotonic()
        mine: set[int] = set()
        limit = self.echo_request_interval * (self.max_unreplied_echo_requests + 1)
        while self.send_q is not None and self.state != DEAD_DISPATCHER:
            replied = mine - set(self.unreplied_echo_requests)
            if replied:
                answered = time.monotonic()
                mine -= replied
            silent = time.monotonic() - answered
            if silent > limit:
                log.warning("switch at %s silent for %.2fs: lost", self.address[0], silent)
                break
            queue = self.send_q
            if queue is not None and queue.qsize() < queue.maxsize - 1:
                request = self.ofproto_parser.OFPEchoRequest(self)
                xid = self.set_xid(request)
                self.unreplied_echo_requests = [*self.unreplied_echo_requests[-15:], xid]
                mine = {x for x in mine if x in self.unreplied_echo_requests} | {xid}
                self.send_msg(request)
            hub.sleep(self.echo_request_interval)
        self.close()

    def serve(self) -> None:
        send = hub.spawn(self._send_loop)
        self.send_msg(self.ofproto_parser.OFPHello(self))
        hub.spawn(self._echo_request_loop)
        try:
            self._recv_loop()
        finally:
            self.set_state(DEAD_DISPATCHER)  # declared dead now, not when the threads end
            queue = self.send_q
            if queue is not None:
                queue.put((b"", True))  # wakes the send thread, which then ends
            send.join(2.0)
            self.is_active = False


def _connection(socket: Any, address: Any) -> None:
    dp = _Datapath(socket, address)
    try:
        dp.serve()
    except Exception:  # a malformed message from a switch: its connection ends
        log.exception("connection from %s failed", address)
    finally:
        dp.close()


class _Listener(OFPHandler):  # type: ignore[misc]
    """os-ken's OpenFlow handshake handler, listening where vimha says."""

    listen: tuple[str, int] = ("0.0.0.0", 6653)

    def start(self) -> Any:
        app_manager.OSKenApp.start(self)
        return hub.spawn(self._serve)

    def _serve(self) -> None:
        server = hub.StreamServer(self.listen, _connection)
        server.serve_forever()


def _port(desc: Any) -> PortInfo:
    live = bool(desc.state & ofp.OFPPS_LIVE) and not desc.state & ofp.OFPPS_LINK_DOWN
    name = desc.name.decode(errors="replace") if isinstance(desc.name, bytes) else desc.name
    return PortInfo(int(desc.port_no), name, live and not desc.config & ofp.OFPPC_PORT_DOWN)


class _App(app_manager.OSKenApp):  # type: ignore[misc]
    OFP_VERSIONS = [ofp.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = "vimha_sdn"
        self.datapaths: dict[int, Any] = {}
        self.lock = threading.Lock()
        self.flows: dict[int, set[int]] = {}

    def emit(self, event: SouthEvent) -> None:
        try:
            _Settings.on_event(event)
        except Exception:
            log.exception("an event was not handed over")

    @_on(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state(self, ev: Any) -> None:
        dp = ev.datapath
        if dp.id is None:
            return
        if ev.state == MAIN_DISPATCHER:
            with self.lock:
                self.datapaths[dp.id] = dp
            ports = tuple(_port(p) for p in dp.ports.values() if p.port_no <= ofp.OFPP_MAX)
            self.emit(SwitchUp(dp.id, ports, str(dp.address[0])))
        elif ev.state == DEAD_DISPATCHER:
            with self.lock:
                if id(self.datapaths.get(dp.id)) != id(dp):
                    return  # an older connection of a switch that is connected again
                del self.datapaths[dp.id]
            self.emit(SwitchDown(dp.id))

    @_on(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status(self, ev: Any) -> None:
        msg = ev.msg
        if msg.desc.port_no > ofp.OFPP_MAX:
            return
        self.emit(PortChanged(msg.datapath.id, _port(msg.desc), msg.reason == ofp.OFPPR_DELETE))

    @_on(ofp_event.EventOFPRoleReply, MAIN_DISPATCHER)
    def _role_reply(self, ev: Any) -> None:
        msg = ev.msg
        role = ROLE_NAMES.get(msg.role, str(msg.role))
        self.emit(RoleAnswer(msg.datapath.id, msg.xid, role, msg.generation_id, at=time.time()))

    @_on(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _error(self, ev: Any) -> None:
        msg = ev.msg
        dp = msg.datapath
        if dp.id is None:
            return
        if msg.type == ofp.OFPET_ROLE_REQUEST_FAILED:
            why = ROLE_ERRORS.get(msg.code, f"code {msg.code}")
            role, generation = "?", -1
            data = bytes(msg.data)
            if len(data) >= 24:
                role = ROLE_NAMES.get(int.from_bytes(data[8:12]), "?")
                generation = int.from_bytes(data[16:24])
            self.emit(RoleAnswer(dp.id, msg.xid, role, generation, why, time.time()))
            return
        try:
            detail = f"{ofp.ofp_error_type_to_str(msg.type)}: " + ofp.ofp_error_code_to_str(
                msg.type, msg.code
            )
        except Exception:
            detail = f"error type {msg.type} code {msg.code}"
        data = bytes(msg.data)
        cookie = None
        if len(data) >= 16 and data[1] == ofp.OFPT_FLOW_MOD:
            cookie = int.from_bytes(data[8:16])
        self.emit(FlowRefused(dp.id, msg.xid, cookie, detail))

    @_on(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def _flow_stats(self, ev: Any) -> None:
        msg = ev.msg
        dpid = msg.datapath.id
        with self.lock:
            held = self.flows.setdefault(dpid, set())
            held.update(int(s.cookie) for s in msg.body)
            if msg.flags & ofp.OFPMPF_REPLY_MORE:
                return
            cookies = frozenset(self.flows.pop(dpid))
        self.emit(FlowsHeld(dpid, cookies))

    @_on(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier(self, ev: Any) -> None:
        self.emit(BarrierDone(ev.msg.datapath.id, ev.msg.xid))

    def datapath(self, dpid: int) -> Any:
        with self.lock:
            return self.datapaths.get(dpid)


def _instructions(flow: Flow) -> list[Any]:
    actions = []
    for action in flow.actions:
        if action[0] == "output":
            actions.append(parser.OFPActionOutput(int(action[1]), 0))
        elif action[0] == "set_field":
            _, name, value = action
            actions.append(parser.OFPActionSetField(**{str(name): value}))
    out: list[Any] = []
    if actions:
        out.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions))
    if flow.metadata is not None:
        out.append(parser.OFPInstructionWriteMetadata(*flow.metadata))
    if flow.goto is not None:
        out.append(parser.OFPInstructionGotoTable(flow.goto))
    return out


def flow_mod(dp: Any, flow: Flow) -> Any:
    return parser.OFPFlowMod(
        dp,
        cookie=flow.cookie,
        table_id=flow.table,
        command=ofp.OFPFC_ADD,
        priority=flow.priority,
        buffer_id=ofp.OFP_NO_BUFFER,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch(**dict(flow.match)),
        instructions=_instructions(flow),
    )


def flow_delete(dp: Any, cookie: int) -> Any:
    return parser.OFPFlowMod(
        dp,
        cookie=cookie,
        cookie_mask=ALL,
        table_id=ofp.OFPTT_ALL,
        command=ofp.OFPFC_DELETE,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch(),
    )


class OsKenSouthbound:
    """The Southbound port on os-ken. One per process."""

    def __init__(self, echo_interval: float = 0.1, echo_misses: int = 3) -> None:
        _Settings.echo_interval = echo_interval
        _Settings.echo_misses = echo_misses
        self.app: _App | None = None
        self.manager: Any = None

    def start(self, host: str, port: int, on_event: Callable[[SouthEvent], None]) -> None:
        _Settings.on_event = staticmethod(on_event)
        _Listener.listen = (host, port)
        manager = app_manager.AppManager.get_instance()
        manager.applications_cls = {"ofp_event": _Listener, "vimha_sdn": _App}
        manager.instantiate_apps()
        self.manager = manager
        self.app = manager.applications["vimha_sdn"]
        log.info("OpenFlow 1.3 listener on %s:%d", host, port)

    def _dp(self, dpid: int) -> Any:
        return self.app.datapath(dpid) if self.app is not None else None

    def request_role(self, dpid: int, role: str, generation: int) -> int | None:
        dp = self._dp(dpid)
        if dp is None:
            return None
        msg = parser.OFPRoleRequest(dp, ROLES[role], generation)
        dp.set_xid(msg)
        return int(msg.xid) if dp.send_msg(msg) else None

    def request_flows(self, dpid: int) -> bool:
        dp = self._dp(dpid)
        if dp is None:
            return False
        msg = parser.OFPFlowStatsRequest(
            dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, COOKIE_PREFIX, COOKIE_MASK,
            parser.OFPMatch(),
        )  # fmt: skip
        return bool(dp.send_msg(msg))

    def apply(self, dpid: int, add: Sequence[Flow], delete: Sequence[int]) -> int | None:
        dp = self._dp(dpid)
        if dp is None:
            return None
        try:
            for cookie in delete:
                dp.send_msg(flow_delete(dp, cookie))
            for flow in add:
                dp.send_msg(flow_mod(dp, flow))
            barrier = parser.OFPBarrierRequest(dp)
            dp.set_xid(barrier)
            return int(barrier.xid) if dp.send_msg(barrier) else None
        except (OSError, ValueError, KeyError, TypeError) as exc:  # a flow os-ken cannot encode
            log.error("flows for %016x not sent: %s", dpid, exc)
            return None

    def disconnect(self, dpid: int) -> None:
        dp = self._dp(dpid)
        if dp is not None:
            dp.close()

    def stop(self) -> None:
        if self.manager is not None:
            self.manager.close()
