"""Diagnostic counters for etcdlite members, loaded only by `store_bench.py --instrument`.

store_bench puts this directory on PYTHONPATH (kubelab.cluster.Cluster passes the environment
on to the members) and sets ETCDLITE_BENCH_INSTRUMENT=<dir>. Python then imports this module at
start-up; it wraps a few pysyncobj / etcdlite functions with counters and timers (no behaviour
change) and writes them to <dir>/<member name>.json twice a second. Nothing in etcdlite/ or
kubelab/ is edited.
"""

import os
import sys

_DIR = os.environ.get("ETCDLITE_BENCH_INSTRUMENT")


def _install(outdir):
    import collections
    import json
    import threading
    import time

    name = "unknown"
    if "--name" in sys.argv:
        name = sys.argv[sys.argv.index("--name") + 1]
    if not any("etcdlite" in a for a in sys.argv):
        return
    stats = {"pid": os.getpid(), "name": name}
    lock = threading.Lock()

    def bump(key, n=1):
        stats[key] = stats.get(key, 0) + n

    def timed(cls, meth, key, size_of=None):
        orig = getattr(cls, meth)

        def wrapper(*a, **kw):
            items = size_of(a, kw) if size_of is not None else 0
            t = time.perf_counter()
            try:
                return orig(*a, **kw)
            finally:
                d = time.perf_counter() - t
                with lock:
                    bump(key + "_calls")
                    bump(key + "_s", d)
                    if d > stats.get(key + "_max_s", 0):
                        stats[key + "_max_s"] = d
                    if size_of is not None:
                        bump(key + "_items", items)
        wrapper.__wrapped__ = orig
        setattr(cls, meth, wrapper)

    from pysyncobj import journal, poller, syncobj, tcp_connection
    timed(journal.ResizableFile, "flush", "journal_flush")
    timed(journal.FileJournal, "add", "journal_add",
          size_of=lambda a, kw: len(a[1]) if len(a) > 1 else 0)
    timed(journal.FileJournal, "deleteEntriesFrom", "journal_delete_from",
          size_of=lambda a, kw: max(0, len(a[0]) - a[1]) if len(a) > 1 else 0)
    timed(syncobj.SyncObj, "_onTick", "raft_tick")
    timed(poller.PollPoller, "poll", "raft_poll")
    timed(syncobj.SyncObj, "_SyncObj__doApplyCommand", "raft_apply_entry")
    timed(syncobj.SyncObj, "_SyncObj__sendAppendEntries", "raft_send_append_entries")
    timed(tcp_connection.TcpConnection, "send", "raft_tcp_send")

    # Raft event trace (state, term and vote changes, peer (dis)connections, vote messages)
    events = collections.deque(maxlen=400)
    stats["events"] = events

    def trace(meth, fmt):
        orig = getattr(syncobj.SyncObj, meth)

        def wrapper(self, *a):
            try:
                what = fmt(self, *a)
            except Exception as e:  # noqa: BLE001 - tracing must never break the member
                what = f"{meth}: {e!r}"
            if what:
                events.append((time.monotonic(), what))
            return orig(self, *a)
        setattr(syncobj.SyncObj, meth, wrapper)

    states = {0: "follower", 1: "candidate", 2: "leader"}
    trace("_SyncObj__setState", lambda s, new: f"state -> {states.get(new, new)}"
          if s._SyncObj__raftState != new else None)
    trace("_SyncObj__setCurrentTerm", lambda s, term, voted: f"term {term} voted {voted}")
    trace("_SyncObj__onNodeDisconnected", lambda s, node: f"disconnected {node.id}")
    trace("_SyncObj__onNodeConnected", lambda s, node: f"connected {node.id}")

    def msg(s, node, m):
        t = m.get("type")
        if t in ("request_vote", "response_vote"):
            extra = ""
            if t == "request_vote":
                extra = (f" last_log {m.get('last_log_index')}/{m.get('last_log_term')} "
                         f"(mine {s._SyncObj__raftLog[-1][1]}/{s._SyncObj__raftLog[-1][2]}, "
                         f"voted {s._SyncObj__votedForNodeId}, term {s.raftCurrentTerm})")
            return f"recv {t} from {node.id} term {m.get('term')}{extra}"
        return None
    trace("_SyncObj__onMessageReceived", msg)

    from etcdlite import mvcc
    timed(mvcc.MVCCStore, "apply", "mvcc_apply")

    def dump():
        path = os.path.join(outdir, f"{name}.json")
        while True:
            time.sleep(0.5)
            with lock:
                snap = dict(stats)
                snap["events"] = list(events)
            snap["t"] = time.monotonic()
            snap["thread_cpu"] = {}
            names = {t.native_id: t.name for t in threading.enumerate()}
            try:
                for tid in os.listdir(f"/proc/{os.getpid()}/task"):
                    with open(f"/proc/{os.getpid()}/task/{tid}/stat") as f:
                        st = f.read()
                    comm = st[st.index("(") + 1:st.rindex(")")]
                    fields = st.rsplit(")", 1)[1].split()
                    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                    label = names.get(int(tid), comm)
                    snap["thread_cpu"][f"{tid}:{label}"] = cpu
            except OSError:
                pass
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(snap, f)
            os.replace(tmp, path)

    threading.Thread(target=dump, name="bench-instrument", daemon=True).start()


if _DIR:
    try:
        _install(_DIR)
    except Exception as e:  # noqa: BLE001 - never break the member
        sys.stderr.write(f"bench instrument failed: {e!r}\n")
