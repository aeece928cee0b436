"""The second libvirtd's layout (cloud/libvirtd.PrivateLibvirtd), without starting it: its
own folder over each of libvirt's fixed paths, a socket every namespace reaches at the same
path, a host UUID of its own."""

from __future__ import annotations

import re
from pathlib import Path

from vimha.cloud.libvirtd import PRIVATE, PrivateLibvirtd


def test_each_fixed_path_gets_a_folder_of_its_own(tmp_path: Path) -> None:
    daemon = PrivateLibvirtd(tmp_path / "lv2")
    daemon._lay_out()
    script = daemon._script()
    for name, path in PRIVATE.items():
        assert (tmp_path / "lv2" / name).is_dir()
        assert f"mount --bind {tmp_path / 'lv2' / name} {path}" in script
    # the daemons start after every mount, with pid files inside the private /run/libvirt
    assert script.index("virtlogd") > script.rindex("mount --bind")
    assert "--pid-file /run/libvirt/libvirtd.pid" in script.splitlines()[-1]


def test_it_listens_outside_the_private_folders_with_a_host_uuid_of_its_own(
    tmp_path: Path,
) -> None:
    one, two = PrivateLibvirtd(tmp_path / "a"), PrivateLibvirtd(tmp_path / "b")
    one._lay_out()
    conf = (tmp_path / "a" / "etc" / "libvirtd.conf").read_text()
    assert f'unix_sock_dir = "{tmp_path / "a" / "sock"}"' in conf
    assert one.uri == f"qemu+unix:///system?socket={tmp_path / 'a' / 'sock' / 'libvirt-sock'}"
    found = re.search(r'host_uuid = "([0-9a-f-]{36})"', conf)
    assert found is not None and found.group(1) == one.host_uuid != two.host_uuid
