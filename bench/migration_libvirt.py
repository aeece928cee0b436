"""Live migration with the libvirt driver, for real (issue 19, VNF-7): two libvirt daemons on
this machine, each in a mount namespace of its own (cloud/libvirtd.PrivateLibvirtd), a
`LibvirtHypervisor` on each, and one demo guest (QEMU by software emulation, `--ram` MiB)
on a host bridge, migrated live `--migrations` times back and forth, as the agents'
migration runner does it (tests/support/live_migration.py: the destination's
`prepare_incoming`, the source's `migrate_live` with `--max-downtime` ms, the agent's probe
asking the guest's port over HTTP every `--probe-ms`, a fresh connection each time).

Per migration: the interruption the probe saw (the longest time without an answer around
it, to within one probe interval: what the agent records), the silence around the moment
the guest ran again on the destination (from the last answer before it to the first after
it: under software emulation the guest also answers slowly while its memory is copied),
the downtime libvirt measured (the destination's completed job), the time `migrate_live`
took and the destination's prepare. Reported as p50/p99/max. Target (issue 19): a live
migration interrupts the guest <= 300 ms.

Needs root, libvirtd + QEMU, the demo guest image (built into .vimha-cache/ if missing).
Prints JSON, then a one-line summary.
Usage: .venv/bin/python bench/migration_libvirt.py [--migrations 10] [--ram 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
from tests.support.guests import spec  # noqa: E402
from tests.support.live_migration import Measured, host_bridge, migrate  # noqa: E402

from _harness import percentile  # noqa: E402
from vimha.cloud.guest_image import build  # noqa: E402
from vimha.cloud.libvirtd import PrivateLibvirtd  # noqa: E402

BOOT_WITHIN = 300.0


def stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    return {
        "p50": round(percentile(values, 50), 1),
        "p99": round(percentile(values, 99), 1),
        "max": round(max(values), 1),
    }


async def answered(url: str, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            try:
                r = await client.get(url)
                r.raise_for_status()
                body: dict[str, Any] = r.json()
                return body
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


async def run(
    args: argparse.Namespace, daemons: list[PrivateLibvirtd], image: Path
) -> dict[str, Any]:
    from vimha.drivers.hv_libvirt import LibvirtHypervisor

    states = [Path(tempfile.mkdtemp(prefix=f"vh-bench-lm-{i}-")) for i in range(2)]
    hvs = [
        LibvirtHypervisor(
            f"libvirt+{d.uri}", states[i], scope=f"bench-{i}", migration_address="127.0.0.1"
        )
        for i, d in enumerate(daemons)
    ]
    done: list[Measured] = []
    with host_bridge("vh-blm") as port:
        guest = spec(str(uuid.uuid4()), image, (port,), name="bench-mig", ram_mib=args.ram)
        url = f"http://{port.ip}:8080/"
        try:
            started = time.monotonic()
            await hvs[0].spawn(guest)
            first = await answered(url, BOOT_WITHIN)
            boot_s = time.monotonic() - started
            for n in range(args.migrations):
                src, dst = hvs[n % 2], hvs[(n + 1) % 2]
                m = await migrate(src, dst, guest, args.max_downtime, 120.0, args.probe_ms / 1000)
                if await answered(url, 30) != first:
                    raise RuntimeError(f"migration {n + 1}: the guest answers differently")
                done.append(m)
                print(
                    f"migration {n + 1}/{args.migrations}: interrupted {m.interruption_ms:.0f} ms "
                    f"(around the resumption {m.switchover_ms} ms; the longest silence ended "
                    f"{m.silence_ends_s:+.2f} s from it), "
                    f"libvirt downtime {m.downtime_ms} ms, migrate_live {m.migrate_s:.2f} s",
                    file=sys.stderr,
                )
        finally:
            for hv in hvs:
                try:
                    await hv.destroy(guest.instance_id)
                finally:
                    await hv.close()
            for state in states:
                shutil.rmtree(state, ignore_errors=True)
    return {
        "migrations": len(done),
        "ram_mib": args.ram,
        "max_downtime_ms": args.max_downtime,
        "probe_every_ms": args.probe_ms,
        "boot_to_http_s": round(boot_s, 1),
        "interruption_ms": stats([m.interruption_ms for m in done]),
        "switchover_ms": stats([m.switchover_ms for m in done if m.switchover_ms is not None]),
        "libvirt_downtime_ms": stats([m.downtime_ms for m in done if m.downtime_ms is not None]),
        "migrate_live_s": stats([m.migrate_s for m in done]),
        "prepare_s": stats([m.prepare_s for m in done]),
        "each": [
            {
                "interruption_ms": m.interruption_ms,
                "switchover_ms": m.switchover_ms,
                "longest_silence_ends_s": m.silence_ends_s,
                "libvirt_downtime_ms": m.downtime_ms,
                "migrate_live_s": m.migrate_s,
                "prepare_s": m.prepare_s,
            }
            for m in done
        ],
        "machine": {"cpus": os.cpu_count(), "emulation": "qemu (TCG)"},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--migrations", type=int, default=10, help="live migrations, A<->B")
    parser.add_argument("--ram", type=int, default=256, help="the guest's memory, MiB")
    parser.add_argument("--max-downtime", type=int, default=300, help="tolerated, ms")
    parser.add_argument("--probe-ms", type=float, default=10.0, help="probe interval, ms")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (libvirtd, bridges, mount namespaces)")
    image = build(Path(os.environ.get("VIMHA_CACHE") or ROOT / ".vimha-cache"))
    daemons = [PrivateLibvirtd(Path(tempfile.mkdtemp(prefix=f"vh-bench-lv{i}-"))) for i in "ab"]
    try:
        for d in daemons:
            d.start()
        result = asyncio.run(run(args, daemons, image))
    finally:
        for d in daemons:
            d.stop()
            shutil.rmtree(d.base, ignore_errors=True)
    print(json.dumps(result, indent=2))
    i, d, t = result["interruption_ms"], result["libvirt_downtime_ms"], result["migrate_live_s"]
    sw = result["switchover_ms"]
    print(
        f"libvirt live migration ({result['migrations']}x, {args.ram} MiB guest, TCG, two "
        f"libvirtd on one machine): interruption seen by an HTTP probe every "
        f"{args.probe_ms:g} ms p50 {i['p50']} ms, p99 {i['p99']} ms (around the resumption p50 "
        f"{sw['p50']} ms, p99 {sw['p99']} ms); libvirt's downtime p50 "
        f"{d['p50']} ms, p99 {d['p99']} ms; migrate_live p50 {t['p50']} s, p99 {t['p99']} s "
        f"(target <= 300 ms interruption)"
    )


if __name__ == "__main__":
    main()
