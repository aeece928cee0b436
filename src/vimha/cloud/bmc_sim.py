"""A simulated BMC speaking Redfish, one per node of the embedded cloud, so that the
production driver (sushy) is the path exercised. Serves the service root, one
ComputerSystem (power state, health rollup, Reset action, a System Event Log), one Chassis
with Thermal and Power.
Faults are injected through /sim: POST /sim/psu-fail, /sim/overheat, /sim/disconnect (Redfish
requests then get no answer, as when the BMC's network is cut), /sim/power-cut (the node
loses its power with no Redfish request: a pulled plug, heard or not), /sim/heal. A power
change is applied at once (sushy-tools' fake driver takes 1-11 s) and can run a hook (the
embedded cloud stops or starts the node's processes).

    python -m vimha.cloud.bmc_sim --port 9400 --user admin --password secret
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SEL = "/redfish/v1/Systems/1/LogServices/SEL"
ALLOWED_RESETS = ["On", "ForceOff", "GracefulShutdown", "ForceRestart", "PowerCycle"]


class BmcState:
    def __init__(self, on_power: Callable[[bool], None] = lambda on: None) -> None:
        self.lock = threading.Lock()
        self.power_on = True
        self.psu_ok = True
        self.cpu_temp = 45.0
        self.connected = True  # False: its network is cut (Redfish gets no answer)
        self.on_power = on_power
        self.log: list[dict[str, Any]] = []  # the System Event Log (SEL), oldest first

    def record(self, severity: str, message: str, sensor: str) -> None:
        with self.lock:
            n = len(self.log) + 1
            self.log.append(
                {
                    "@odata.id": f"{SEL}/Entries/{n}",
                    "@odata.type": "#LogEntry.v1_4_0.LogEntry",
                    "Id": str(n),
                    "Name": f"SEL entry {n}",
                    "EntryType": "SEL",
                    "Created": datetime.now(UTC).isoformat(timespec="seconds"),
                    "Severity": severity,
                    "Message": message,
                    "SensorType": sensor,
                }
            )

    def cut(self) -> None:
        """The node loses its power with no request (a pulled plug, a tripped PDU): off,
        whether or not the BMC's network answers; read as off once it does."""
        with self.lock:
            changed, self.power_on = self.power_on, False
        if changed:
            self.record("OK", "System power off (power lost)", "System Event")
            self.on_power(False)

    def health(self) -> str:
        if not self.psu_ok or self.cpu_temp >= 90:
            return "Critical"
        return "Warning" if self.cpu_temp >= 80 else "OK"

    def reset(self, kind: str) -> None:
        on = kind in ("On", "ForceRestart", "PowerCycle")
        with self.lock:
            changed = on != self.power_on
            self.power_on = on
        if changed or kind in ("ForceRestart", "PowerCycle"):
            self.record("OK", f"System power {'on' if on else 'off'} ({kind})", "System Event")
            self.on_power(on)


def _doc(path: str, state: BmcState) -> dict[str, Any] | None:
    health = state.health()
    docs: dict[str, dict[str, Any]] = {
        "/redfish/v1": {
            "@odata.id": "/redfish/v1/",
            "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot",
            "Id": "RootService",
            "Name": "vimha simulated BMC",
            "RedfishVersion": "1.6.0",
            "UUID": "00000000-0000-0000-0000-000000000001",
            "Systems": {"@odata.id": "/redfish/v1/Systems"},
            "Chassis": {"@odata.id": "/redfish/v1/Chassis"},
        },
        "/redfish/v1/Systems": {
            "@odata.id": "/redfish/v1/Systems",
            "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
            "Name": "Systems",
            "Members@odata.count": 1,
            "Members": [{"@odata.id": "/redfish/v1/Systems/1"}],
        },
        "/redfish/v1/Systems/1": {
            "@odata.id": "/redfish/v1/Systems/1",
            "@odata.type": "#ComputerSystem.v1_10_0.ComputerSystem",
            "Id": "1",
            "Name": "node",
            "SystemType": "Physical",
            "PowerState": "On" if state.power_on else "Off",
            "Status": {"State": "Enabled", "Health": health, "HealthRollup": health},
            "Links": {"Chassis": [{"@odata.id": "/redfish/v1/Chassis/1"}]},
            "LogServices": {"@odata.id": "/redfish/v1/Systems/1/LogServices"},
            "Actions": {
                "#ComputerSystem.Reset": {
                    "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
                    "ResetType@Redfish.AllowableValues": ALLOWED_RESETS,
                }
            },
        },
        "/redfish/v1/Systems/1/LogServices": {
            "@odata.id": "/redfish/v1/Systems/1/LogServices",
            "@odata.type": "#LogServiceCollection.LogServiceCollection",
            "Name": "Log Services",
            "Members@odata.count": 1,
            "Members": [{"@odata.id": SEL}],
        },
        SEL: {
            "@odata.id": SEL,
            "@odata.type": "#LogService.v1_1_0.LogService",
            "Id": "SEL",
            "Name": "System Event Log",
            "Entries": {"@odata.id": f"{SEL}/Entries"},
        },
        f"{SEL}/Entries": {
            "@odata.id": f"{SEL}/Entries",
            "@odata.type": "#LogEntryCollection.LogEntryCollection",
            "Name": "SEL entries",
            "Members@odata.count": len(state.log),
            "Members": list(state.log),  # expanded, as many BMCs answer
        },
        "/redfish/v1/Chassis": {
            "@odata.id": "/redfish/v1/Chassis",
            "@odata.type": "#ChassisCollection.ChassisCollection",
            "Name": "Chassis",
            "Members@odata.count": 1,
            "Members": [{"@odata.id": "/redfish/v1/Chassis/1"}],
        },
        "/redfish/v1/Chassis/1": {
            "@odata.id": "/redfish/v1/Chassis/1",
            "@odata.type": "#Chassis.v1_10_0.Chassis",
            "Id": "1",
            "Name": "chassis",
            "ChassisType": "RackMount",
            "PowerState": "On" if state.power_on else "Off",
            "Status": {"State": "Enabled", "Health": health, "HealthRollup": health},
            "Thermal": {"@odata.id": "/redfish/v1/Chassis/1/Thermal"},
            "Power": {"@odata.id": "/redfish/v1/Chassis/1/Power"},
        },
        "/redfish/v1/Chassis/1/Thermal": {
            "@odata.id": "/redfish/v1/Chassis/1/Thermal",
            "@odata.type": "#Thermal.v1_5_0.Thermal",
            "Id": "Thermal",
            "Name": "Thermal",
            "Temperatures": [
                {
                    "@odata.id": "/redfish/v1/Chassis/1/Thermal#/Temperatures/0",
                    "MemberId": "0",
                    "Name": "CPU1 Temp",
                    "ReadingCelsius": state.cpu_temp,
                    "UpperThresholdNonCritical": 80,
                    "UpperThresholdCritical": 90,
                    "Status": {
                        "State": "Enabled",
                        "Health": "OK"
                        if state.cpu_temp < 80
                        else ("Warning" if state.cpu_temp < 90 else "Critical"),
                    },
                }
            ],
            "Fans": [
                {
                    "@odata.id": "/redfish/v1/Chassis/1/Thermal#/Fans/0",
                    "MemberId": "0",
                    "Name": "Fan1",
                    "Reading": 5000,
                    "ReadingUnits": "RPM",
                    "Status": {"State": "Enabled", "Health": "OK"},
                }
            ],
        },
        "/redfish/v1/Chassis/1/Power": {
            "@odata.id": "/redfish/v1/Chassis/1/Power",
            "@odata.type": "#Power.v1_5_0.Power",
            "Id": "Power",
            "Name": "Power",
            "PowerSupplies": [
                {
                    "@odata.id": "/redfish/v1/Chassis/1/Power#/PowerSupplies/0",
                    "MemberId": "0",
                    "Name": "PSU1",
                    "Status": {
                        "State": "Enabled" if state.psu_ok else "UnavailableOffline",
                        "Health": "OK" if state.psu_ok else "Critical",
                    },
                }
            ],
        },
    }
    return docs.get(path.rstrip("/") or "/redfish/v1")


def make_handler(state: BmcState, user: str, password: str) -> type[BaseHTTPRequestHandler]:
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        # One request per connection: simple and robust (the driver copes with both kinds).
        protocol_version = "HTTP/1.0"

        def handle_one_request(self) -> None:
            try:
                super().handle_one_request()
            except (ConnectionError, TimeoutError):
                self.close_connection = True
            except Exception:  # never drop a connection without an answer
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self._send(500, {"error": {"message": "simulator error"}})

        def _send(self, status: int, doc: Any = None) -> None:
            body = json.dumps(doc).encode() if doc is not None else b""
            self.send_response(status)
            if body:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")  # never reused: no race with our close
            self.end_headers()
            self.wfile.write(body)

        def _authorised(self) -> bool:
            if self.path.startswith("/sim/"):
                return True
            if not state.connected:  # cut off: no answer at all
                self.close_connection = True
                return False
            if self.path.rstrip("/") == "/redfish/v1":
                return True
            if self.headers.get("Authorization") != expected:
                self._send(401, {"error": {"message": "authentication required"}})
                return False
            return True

        def do_GET(self) -> None:
            if not self._authorised():
                return
            doc = _doc(self.path.split("?")[0], state)
            self._send(200, doc) if doc is not None else self._send(404)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length) if length else b""
            if not self._authorised():
                return
            if self.path == "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset":
                try:
                    kind = json.loads(raw or b"{}").get("ResetType")
                except ValueError:
                    kind = None
                if kind not in ALLOWED_RESETS:
                    self._send(400, {"error": {"message": f"bad ResetType {kind!r}"}})
                    return
                state.reset(kind)
                self._send(204)
            elif self.path == "/sim/psu-fail":
                state.psu_ok = False
                state.record("Critical", "Power supply PSU1 failed: input lost", "Power Supply")
                self._send(204)
            elif self.path == "/sim/overheat":
                state.cpu_temp = 95.0
                state.record("Critical", "CPU1 Temp 95 C: upper critical threshold", "Temperature")
                self._send(204)
            elif self.path == "/sim/heal":
                if not state.psu_ok or state.cpu_temp >= 80:
                    state.record("OK", "All sensors back to normal", "System Event")
                state.psu_ok, state.cpu_temp, state.connected = True, 45.0, True
                self._send(204)
            elif self.path == "/sim/power-cut":
                state.cut()
                self._send(204)
            elif self.path == "/sim/disconnect":
                state.connected = False
                self._send(204)
            else:
                self._send(404)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


def serve(
    host: str, port: int, user: str, password: str, state: BmcState | None = None
) -> ThreadingHTTPServer:
    """A running simulated BMC (in a thread); call .shutdown() to stop it."""
    server = ThreadingHTTPServer((host, port), make_handler(state or BmcState(), user, password))
    serve = functools.partial(server.serve_forever, poll_interval=0.1)  # quick to shut down
    threading.Thread(target=serve, name=f"bmc-{port}", daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", default="password")
    args = parser.parse_args()
    ThreadingHTTPServer(
        (args.host, args.port), make_handler(BmcState(), args.user, args.password)
    ).serve_forever()


if __name__ == "__main__":
    main()
