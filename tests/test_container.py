"""kubelab/container.py without Docker: the name-based addressing a swarm-run machine uses
(its address published in the shared volume, every machine's /etc/hosts kept in step) and the
commands each role runs in both addressing modes."""

from __future__ import annotations

import importlib

import pytest

from kubelab import container


@pytest.fixture
def by_name(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBELAB_ADDRESSING", "names")
    monkeypatch.setenv("KUBELAB_SHARED_DIR", str(tmp_path / "shared"))
    monkeypatch.setenv("KUBELAB_DATA_DIR", str(tmp_path / "data"))
    mod = importlib.reload(container)
    yield mod
    monkeypatch.delenv("KUBELAB_ADDRESSING")
    importlib.reload(container)


def test_hosts_block_is_kept_in_place(by_name, tmp_path):
    c = by_name
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n172.30.0.4\tstore-1\n")
    c.HOSTS_DIR.mkdir(parents=True)
    (c.HOSTS_DIR / "store-1").write_text("172.30.0.4")
    (c.HOSTS_DIR / "apiserver").write_text("172.30.0.9\n")
    (c.HOSTS_DIR / ".worker-1.tmp").write_text("172.30.0.7")  # a registration in progress
    assert c.sync_hosts_file(hosts)
    text = hosts.read_text()
    assert text.startswith("127.0.0.1\tlocalhost\n172.30.0.4\tstore-1\n")  # Docker's lines stay
    assert "172.30.0.9\tapiserver\n172.30.0.4\tstore-1\n" in text and "worker-1" not in text
    assert not c.sync_hosts_file(hosts)  # unchanged: not rewritten
    # a replaced task comes back with a new address: the block is replaced, not appended
    (c.HOSTS_DIR / "store-1").write_text("172.30.0.12")
    assert c.sync_hosts_file(hosts)
    text = hosts.read_text()
    assert text.count(c.HOSTS_BEGIN) == 1 and "172.30.0.12\tstore-1" in text
    assert text.count("store-1") == 2  # Docker's own line and ours


def test_roles_address_each_other_by_name_on_swarm(by_name, monkeypatch):
    c = by_name
    monkeypatch.setattr(c, "own_address", lambda: "172.30.0.33")
    monkeypatch.setattr(c, "write_host_kubeconfig", lambda cert_dir: None)
    store = c.argv_for("store-2")
    assert store[store.index("--initial-advertise-peer-urls") + 1] == "http://store-2:2380"
    assert "store-1=http://store-1:2380" in store[store.index("--initial-cluster") + 1]
    api = c.argv_for("apiserver")
    assert api[api.index("--advertise-address") + 1] == "172.30.0.33"
    assert api[api.index("--etcd-servers") + 1].startswith("http://store-1:2379,")
    worker = c.argv_for("worker-2")
    assert worker[worker.index("--node-ip") + 1] == "172.30.0.33"
    assert worker[worker.index("--server") + 1] == "apiserver:6444"
    assert worker[worker.index("--pod-cidr") + 1] == "10.244.2.0/24"


def test_roles_use_the_static_plan_with_compose():
    c = importlib.reload(container)
    assert not c.BY_NAME
    store = c.argv_for("store-3")
    assert store[store.index("--listen-peer-urls") + 1] == "http://172.30.0.13:2380"
    worker = c.argv_for("worker-1")
    assert worker[worker.index("--node-ip") + 1] == "172.30.0.101"
    assert worker[worker.index("--server") + 1] == "172.30.0.20:6444"
