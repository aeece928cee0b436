"""The `vimha` command as a user runs it: clear messages, exit codes, never a traceback."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import httpx
import yaml

from tests.conftest import cloud_port, free_port
from tests.system.conftest import TOKEN, ControllerProcess, vimha


def env(ctl: ControllerProcess) -> dict[str, str]:
    return {"VIMHA_URL": ctl.url, "VIMHA_TOKEN": TOKEN}


def test_events_alarms_ack_round_trip(controller: ControllerProcess) -> None:
    e = env(controller)
    r = vimha(
        "events",
        "send",
        "--object",
        "cmp-1",
        "--fault-type",
        "HOST_DOWN",
        "--severity",
        "critical",
        env=e,
    )
    assert r.returncode == 0, r.stderr
    assert "RAISED" in r.stdout
    r = vimha("alarms", "list", "--json", env=e)
    alarms = json.loads(r.stdout)
    assert [a["managedObjectId"] for a in alarms] == ["cmp-1"]
    alarm_id = alarms[0]["id"]
    r = vimha("alarms", "list", env=e)
    assert r.returncode == 0 and "CRITICAL" in r.stdout
    assert vimha("alarms", "ack", alarm_id, env=e).returncode == 0
    r = vimha("alarms", "ack", alarm_id, env=e)
    assert r.returncode == 1 and "409" in r.stderr and "Traceback" not in r.stderr
    r = vimha("alarms", "show", alarm_id, env=e)
    assert [h["kind"] for h in json.loads(r.stdout)["history"]] == ["RAISED", "ACKNOWLEDGED"]
    r = vimha("events", "send", "--object", "cmp-1", "--fault-type", "HOST_DOWN", "--clear", env=e)
    assert "CLEARED" in r.stdout
    r = vimha("alarms", "list", "--all", "--json", env=e)
    assert json.loads(r.stdout)[0]["perceivedSeverity"] == "CLEARED"


def test_subscriptions_cli(controller: ControllerProcess, consumer: object) -> None:
    e = env(controller)
    url = consumer.url  # type: ignore[attr-defined]
    r = vimha("subscriptions", "create", "--callback", url, "--severity", "CRITICAL", env=e)
    assert r.returncode == 0 and "created" in r.stdout, r.stderr
    r = vimha("subscriptions", "create", "--callback", url, "--severity", "CRITICAL", env=e)
    assert "identical subscription exists" in r.stdout
    subs = json.loads(vimha("subscriptions", "list", "--json", env=e).stdout)
    assert len(subs) == 1
    r = vimha("subscriptions", "create", "--callback", f"http://127.0.0.1:{free_port()}/x", env=e)
    assert r.returncode == 1 and "422" in r.stderr
    assert vimha("subscriptions", "delete", subs[0]["id"], env=e).returncode == 0
    r = vimha("subscriptions", "delete", subs[0]["id"], env=e)
    assert r.returncode == 1 and "404" in r.stderr


def test_errors_are_sentences_with_exit_codes(
    controller: ControllerProcess, tmp_path: Path
) -> None:
    cases = [
        (["alarms", "list"], {"VIMHA_URL": controller.url, "VIMHA_TOKEN": "wrong-token"}, 1, "401"),
        (
            ["alarms", "list"],
            {"VIMHA_URL": f"http://127.0.0.1:{free_port()}", "VIMHA_TOKEN": TOKEN},
            1,
            "cannot reach",
        ),
        (["alarms", "list", "--filter", "(eq,nope,1)"], env(controller), 1, "unknown attribute"),
        (["events", "send"], env(controller), 2, "--object"),
        (
            ["events", "send", "--file", str(tmp_path / "none.json")],
            env(controller),
            2,
            "none.json",
        ),
        (["controller", "--config", str(tmp_path / "missing.yaml")], {}, 2, "not found"),
        (["alarms", "frobnicate"], {}, 2, "No such command"),
    ]
    for args, extra, code, text in cases:
        r = vimha(*args, env=extra)
        assert r.returncode == code, (args, r.returncode, r.stderr)
        assert text in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr + r.stdout, args


def test_controller_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    ctl = ControllerProcess(tmp_path)
    r = vimha("controller", "--config", str(ctl.config))
    assert r.returncode == 1
    assert "vimha db upgrade" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {"delivery": {"initial_backoff": 9, "max_backoff": 1}, "auth": {"token_file": "x"}}
        )
    )
    r = vimha("controller", "--config", str(bad))
    assert r.returncode == 2 and "initial_backoff" in r.stderr


def test_up_detach_token_down(tmp_path: Path) -> None:
    data = tmp_path / "cloud"
    port = cloud_port()
    e = {"VIMHA_ADMIN_TOKEN": ""}
    r = vimha("up", "--detach", "--data-dir", str(data), "--port", str(port), env=e)
    assert r.returncode == 0, r.stderr
    try:
        token_file = data / "admin-token"
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        token = vimha("token", "--data-dir", str(data)).stdout.strip()
        assert token == token_file.read_text().strip()
        r = httpx.get(f"http://127.0.0.1:{port}/vim/v1/status", headers={"X-Auth-Token": token})
        assert r.status_code == 200 and r.json()["status"] == "UP"
        r = vimha("up", "--detach", "--data-dir", str(data), "--port", str(port), env=e)
        assert r.returncode == 1 and "already running" in r.stderr
    finally:
        r = vimha("down", "--data-dir", str(data))
    assert r.returncode == 0 and "stopped" in r.stdout
    assert vimha("down", "--data-dir", str(data)).stdout.strip() == "vimha was not running"
    assert "Traceback" not in (data / "vimha.log").read_text()


def test_ctrl_c_stops_the_embedded_cloud_cleanly(tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the whole process group, the dispatcher child included."""
    import signal
    import subprocess
    import sys
    import time

    port = cloud_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vimha",
            "up",
            "--data-dir",
            str(tmp_path / "d"),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/vimfm/api_versions").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "vimha up did not start"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = output.decode()
    assert proc.returncode == 0, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert "vimha controller stopped" in text


def test_up_stateful_refuses_a_data_dir_its_servers_cannot_reach() -> None:
    """The servers of --stateful run as mysql and rabbitmq when vimha is root: a data dir they
    cannot reach is refused at once, the folder in the way named, not left to fail later."""
    from tests.conftest import require_system
    from vimha.cloud import stateful

    require_system(os.geteuid() == 0, "root (the servers' own OS users)")
    require_system(not stateful.missing(), f"apt: {' '.join(stateful.missing())}")
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="vimha-reach-"))
    try:
        base.chmod(0o755)
        private = base / "private"
        private.mkdir(mode=0o700)
        private.chmod(0o700)
        data, port = str(private / "cloud"), str(cloud_port())
        r = vimha("up", "--stateful", "--data-dir", data, "--port", port)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "mysql user cannot reach" in r.stderr, r.stderr
        assert f"chmod o+x {private}," in r.stderr and "Traceback" not in r.stderr, r.stderr
    finally:
        shutil.rmtree(base)
