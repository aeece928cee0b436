#!/usr/bin/env bash
# Installs the Debian packages the test suite needs: PostgreSQL (the store's contract suite),
# iproute2 and nftables (network namespaces, links and partitions of `vimha up --netns`),
# etcd (the coordination contract suite starts a 3-member cluster on loopback), Redis (the
# redis handler of service groups, the embedded cloud's `kv` group) and HAProxy (the load
# balancer in front of all-active and N+M groups), keepalived (the balancers' virtual IP),
# MariaDB with Galera and rsync (the mariadb handler, both modes; rsync moves a state transfer)
# and RabbitMQ (the rabbitmq handler).
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
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
    echo "install-system-deps: not root; missing: ${need[*]} (tests needing them will skip)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "install-system-deps: installed ${need[*]}"
