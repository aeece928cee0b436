#!/usr/bin/env bash
# Installs the Debian packages the test suite needs: PostgreSQL (the store's contract suite),
# iproute2 and nftables (network namespaces, links and partitions of `vimha up --netns`),
# etcd (the coordination contract suite starts a 3-member cluster on loopback), Redis (the
# redis handler of service groups, the embedded cloud's `kv` group) and HAProxy (the load
# balancer in front of all-active and N+M groups), keepalived (the balancers' virtual IP),
# MariaDB with Galera and rsync (the mariadb handler, both modes; rsync moves a state transfer),
# RabbitMQ (the rabbitmq handler); libvirt 9 with QEMU 7.2 (the libvirt hypervisor driver,
# the demo guest's system test), libvirt-dev and pkg-config (pip builds the libvirt binding
# with them) and busybox-static (the demo guest's initramfs; its kernel is Debian's generic
# one, fetched into a cache by scripts/build-guest-image.sh, never installed into /boot);
# Open vSwitch (the compute nodes' virtual switches, run by their agents with the userspace
# datapath: no kernel module is loaded), ping (the SDN tests' endpoints ping each other),
# Chromium (the dashboard's browser tests drive Debian's chromium through Playwright: its
# own browser download is not reachable) and npm where Node.js is missing (the dashboard's
# assets are built from the npm registry by scripts/build-ui-assets.sh).
# Only as root; on another machine it says what is missing and the tests skip.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v keepalived >/dev/null 2>&1 || need+=(keepalived)
command -v mariadbd >/dev/null 2>&1 || need+=(mariadb-server)
[ -e /usr/lib/galera/libgalera_smm.so ] || need+=(galera-4)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
command -v libvirtd >/dev/null 2>&1 || need+=(libvirt-daemon)
ls /usr/lib/*/libvirt/connection-driver/libvirt_driver_qemu.so >/dev/null 2>&1 \
    || need+=(libvirt-daemon-driver-qemu)
command -v virsh >/dev/null 2>&1 || need+=(libvirt-clients)
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
[ -e /usr/include/libvirt/libvirt.h ] || need+=(libvirt-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' \
    || need+=(busybox-static)
command -v ovs-vswitchd >/dev/null 2>&1 || need+=(openvswitch-switch)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
command -v chromium >/dev/null 2>&1 || need+=(chromium fonts-dejavu-core)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
    echo "install-system-deps: not root; missing: ${need[*]} (tests needing them will skip)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "install-system-deps: installed ${need[*]}"
