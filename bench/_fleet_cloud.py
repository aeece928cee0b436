"""The control plane of `bench/fleet.py`: `vimha up --ha` (cloud/ha.py: 3 etcd members, the
controllers' PostgreSQL as the `db` group, the 3 controllers as the `vimha` group, the HAProxy
pair, run by the 8 nodes' agents), with the fleet's hosts added to the controllers' config
inventory (as `host_inventory` declares the embedded nodes) and their agents' tokens.

    python bench/_fleet_cloud.py DATA_DIR PORT INVENTORY.json

INVENTORY.json: {"hosts": [...], "tokens": [...], "controller": {...overrides},
"start_grace": s}. Runs until
SIGTERM, then stops everything it started (the launcher's stop, as `vimha down` does).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from vimha.cloud.embedded import prepare_cloud, run_ha_cloud
from vimha.config import _merge


def patch_controllers(data_dir: Path, inventory: dict[str, Any]) -> None:
    for config_file in sorted(data_dir.glob("nodes/*/controller.yaml")):
        config: dict[str, Any] = yaml.safe_load(config_file.read_text())
        config["hosts"] += inventory["hosts"]
        config["auth"]["tokens"] += inventory["tokens"]
        config = _merge(config, inventory.get("controller", {}))
        config_file.write_text(yaml.safe_dump(config))


def patch_agents(data_dir: Path, start_grace: float) -> None:
    """A controller that judges a large fleet starts slowly on a loaded box (imports, the
    inventory, the fencing records read back): its agent lets it start for `start_grace`
    seconds before a failed check counts (restarted at 30 s, it never came up under a load
    of 20 on 2 cores)."""
    for agent_file in sorted(data_dir.glob("nodes/*/agent.yaml")):
        config: dict[str, Any] = yaml.safe_load(agent_file.read_text())
        for group in config.get("groups", []):
            if group["name"] == "vimha":
                group["start_grace"] = start_grace
        agent_file.write_text(yaml.safe_dump(config))


def main() -> None:
    data_dir, port, inventory_file = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    _, launcher = prepare_cloud(data_dir, port, ha=True)
    inventory = json.loads(inventory_file.read_text())
    patch_controllers(data_dir, inventory)
    patch_agents(data_dir, float(inventory.get("start_grace", 300.0)))
    sys.exit(asyncio.run(run_ha_cloud(launcher)))


if __name__ == "__main__":
    main()
