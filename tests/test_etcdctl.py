"""The real etcdctl 3.4 against a real 3-member etcdlite cluster, asserting on etcdctl's output.

Expected outputs, exit codes and error texts are etcdctl 3.4.23's as printed against a real etcd
3.4.23 (see ../shared/store-notes.md, "etcdctl 3.4 on the wire"). Tests share one cluster and
each works under its own key prefix; every background etcdctl (watch, keep-alive) is stopped by
its PID in a finally block.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import threading
from contextlib import contextmanager

import pytest

from .conftest import have, wait_for

pytestmark = pytest.mark.skipif(not have("etcdctl"), reason="etcdctl is not installed")

COMPACTED = "etcdserver: mvcc: required revision has been compacted"
FUTURE = "etcdserver: mvcc: required revision is a future revision"
LEASE_NOT_FOUND = "etcdserver: requested lease not found"


# ---------------------------------------------------------------------------------- helpers
def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def unb64(s: str | None) -> str:
    return base64.b64decode(s or "").decode()


def out_lines(p: subprocess.CompletedProcess) -> list[str]:
    return p.stdout.splitlines()


def get_json(c, *args, endpoints=None) -> dict:
    return json.loads(c.etcdctl("get", *args, "-w", "json", endpoints=endpoints).stdout)


def kvs(resp: dict) -> list[tuple[str, str]]:
    return [(unb64(kv["key"]), unb64(kv.get("value"))) for kv in resp.get("kvs", [])]


def put_rev(c, key: str, value: str, *extra: str, endpoints=None) -> int:
    """Put through etcdctl and return the revision it created (from the -w json header)."""
    resp = json.loads(c.etcdctl("put", key, value, *extra, "-w", "json",
                                endpoints=endpoints).stdout)
    return resp["header"]["revision"]


def current_revision(c) -> int:
    return get_json(c, "/no-such-key/")["header"]["revision"]


def grant(c, ttl: int) -> tuple[int, str]:
    resp = json.loads(c.etcdctl("lease", "grant", str(ttl), "-w", "json").stdout)
    return resp["ID"], f"{resp['ID']:016x}"


def fails(p: subprocess.CompletedProcess, code: int, message: str) -> None:
    """etcdctl exited with `code` and printed `message` (as its last stderr line)."""
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    errors = [ln for ln in p.stderr.splitlines() if not ln.startswith('{"level"')]
    assert errors and errors[-1] == message, p.stderr


class Background:
    """A long-running etcdctl (watch, lease keep-alive, lock): stdout and stderr are collected line
    by line from a thread, so tests poll for lines with a deadline instead of sleeping."""

    def __init__(self, c, *args: str, endpoints=None, stdin: bool = False):
        env = dict(os.environ, ETCDCTL_API="3")
        self.cmd = ["etcdctl", "--endpoints", ",".join(endpoints or c.endpoints), *args]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     text=True, env=env)
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self._lock:
                self._lines.append(line.rstrip("\n"))

    @property
    def lines(self) -> list[str]:
        with self._lock:
            return [ln for ln in self._lines if not ln.startswith('{"level"')]

    def json_lines(self) -> list[dict]:
        return [json.loads(ln) for ln in self.lines if ln.startswith('{"Header"')]

    def events(self) -> list[dict]:
        return [ev for resp in self.json_lines() for ev in resp.get("Events") or []]

    def wait_lines(self, pred, timeout: float = 10.0, what: str = "watch output"):
        try:
            return wait_for(lambda: pred(self.lines), timeout, 0.02, what)
        except AssertionError as e:
            raise AssertionError(f"{e}; {' '.join(self.cmd)} printed {self.lines!r}") from None

    def wait_events(self, n: int, timeout: float = 10.0) -> list[dict]:
        try:
            wait_for(lambda: len(self.events()) >= n, timeout, 0.02, f"{n} watch events")
        except AssertionError as e:
            raise AssertionError(f"{e}; {' '.join(self.cmd)} printed {self.lines!r}") from None
        return self.events()

    def wait_exit(self, timeout: float = 10.0) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc

    def interrupt(self, timeout: float = 10.0) -> int:
        """SIGINT, which etcdctl handles (lock: unlock and end the session), then wait."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
        return self.wait_exit(timeout)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._reader.join(5)
        self.proc.stdout.close()
        if self.proc.stdin:
            self.proc.stdin.close()


@contextmanager
def background(c, *args: str, endpoints=None, stdin: bool = False):
    bg = Background(c, *args, endpoints=endpoints, stdin=stdin)
    try:
        yield bg
    finally:
        bg.stop()


@pytest.fixture(scope="module")
def c(shared_store_cluster):
    return shared_store_cluster


# ---------------------------------------------------------------------------------- put / get
def test_put_get_single_key_and_json_revisions(c):
    assert out_lines(c.etcdctl("put", "/pg/a", "1")) == ["OK"]
    assert out_lines(c.etcdctl("get", "/pg/a")) == ["/pg/a", "1"]
    assert c.etcdctl("get", "/pg/missing").stdout == ""

    r0 = get_json(c, "/pg/a")["kvs"][0]["mod_revision"]
    r1 = put_rev(c, "/pg/a", "2")
    r2 = put_rev(c, "/pg/a", "3")
    assert r0 < r1 < r2
    resp = get_json(c, "/pg/a")
    assert resp["header"]["revision"] >= r2
    assert resp["header"]["cluster_id"] and resp["header"]["member_id"]
    assert resp["count"] == 1
    (kv,) = resp["kvs"]
    assert unb64(kv["key"]) == "/pg/a" and unb64(kv["value"]) == "3"
    assert kv["create_revision"] == r0
    assert kv["mod_revision"] == r2
    assert kv["version"] == 3
    assert "lease" not in kv


def test_get_prefix_limit_keys_only_value_only_from_key(c):
    for k, v in [("/gp/a", "va"), ("/gp/b", "vb"), ("/gp/c", "vc"), ("/gq/x", "vx")]:
        c.etcdctl("put", k, v)
    assert out_lines(c.etcdctl("get", "/gp/", "--prefix")) == [
        "/gp/a", "va", "/gp/b", "vb", "/gp/c", "vc"]
    assert out_lines(c.etcdctl("get", "/gp/", "--prefix", "--limit", "2")) == [
        "/gp/a", "va", "/gp/b", "vb"]
    resp = get_json(c, "/gp/", "--prefix", "--limit", "2")
    assert resp["count"] == 3 and resp["more"] is True and len(resp["kvs"]) == 2
    # --keys-only prints each key followed by an empty value line
    assert out_lines(c.etcdctl("get", "/gp/", "--prefix", "--keys-only")) == [
        "/gp/a", "", "/gp/b", "", "/gp/c", ""]
    assert all("value" not in kv for kv in
               get_json(c, "/gp/", "--prefix", "--keys-only")["kvs"])
    assert out_lines(c.etcdctl("get", "/gp/", "--prefix", "--print-value-only")) == [
        "va", "vb", "vc"]
    # a range [a, c) given as two keys
    assert out_lines(c.etcdctl("get", "/gp/a", "/gp/c")) == ["/gp/a", "va", "/gp/b", "vb"]
    # --from-key: every key >= the given one, in key order
    got = kvs(get_json(c, "/gp/b", "--from-key"))
    assert got[:3] == [("/gp/b", "vb"), ("/gp/c", "vc"), ("/gq/x", "vx")]
    assert [k for k, _ in got] == sorted(k for k, _ in got)
    assert all(k >= "/gp/b" for k, _ in got)
    assert out_lines(c.etcdctl("get", "/gp/b", "--from-key", "--limit", "1")) == ["/gp/b", "vb"]


def test_get_empty_prefix_returns_every_key(c):
    c.etcdctl("put", "/all/1", "x")
    c.etcdctl("put", "/all/2", "y")
    everything = get_json(c, "", "--prefix")
    keys = [k for k, _ in kvs(everything)]
    assert "/all/1" in keys and "/all/2" in keys
    assert keys == sorted(keys) and len(keys) == len(set(keys))
    assert everything["count"] == len(keys)
    # "" with --prefix or --from-key both mean every key
    from_key = get_json(c, "", "--from-key")
    assert [k for k, _ in kvs(from_key)] == keys and from_key["count"] == len(keys)


def test_get_sort_by_and_order(c):
    # key order a, b, c; created in order c, a, b; b rewritten twice, a once more; values vary
    c.etcdctl("put", "/sort/c", "2")
    c.etcdctl("put", "/sort/a", "3")
    c.etcdctl("put", "/sort/b", "1")
    c.etcdctl("put", "/sort/b", "4")
    c.etcdctl("put", "/sort/b", "0")
    c.etcdctl("put", "/sort/a", "5")
    # versions: a=2, b=3, c=1; create: c<a<b; mod: c<b<a; values: b=0 < c=2 < a=5
    expect = {
        "KEY": ["a", "b", "c"],
        "VERSION": ["c", "a", "b"],
        "CREATE": ["c", "a", "b"],
        "MODIFY": ["c", "b", "a"],
        "VALUE": ["b", "c", "a"],
    }
    for target, ascending in expect.items():
        for order, want in (("ASCEND", ascending), ("DESCEND", ascending[::-1])):
            p = c.etcdctl("get", "/sort/", "--prefix", f"--sort-by={target}", f"--order={order}")
            assert out_lines(p)[::2] == [f"/sort/{k}" for k in want], (target, order)
    # --limit applies after sorting
    p = c.etcdctl("get", "/sort/", "--prefix", "--sort-by=MODIFY", "--order=DESCEND",
                  "--limit", "1")
    assert out_lines(p) == ["/sort/a", "5"]
    # --order alone sorts by key; --sort-by alone sorts ascending
    assert out_lines(c.etcdctl("get", "/sort/", "--prefix", "--order=DESCEND"))[::2] == [
        "/sort/c", "/sort/b", "/sort/a"]
    assert out_lines(c.etcdctl("get", "/sort/", "--prefix", "--sort-by=VALUE"))[::2] == [
        "/sort/b", "/sort/c", "/sort/a"]


def test_get_rev_historical_reads(c):
    r1 = put_rev(c, "/hist/k", "one")
    r2 = put_rev(c, "/hist/k", "two")
    c.etcdctl("put", "/hist/other", "x")
    r3 = json.loads(c.etcdctl("del", "/hist/k", "-w", "json").stdout)["header"]["revision"]
    assert out_lines(c.etcdctl("get", "/hist/k", "--rev", str(r1))) == ["/hist/k", "one"]
    assert out_lines(c.etcdctl("get", "/hist/k", "--rev", str(r2))) == ["/hist/k", "two"]
    assert out_lines(c.etcdctl("get", "/hist/k", "--rev", str(r3 - 1))) == ["/hist/k", "two"]
    assert c.etcdctl("get", "/hist/k", "--rev", str(r3)).stdout == ""
    assert c.etcdctl("get", "/hist/k", "--rev", str(r1 - 1)).stdout == ""
    old = get_json(c, "/hist/", "--prefix", "--rev", str(r2))
    assert kvs(old) == [("/hist/k", "two")]
    assert old["kvs"][0]["mod_revision"] == r2 and old["kvs"][0]["version"] == 2
    assert old["header"]["revision"] >= r3  # the header shows the current revision


def test_serializable_reads_on_every_member(c):
    rev = put_rev(c, "/ser/k", "v")
    for ep in c.endpoints:
        # a linearizable read at the member makes sure it has applied the put
        assert out_lines(c.etcdctl("get", "/ser/k", endpoints=[ep])) == ["/ser/k", "v"]
        resp = get_json(c, "/ser/k", "--consistency=s", endpoints=[ep])
        assert kvs(resp) == [("/ser/k", "v")]
        assert resp["header"]["revision"] >= rev
        assert resp["kvs"][0]["mod_revision"] == rev


def test_writes_visible_to_linearizable_reads_everywhere(c):
    eps = c.endpoints
    for rnd in range(3):
        for i, writer in enumerate(eps):
            value = f"r{rnd}-w{i}"
            rev = put_rev(c, "/lin/k", value, endpoints=[writer])
            for reader in eps:
                if reader == writer:
                    continue
                resp = get_json(c, "/lin/k", endpoints=[reader])
                assert kvs(resp) == [("/lin/k", value)], (writer, reader)
                assert resp["kvs"][0]["mod_revision"] == rev
                assert resp["header"]["revision"] >= rev


# ---------------------------------------------------------------------------------- put / del
def test_put_prev_kv(c):
    assert out_lines(c.etcdctl("put", "/pp/k", "v1", "--prev-kv")) == ["OK"]  # new key
    assert out_lines(c.etcdctl("put", "/pp/k", "v2", "--prev-kv")) == ["OK", "/pp/k", "v1"]
    r2 = get_json(c, "/pp/k")["kvs"][0]["mod_revision"]
    resp = json.loads(c.etcdctl("put", "/pp/k", "v3", "--prev-kv", "-w", "json").stdout)
    assert unb64(resp["prev_kv"]["key"]) == "/pp/k"
    assert unb64(resp["prev_kv"]["value"]) == "v2"
    assert resp["prev_kv"]["version"] == 2
    assert resp["prev_kv"]["mod_revision"] == r2 < resp["header"]["revision"]


def test_delete_single_prefix_range_prev_kv(c):
    for k in ["a", "b", "c", "d", "e"]:
        c.etcdctl("put", f"/del/{k}", f"v{k}")
    c.etcdctl("put", "/dex/keep", "x")
    assert out_lines(c.etcdctl("del", "/del/missing")) == ["0"]
    assert out_lines(c.etcdctl("del", "/del/a")) == ["1"]
    assert out_lines(c.etcdctl("del", "/del/b", "--prev-kv")) == ["1", "/del/b", "vb"]
    # range [c, e): c and d
    assert out_lines(c.etcdctl("del", "/del/c", "/del/e")) == ["2"]
    assert kvs(get_json(c, "/del/", "--prefix")) == [("/del/e", "ve")]
    for k in ["f", "g"]:
        c.etcdctl("put", f"/del/{k}", f"v{k}")
    resp = json.loads(c.etcdctl("del", "/del/", "--prefix", "--prev-kv", "-w", "json").stdout)
    assert resp["deleted"] == 3
    assert [(unb64(kv["key"]), unb64(kv["value"])) for kv in resp["prev_kvs"]] == [
        ("/del/e", "ve"), ("/del/f", "vf"), ("/del/g", "vg")]
    assert c.etcdctl("get", "/del/", "--prefix").stdout == ""
    assert out_lines(c.etcdctl("get", "/dex/keep")) == ["/dex/keep", "x"]
    assert out_lines(c.etcdctl("del", "/del/", "--prefix")) == ["0"]


# ---------------------------------------------------------------------------------- txn
TXN_CAS = ('value("/txn/k") = "old"\n'
           '\n'
           'put /txn/k new\n'
           'put /txn/log swapped\n'
           '\n'
           'put /txn/log not-swapped\n'
           'get /txn/k\n'
           '\n')


def test_txn_both_branches(c):
    c.etcdctl("put", "/txn/k", "old")
    p = c.etcdctl("txn", input=TXN_CAS)
    assert out_lines(p) == ["SUCCESS", "", "OK", "", "OK"]
    assert out_lines(c.etcdctl("get", "/txn/", "--prefix")) == [
        "/txn/k", "new", "/txn/log", "swapped"]
    # the same txn again: the compare now fails and the failure branch runs
    p = c.etcdctl("txn", input=TXN_CAS)
    assert out_lines(p) == ["FAILURE", "", "OK", "", "/txn/k", "new"]
    assert out_lines(c.etcdctl("get", "/txn/log")) == ["/txn/log", "not-swapped"]


def test_txn_json_succeeded_and_revisions(c):
    r0 = put_rev(c, "/txj/k", "1")
    txn = (f'mod("/txj/k") = "{r0}"\nversion("/txj/k") = "1"\ncreate("/txj/none") = "0"\n\n'
           'put /txj/k 2\nget /txj/k\n\nget /txj/k\n\n')
    resp = json.loads(c.etcdctl("txn", "-w", "json", input=txn).stdout)
    assert resp["succeeded"] is True
    rev = resp["header"]["revision"]
    assert rev > r0
    put_resp, range_resp = (r["Response"] for r in resp["responses"])
    assert put_resp["ResponsePut"]["header"] == {"revision": rev}  # etcd: revision only
    rr = range_resp["ResponseRange"]
    assert rr["header"] == {"revision": rev}
    assert rr["kvs"][0]["mod_revision"] == rev and unb64(rr["kvs"][0]["value"]) == "2"
    assert rr["kvs"][0]["version"] == 2 and rr["kvs"][0]["create_revision"] == r0

    # same compares again: mod and version changed, so the failure branch (a read) runs
    resp = json.loads(c.etcdctl("txn", "-w", "json", input=txn).stdout)
    assert "succeeded" not in resp  # false is omitted from etcdctl's JSON
    assert resp["header"]["revision"] >= rev
    (only,) = resp["responses"]
    assert only["Response"]["ResponseRange"]["header"] == {"revision": resp["header"]["revision"]}
    assert unb64(only["Response"]["ResponseRange"]["kvs"][0]["value"]) == "2"
    # a failing compare with empty branches writes nothing
    resp = json.loads(c.etcdctl("txn", "-w", "json",
                                input='value("/txj/k") = "nope"\n\n\n\n').stdout)
    assert "succeeded" not in resp and "responses" not in resp
    assert get_json(c, "/txj/k")["kvs"][0]["mod_revision"] == rev
    # a read-only txn (served without a write) has the same nested header shape
    resp = json.loads(c.etcdctl("txn", "-w", "json",
                                input='value("/txj/k") = "2"\n\nget /txj/k\n\n\n').stdout)
    assert resp["succeeded"] is True
    (only,) = resp["responses"]
    assert only["Response"]["ResponseRange"]["header"] == {"revision": resp["header"]["revision"]}


def test_txn_duplicate_key_is_rejected(c):
    p = c.etcdctl("txn", input='\n\nput /txd/k a\ndel /txd/k\n\n\n', check=False)
    fails(p, 1, "Error: etcdserver: duplicate key given in txn request")
    assert c.etcdctl("get", "/txd/k").stdout == ""


def test_txn_without_final_blank_line_prints_eof():
    """etcdctl needs the third blank line; without it it fails before sending anything, so an
    endpoint where nothing listens is enough."""
    env = dict(os.environ, ETCDCTL_API="3")
    p = subprocess.run(["etcdctl", "--endpoints", "127.0.0.1:1", "txn"],
                       input='value("/eof/k") = "x"\n\nput /eof/k y\n\nput /eof/k z\n',
                       capture_output=True, text=True, timeout=30, env=env, check=False)
    fails(p, 3, "Error: EOF")


# ---------------------------------------------------------------------------------- watch
def test_watch_rev_prefix_prev_kv(c):
    rev = put_rev(c, "/wa/a", "1")  # before the watch starts: replayed from --rev
    with background(c, "watch", "/wa/", "--prefix", "--prev-kv", "--rev", str(rev)) as plain, \
            background(c, "watch", "/wa/", "--prefix", "--prev-kv", "--rev", str(rev),
                       "-w", "json") as js:
        c.etcdctl("put", "/wa/a", "2")
        c.etcdctl("put", "/wb/ignored", "x")  # outside the prefix
        c.etcdctl("put", "/wa/b", "3")
        last = json.loads(c.etcdctl("del", "/wa/a", "-w", "json").stdout)["header"]["revision"]
        expected = ["PUT", "/wa/a", "1",
                    "PUT", "/wa/a", "1", "/wa/a", "2",  # --prev-kv: previous first
                    "PUT", "/wa/b", "3",
                    "DELETE", "/wa/a", "2", "/wa/a", ""]
        plain.wait_lines(lambda ls: len(ls) >= len(expected))
        assert plain.lines == expected

        events = js.wait_events(4)
        assert len(events) == 4
        assert [ev.get("type", 0) for ev in events] == [0, 0, 0, 1]  # PUT omitted as 0
        assert [unb64(ev["kv"]["key"]) for ev in events] == ["/wa/a", "/wa/a", "/wa/b", "/wa/a"]
        assert events[0]["kv"]["mod_revision"] == rev and "prev_kv" not in events[0]
        assert events[1]["kv"]["version"] == 2 and unb64(events[1]["prev_kv"]["value"]) == "1"
        assert events[2]["kv"]["create_revision"] == events[2]["kv"]["mod_revision"]
        # a deletion's kv is a tombstone: key and mod_revision only
        assert events[3]["kv"] == {"key": b64("/wa/a"), "mod_revision": last}
        assert unb64(events[3]["prev_kv"]["value"]) == "2"
        revs = [ev["kv"]["mod_revision"] for ev in events]
        assert revs == sorted(revs) and revs[-1] == last
        for resp in js.json_lines():
            assert resp["Created"] is False and resp["Canceled"] is False
            assert resp["Header"]["revision"] >= max(
                ev["kv"]["mod_revision"] for ev in resp["Events"])
        assert plain.proc.poll() is None and js.proc.poll() is None  # still watching


def test_watch_from_now_single_key(c):
    """Without --rev a watch starts after the current revision; keep writing a marker until
    the watch shows it, then check that later writes arrive in order and exactly once."""
    with background(c, "watch", "/wn/k") as w:
        n = 0

        def marker_seen():
            nonlocal n
            n += 1
            c.etcdctl("put", "/wn/k", f"ping{n}")
            return w.wait_lines(lambda ls: any(ln.startswith("ping") for ln in ls), 0.3)
        wait_for(marker_seen, 15, 0, "the watch to be created")
        c.etcdctl("put", "/wn/other", "x")  # a different key
        c.etcdctl("put", "/wn/k", "final")
        c.etcdctl("del", "/wn/k")
        w.wait_lines(lambda ls: ls[-3:] == ["DELETE", "/wn/k", ""])
        tail = w.lines[w.lines.index("final") - 2:]
        assert tail == ["PUT", "/wn/k", "final", "DELETE", "/wn/k", ""]
        assert "/wn/other" not in w.lines


def test_watch_on_follower_sees_writes_through_another_member(c):
    leader = c.leader()
    follower = next(n for n in ("store-1", "store-2", "store-3") if n != leader)
    start = current_revision(c) + 1
    with background(c, "watch", "/wf/", "--prefix", "--rev", str(start), "-w", "json",
                    endpoints=[c.endpoint(follower)]) as w:
        writer = [c.endpoint(leader)]
        other = [c.endpoint(next(n for n in ("store-1", "store-2", "store-3")
                                 if n not in (leader, follower)))]
        revs = [put_rev(c, "/wf/1", "a", endpoints=writer),
                put_rev(c, "/wf/2", "b", endpoints=other),
                put_rev(c, "/wf/1", "c", endpoints=writer)]
        events = w.wait_events(3)
        assert [(unb64(e["kv"]["key"]), unb64(e["kv"]["value"])) for e in events] == [
            ("/wf/1", "a"), ("/wf/2", "b"), ("/wf/1", "c")]
        assert [e["kv"]["mod_revision"] for e in events] == revs
        assert {r["Header"]["member_id"] for r in w.json_lines()} == {
            get_json(c, "x", endpoints=[c.endpoint(follower)])["header"]["member_id"]}


def test_watch_compacted_revision_is_canceled(c):
    r1 = put_rev(c, "/wc/k", "1")
    r2 = put_rev(c, "/wc/k", "2")
    r3 = put_rev(c, "/wc/k", "3")
    assert out_lines(c.etcdctl("compaction", str(r2))) == [f"compacted revision {r2}"]
    with background(c, "watch", "/wc/k", "--rev", str(r1)) as w:
        assert w.wait_exit(15) == 5
        assert w.lines[:2] == [f"watch was canceled ({COMPACTED})",
                               "Error: watch is canceled by the server"]
    with background(c, "watch", "/wc/k", "--rev", str(r2 - 1), "-w", "json") as w:
        assert w.wait_exit(15) == 5
        (resp,) = w.json_lines()
        assert resp["CompactRevision"] == r2 and resp["Canceled"] is True
    # the compact revision itself is still watchable (as in etcd)
    with background(c, "watch", "/wc/k", "--rev", str(r2)) as w:
        w.wait_lines(lambda ls: len(ls) >= 6)
        assert w.lines == ["PUT", "/wc/k", "2", "PUT", "/wc/k", "3"]
        assert w.proc.poll() is None
        assert r2 < r3


def test_watch_interactive_two_watches_on_one_stream(c):
    """`watch -i` opens one stream and adds a watch per input line; both get their events."""
    start = current_revision(c) + 1
    with background(c, "watch", "-i", stdin=True) as w:
        w.proc.stdin.write(f"watch /wi/a --rev {start}\n"
                           f"watch /wi/ --prefix --prev-kv --rev {start}\n")
        w.proc.stdin.flush()
        c.etcdctl("put", "/wi/a", "1")
        c.etcdctl("put", "/wi/b", "2")
        c.etcdctl("put", "/wi/a", "3")
        w.wait_lines(lambda ls: len(ls) >= 2 * 3 + (3 + 3 + 5))
        blocks, ls = [], w.lines
        while ls:
            n = 5 if len(ls) > 3 and ls[3] != "PUT" else 3  # 5 lines: a PUT with prev_kv
            blocks.append(ls[:n])
            ls = ls[n:]
        a1, a3, b2 = ["PUT", "/wi/a", "1"], ["PUT", "/wi/a", "3"], ["PUT", "/wi/b", "2"]
        a1_a3 = ["PUT", "/wi/a", "1", "/wi/a", "3"]  # the prefix watch has --prev-kv
        # watch 1: a1, a3; watch 2: a1, b2, a1_a3. The two watches' responses may interleave,
        # but each watch's own events come in revision order.
        assert sorted(blocks) == sorted([a1, a3, a1, b2, a1_a3])
        assert blocks.index(a1) < blocks.index(a3)
        assert blocks.index(a1) < blocks.index(b2) < blocks.index(a1_a3)
        w.proc.stdin.close()  # etcdctl ends interactive mode on EOF
        assert w.wait_exit(10) == 3
        assert w.lines[-1] == "Error: Error reading watch request line: EOF"


def test_lock_contention(c):
    """`etcdctl lock` (clientv3 concurrency: lease, txn, get --rev, watch for deletion)."""
    with background(c, "lock", "/elock") as holder:
        holder.wait_lines(lambda ls: any(ln.startswith("/elock/") for ln in ls))
        with background(c, "lock", "/elock", "echo", "acquired") as waiter:
            # the waiter has queued its own key behind the holder's and waits
            wait_for(lambda: get_json(c, "/elock/", "--prefix").get("count") == 2, 10, 0.05,
                     "the waiter's lock key")
            assert waiter.proc.poll() is None and waiter.lines == []
            holder.interrupt()  # etcdctl unlocks and revokes its session lease
            assert waiter.wait_exit(15) == 0
            assert waiter.lines == ["acquired"]
    wait_for(lambda: c.etcdctl("get", "/elock/", "--prefix").stdout == "", 10, 0.05,
             "both sessions to release their keys")


# ---------------------------------------------------------------------------------- leases
def test_lease_lifecycle(c):
    (line,) = out_lines(c.etcdctl("lease", "grant", "60"))
    words = line.split()
    assert words[0] == "lease" and line.endswith(" granted with TTL(60s)")
    hexid = words[1]
    lid = int(hexid, 16)
    assert hexid == f"{lid:016x}"
    assert out_lines(c.etcdctl("put", "--lease", hexid, "/lease/a", "1")) == ["OK"]
    c.etcdctl("put", f"--lease={hexid}", "/lease/b", "2")
    assert get_json(c, "/lease/a")["kvs"][0]["lease"] == lid

    (line,) = out_lines(c.etcdctl("lease", "timetolive", hexid, "--keys"))
    assert line.startswith(f"lease {hexid} granted with TTL(60s), remaining(")
    attached = line.split("attached keys([")[1]
    assert attached.endswith("])")
    assert sorted(attached[:-2].split()) == ["/lease/a", "/lease/b"]  # etcd: in any order
    ttl = json.loads(c.etcdctl("lease", "timetolive", hexid, "--keys", "-w", "json").stdout)
    assert ttl["id"] == lid and ttl["granted-ttl"] == 60 and 50 <= ttl["ttl"] <= 60
    assert sorted(unb64(k) for k in ttl["keys"]) == ["/lease/a", "/lease/b"]

    listed = out_lines(c.etcdctl("lease", "list"))
    assert listed[0].startswith("found ") and listed[0].endswith(" leases")
    assert hexid in listed[1:] and int(listed[0].split()[1]) == len(listed) - 1
    ids = [le["id"] for le in json.loads(c.etcdctl("lease", "list", "-w", "json").stdout)
           ["leases"]]
    assert lid in ids

    assert out_lines(c.etcdctl("lease", "keep-alive", "--once", hexid)) == [
        f"lease {hexid} keepalived with TTL(60)"]
    ka = json.loads(c.etcdctl("lease", "keep-alive", "--once", hexid, "-w", "json").stdout)
    assert ka["ID"] == lid and ka["TTL"] == 60

    assert out_lines(c.etcdctl("lease", "revoke", hexid)) == [f"lease {hexid} revoked"]
    assert c.etcdctl("get", "/lease/", "--prefix").stdout == ""
    assert out_lines(c.etcdctl("lease", "timetolive", hexid)) == [
        f"lease {hexid} already expired"]
    assert lid not in [le["id"] for le in json.loads(
        c.etcdctl("lease", "list", "-w", "json").stdout).get("leases", [])]
    # a revoked lease can no longer be attached
    fails(c.etcdctl("put", "--lease", hexid, "/lease/c", "3", check=False), 1,
          f"Error: {LEASE_NOT_FOUND}")


def test_lease_expiry_and_keep_alive_stream(c):
    kept_id, kept = grant(c, 2)
    lone_id, lone = grant(c, 2)
    c.etcdctl("put", "--lease", kept, "/lexp/kept", "k")
    c.etcdctl("put", "--lease", lone, "/lexp/lone", "l")
    with background(c, "lease", "keep-alive", kept) as ka:
        # the lease that is not kept alive expires and its key is deleted (by the leader)
        wait_for(lambda: c.etcdctl("get", "/lexp/lone").stdout == "", 15, 0.1,
                 "the unkept lease's key to expire")
        assert out_lines(c.etcdctl("lease", "timetolive", lone)) == [
            f"lease {lone} already expired"]
        # keep-alive renews every TTL/3: four more renewals span more than the TTL
        n0 = len(ka.lines)
        ka.wait_lines(lambda ls: len(ls) >= n0 + 4, 15)
        assert all(ln == f"lease {kept} keepalived with TTL(2)" for ln in ka.lines), ka.lines
        assert out_lines(c.etcdctl("get", "/lexp/kept")) == ["/lexp/kept", "k"]
        ttl = json.loads(c.etcdctl("lease", "timetolive", kept, "-w", "json").stdout)
        assert ttl["ttl"] > 0 and ttl["granted-ttl"] == 2
    # once renewals stop, it expires too
    wait_for(lambda: c.etcdctl("get", "/lexp/kept").stdout == "", 15, 0.1,
             "the kept lease to expire after keep-alive stopped")
    assert kept_id != lone_id


def test_lease_unknown(c):
    unknown = "1234abcd"
    assert out_lines(c.etcdctl("lease", "timetolive", unknown)) == [
        f"lease {int(unknown, 16):016x} already expired"]
    ttl = json.loads(c.etcdctl("lease", "timetolive", unknown, "-w", "json").stdout)
    assert ttl["ttl"] == -1
    fails(c.etcdctl("lease", "revoke", unknown, check=False), 1,
          f"Error: failed to revoke lease ({LEASE_NOT_FOUND})")
    fails(c.etcdctl("lease", "keep-alive", "--once", unknown, check=False), 2,
          f"Error: {LEASE_NOT_FOUND}")
    fails(c.etcdctl("put", "--lease", unknown, "/lu/k", "v", check=False), 1,
          f"Error: {LEASE_NOT_FOUND}")


# ---------------------------------------------------------------------------------- compaction
def test_compaction_and_historical_reads(c):
    revs = [put_rev(c, "/cmp/k", f"v{i}") for i in range(4)]
    n = revs[2]
    assert out_lines(c.etcdctl("compaction", str(n))) == [f"compacted revision {n}"]
    for r in (revs[0], revs[1], n - 1):
        fails(c.etcdctl("get", "/cmp/k", "--rev", str(r), check=False), 1,
              f"Error: {COMPACTED}")
    assert out_lines(c.etcdctl("get", "/cmp/k", "--rev", str(n))) == ["/cmp/k", "v2"]
    assert out_lines(c.etcdctl("get", "/cmp/k", "--rev", str(revs[3]))) == ["/cmp/k", "v3"]
    assert out_lines(c.etcdctl("get", "/cmp/k")) == ["/cmp/k", "v3"]
    # every member has compacted (serializable reads are answered locally)
    for ep in c.endpoints:
        c.etcdctl("get", "/cmp/k", endpoints=[ep])  # the member has applied the compaction
        fails(c.etcdctl("get", "/cmp/k", "--rev", str(n - 1), "--consistency=s",
                        endpoints=[ep], check=False), 1, f"Error: {COMPACTED}")
    # compacting again at or below the compact revision fails; so does a future revision
    fails(c.etcdctl("compaction", str(n), check=False), 1, f"Error: {COMPACTED}")
    fails(c.etcdctl("compaction", str(revs[3] + 10_000), check=False), 1, f"Error: {FUTURE}")


# ---------------------------------------------------------------------------------- cluster
def test_endpoint_status_health_member_list(c):
    def settled():
        """One status round in which all members agree on the leader and the term (polled,
        in case an election is under way on a loaded machine)."""
        status = json.loads(c.etcdctl("endpoint", "status", "-w", "json").stdout)
        ids = [s["Status"]["header"]["member_id"] for s in status]
        leaders = {s["Status"]["leader"] for s in status}
        terms = {s["Status"]["raftTerm"] for s in status}
        return status if len(leaders) == 1 and leaders <= set(ids) and len(terms) == 1 else None
    status = wait_for(settled, 15, 0.2, "members agreeing on one leader and term")
    assert [s["Endpoint"] for s in status] == c.endpoints
    ids = [s["Status"]["header"]["member_id"] for s in status]
    assert len(set(ids)) == 3
    assert not any(s["Status"].get("errors") for s in status)
    assert len({s["Status"]["header"]["cluster_id"] for s in status}) == 1
    for s in status:
        assert s["Status"]["version"] == "3.4.23"
        assert s["Status"]["raftIndex"] > 0 and s["Status"]["dbSize"] > 0

    lines = out_lines(c.etcdctl("endpoint", "status", "--cluster"))
    assert len(lines) == 3
    rows = [[f.strip() for f in ln.split(",")] for ln in lines]
    assert sorted(r[0] for r in rows) == sorted(f"http://{ep}" for ep in c.endpoints)
    assert sorted(r[1] for r in rows) == sorted(f"{i:x}" for i in ids)
    assert [r[4] for r in rows].count("true") == 1  # IS LEADER

    health = c.etcdctl("endpoint", "health").stderr.splitlines()  # etcdctl prints it there
    assert sorted(ln.split(" is healthy: ")[0] for ln in health) == sorted(c.endpoints)
    assert all("is healthy: successfully committed proposal" in ln for ln in health)
    hj = json.loads(c.etcdctl("endpoint", "health", "-w", "json").stdout)
    assert sorted(h["endpoint"] for h in hj) == sorted(c.endpoints)
    assert all(h["health"] for h in hj)

    members = json.loads(c.etcdctl("member", "list", "-w", "json").stdout)["members"]
    assert len(members) == 3
    by_name = {m["name"]: m for m in members}
    assert sorted(by_name) == ["store-1", "store-2", "store-3"]
    for name, m in by_name.items():
        comp = c.cluster.component(name)
        assert m["peerURLs"] == [comp.peer_url]
        assert m["clientURLs"] == [comp.client_url]
        assert not m.get("isLearner")
    assert sorted(m["ID"] for m in members) == sorted(ids)
    table = out_lines(c.etcdctl("member", "list"))
    assert sorted(table) == sorted(
        f"{m['ID']:x}, started, {m['name']}, {m['peerURLs'][0]}, {m['clientURLs'][0]}, false"
        for m in members)


# ---------------------------------------------------------------------------------- errors
def test_error_messages(c):
    fails(c.etcdctl("put", "", "x", check=False), 1, "Error: etcdserver: key is not provided")
    fails(c.etcdctl("get", "", check=False), 1, "Error: etcdserver: key is not provided")
    fails(c.etcdctl("del", "", check=False), 1, "Error: etcdserver: key is not provided")
    future = current_revision(c) + 1000
    fails(c.etcdctl("get", "/err/k", "--rev", str(future), check=False), 1, f"Error: {FUTURE}")
    fails(c.etcdctl("get", "/err/k", "--rev", str(future), "--consistency=s", check=False), 1,
          f"Error: {FUTURE}")
