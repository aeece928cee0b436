"""`vimha sdn run --config FILE`: one SDN controller instance, until a signal: the os-ken
southbound on its OS threads, the instance's loop on asyncio."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from vimha.drivers.clock import SystemClock
from vimha.drivers.coordination import open_coordination
from vimha.sdn.config import SdnConfig
from vimha.sdn.control import serve_control
from vimha.sdn.instance import SdnInstance

log = logging.getLogger("vimha.sdn")


async def run_sdn(cfg: SdnConfig) -> int:
    from vimha.drivers.openflow import OsKenSouthbound  # os-ken is imported by this process only

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    coord = open_coordination(cfg.coordination_url, SystemClock())
    south = OsKenSouthbound(cfg.echo_interval, cfg.echo_misses)
    instance = SdnInstance(cfg, coord, south)
    control = asyncio.create_task(serve_control(instance, Path(cfg.control_socket), stop))
    log.info(
        "SDN instance %s (%s model) on %s, control socket %s",
        cfg.name, cfg.model.value, cfg.listen, cfg.control_socket,
    )  # fmt: skip
    try:
        await instance.run(stop)
    finally:
        stop.set()
        await control
        await coord.close()
    return 0
