"""A real 3-member etcd cluster on loopback for the coordination tests (the same members as
`vimha up --ha` runs)."""

from vimha.cloud.etcd import EtcdCluster, find_etcd

__all__ = ["EtcdCluster", "find_etcd"]
