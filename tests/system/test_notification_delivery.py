"""At-least-once, in-order delivery with real processes: the consumer and the controller are
killed with SIGKILL mid-stream and restarted; nothing is lost and order is kept."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.consumer import ConsumerProcess
from tests.system.conftest import ControllerProcess


def subscribe(ctl: ControllerProcess, consumer: ConsumerProcess) -> str:
    with ctl.client() as c:
        r = c.post("/vimfm/v1/subscriptions", json={"callbackUri": consumer.url})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def send_events(ctl: ControllerProcess, n: int, rate: float, prefix: str = "h") -> None:
    with ctl.client() as c:
        start = time.monotonic()
        for i in range(n):
            body = {
                "managedObjectId": f"{prefix}{i:05d}",
                "faultType": "HOST_DOWN",
                "probableCause": "power",
                "perceivedSeverity": "MAJOR",
                "eventType": "EQUIPMENT_ALARM",
            }
            assert c.post("/vim/v1/events", json=body).status_code == 200
            delay = start + (i + 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def alarm_objects(received: list[dict[str, Any]]) -> list[str]:
    """Objects of AlarmNotifications by first receipt (at-least-once: duplicates allowed)."""
    seen: set[str] = set()
    out = []
    for n in received:
        if n["id"] in seen or n["notificationType"] != "AlarmNotification":
            continue
        seen.add(n["id"])
        out.append(n["alarm"]["managedObjectId"])
    return out


def test_consumer_killed_and_restarted_mid_stream(
    controller: ControllerProcess, consumer: ConsumerProcess
) -> None:
    subscribe(controller, consumer)
    n = 300
    sender = threading.Thread(target=send_events, args=(controller, n, 100.0))
    sender.start()
    consumer.wait_for(lambda got: len(alarm_objects(got)) >= 50)
    consumer.kill()
    time.sleep(1.0)
    consumer.start()
    sender.join()
    got = consumer.wait_for(lambda got: len(alarm_objects(got)) >= n, timeout=60)
    assert alarm_objects(got) == [f"h{i:05d}" for i in range(n)]
    undelivered = {"filter": "(eq,notificationType,AlarmNotification);(neq,status,DELIVERED)"}
    with controller.client() as c:
        deadline = time.monotonic() + 10  # outcomes are written back in batches
        while records := c.get("/vim/v1/notifications", params=undelivered).json():
            assert time.monotonic() < deadline, records
            time.sleep(0.1)


def test_controller_killed_with_undelivered_notifications(
    controller: ControllerProcess, consumer: ConsumerProcess
) -> None:
    subscribe(controller, consumer)
    consumer.kill()  # nobody to deliver to: everything stays pending in the store
    send_events(controller, 40, 200.0)
    controller.kill()
    consumer.start()
    time.sleep(0.5)
    assert alarm_objects(consumer.received()) == []
    controller.start()
    got = consumer.wait_for(lambda got: len(alarm_objects(got)) >= 40, timeout=60)
    assert alarm_objects(got) == [f"h{i:05d}" for i in range(40)]
    rebuilt = consumer.wait_for(
        lambda got: any(x["notificationType"] == "AlarmListRebuiltNotification" for x in got)
    )
    kinds = [x["notificationType"] for x in rebuilt]
    # The first start announces a rebuilt list too; the restart adds one after the backlog.
    assert kinds.count("AlarmListRebuiltNotification") >= 1


def test_slow_consumer_does_not_delay_a_fast_one(
    controller: ControllerProcess, consumer: ConsumerProcess, tmp_path: Any
) -> None:
    from tests.conftest import free_port

    broken = ConsumerProcess(tmp_path / "broken.jsonl", free_port(), "--fail-every", "1")
    broken.start()
    try:
        with controller.client() as c:
            # --fail-every 1 answers 500 to every POST but 204 to the test GET.
            assert (
                c.post("/vimfm/v1/subscriptions", json={"callbackUri": broken.url}).status_code
                == 201
            )
        subscribe(controller, consumer)
        send_events(controller, 50, 500.0)
        got = consumer.wait_for(lambda got: len(alarm_objects(got)) >= 50, timeout=30)
        assert alarm_objects(got) == [f"h{i:05d}" for i in range(50)]
        with controller.client() as c:  # the dispatcher reports its lanes every second
            deadline = time.monotonic() + 10
            while True:
                lanes = c.get("/vim/v1/status").json()["deliveryLanes"]
                if any(lane["queued"] > 0 for lane in lanes.values()):
                    break
                assert time.monotonic() < deadline, lanes
                time.sleep(0.2)
    finally:
        broken.stop()


def test_sigterm_stops_cleanly(controller: ControllerProcess) -> None:
    assert controller.stop() == 0
    assert "vimha controller stopped" in controller.log.read_text()
    try:
        httpx.get(f"{controller.url}/vimfm/api_versions", timeout=0.5)
        raise AssertionError("still answering")
    except httpx.HTTPError:
        pass


def _children(pid: int) -> list[int]:
    """Dispatcher children of a controller (not multiprocessing's resource tracker)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline:
                out.append(int(child))
    return out


def test_dispatcher_process_killed_is_restarted_and_loses_nothing(
    controller: ControllerProcess, consumer: ConsumerProcess
) -> None:
    subscribe(controller, consumer)
    assert controller.proc is not None
    [child] = _children(controller.proc.pid)
    sender = threading.Thread(target=send_events, args=(controller, 200, 100.0))
    sender.start()
    consumer.wait_for(lambda got: len(alarm_objects(got)) >= 30)
    os.kill(child, signal.SIGKILL)
    sender.join()
    got = consumer.wait_for(lambda got: len(alarm_objects(got)) >= 200, timeout=60)
    assert alarm_objects(got) == [f"h{i:05d}" for i in range(200)]
    with controller.client() as c:
        status = c.get("/vim/v1/status").json()
    assert status["dispatcherRestarts"] == 1
    assert child not in _children(controller.proc.pid)
