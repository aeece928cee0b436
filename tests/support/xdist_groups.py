"""How pytest-xdist shares the tests between workers under `--dist loadfile`
(scripts/run-tests.sh: the unit, component and contract tests): each module on one worker,
and the system test modules that share something of the machine beyond their own ports and
folders as one unit, one after another on one worker, should the system tests ever run on
several (they run one after another now: see scripts/run-tests.sh). pytest-xdist's own
`loadgroup` marks do nothing with pytest 9, whose node ids it can no longer suffix:
tests/conftest.py installs this scheduler instead."""

from __future__ import annotations

from xdist.scheduler import LoadFileScheduling

SHARED = {
    # one libvirtd for qemu:///system and its guests
    "libvirt": ("test_qemu_guest", "test_libvirt_cloud", "test_libvirt_migration"),
    # clouds in network namespaces: the host's bridges, nftables, keepalived's addresses,
    # and failover timings measured on the data plane
    "netns": (
        "test_ha_cloud",
        "test_netns_cloud",
        "test_netns_groups",
        "test_netns_partition",
        "test_netns_vip",
        "test_sdn",
        "test_stateful_cloud",
    ),
    # RabbitMQ nodes of the same names on the host's epmd
    "epmd": ("test_cli", "test_rabbitmq_group"),
}


def unit_of(nodeid: str) -> str:
    """The work unit of a test: its module's path, or the name of its module's group."""
    path = nodeid.split("::", 1)[0]
    module = path.rsplit("/", 1)[-1].removesuffix(".py")
    return next((group for group, modules in SHARED.items() if module in modules), path)


class GroupedFileScheduling(LoadFileScheduling):
    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)
