"""The chaos suite's checks of invariants 3 and 5, through the gateways'
operator endpoints: garbage collection asked for through a run, then after
it a GC pass, a scrub of every node, and re-replication until every
referenced chunk is at its replication factor (see `check_lifecycle`).
"""
import json
import os
import time
import urllib.error
import urllib.request

#: How long re-replication may take to bring every chunk back after a run.
REPAIR_DEADLINE = float(os.environ.get("CHAOS_SETTLE_DEADLINE", "300"))


def admin(gateway, method, path, timeout=30):
    """(status, JSON body) of a gateway operator endpoint."""
    req = urllib.request.Request(gateway.endpoint + path, method=method,
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def admin_pass(clients, path, deadline=300):
    """Asks a gateway for a pass of one of its workers (`/_cairn/gc`,
    `/_cairn/repair`) and follows it there to its end; returns the status
    then (its `last` report, its `last_error`). Worker state is per gateway,
    so the gateway that took the request is the one asked afterwards."""
    end = time.monotonic() + deadline
    i = 0
    while True:
        g = clients.gateways[i % len(clients.gateways)]
        try:
            status, body = admin(g, "POST", path)
            if status == 202:
                break
            err = f"{status} {body}"
        except Exception as e:  # that gateway is not back yet
            err = e
        if time.monotonic() > end:
            raise RuntimeError(f"POST {path}: {err}")
        i += 1
        time.sleep(1)
    n = body["requested"]
    while True:
        try:
            status, st = admin(g, "GET", path)
            if status == 200 and st["finished"] >= n and not st["running"]:
                return st
        except Exception:
            pass
        if time.monotonic() > end:
            raise RuntimeError(f"{path}: pass {n} on {g.name} did not end")
        time.sleep(0.5)


def scrub_all(clients, deadline=300):
    """A scrub pass now, unthrottled, on every chunk node; waits for each and
    returns every node's scrub status by node id."""
    g = clients.gateways[0]
    status, body = admin(g, "POST", "/_cairn/scrub?bytes_per_sec=0")
    if status != 202 or body.get("unreachable"):
        raise RuntimeError(f"POST /_cairn/scrub: {status} {body}")
    passes = {n["node_id"]: n["pass"] for n in body["nodes"]}
    end = time.monotonic() + deadline
    while True:
        status, st = admin(g, "GET", "/_cairn/scrub")
        nodes = {n["node_id"]: n for n in st.get("nodes", [])} if status == 200 else {}
        if all(i in nodes and nodes[i]["finished"] >= p and not nodes[i]["running"]
               for i, p in passes.items()):
            return nodes
        if time.monotonic() > end:
            raise RuntimeError(f"scrub passes {passes} did not end: {st}")
        time.sleep(0.5)


def corrupt_found(gateway, node):
    """How many corrupt records `node` found (by reads and scrubs) since it started."""
    status, st = admin(gateway, "GET", "/_cairn/scrub")
    nodes = {n["node_id"]: n for n in st.get("nodes", [])} if status == 200 else {}
    if node not in nodes:
        raise RuntimeError(f"no scrub status for {node}: {status} {st}")
    return nodes[node]["corrupt_total"]


def hosted_volumes(gateway, node):
    """The volumes `node` hosts (their only live copy)."""
    status, body = admin(gateway, "GET", f"/_cairn/nodes/{node}/volumes")
    if status != 200:
        raise RuntimeError(f"volumes of {node}: {status} {body}")
    return body["volumes"]


def gc_loop(clients, stop):
    """Garbage collection asked for every few seconds through the run, on
    alternate gateways, whatever the fault (a pass that cannot reach a node
    fails and deletes nothing there; that is the collector's business)."""
    i = 0
    while not stop.wait(3):
        try:
            admin(clients.gateways[i % len(clients.gateways)], "POST", "/_cairn/gc", timeout=5)
        except Exception:
            pass
        i += 1


def check_lifecycle(clients, fault, result):
    """Invariants 3 and 5 once the run's snapshots are checked: a GC pass,
    a scrub of every node, then re-replication until nothing is missing."""
    gc = admin_pass(clients, "/_cairn/gc")
    if gc.get("last_error"):
        result.failures.append(f"gc pass failed: {gc['last_error']}")
    nodes = scrub_all(clients)
    flipped = getattr(fault, "flipped", None)
    if flipped:
        node, before = flipped
        found = nodes.get(node, {}).get("corrupt_total", 0) - before
        result.notes.append(f"rot on {node}: {found} record(s) found by reads and scrub")
        if found < 1:
            result.failures.append(f"inv5: bytes flipped on {node} were never found: "
                                   f"{nodes.get(node)}")
    first = admin_pass(clients, "/_cairn/repair")
    report = first.get("last") or {}
    lost = set(getattr(fault, "lost_nodes", []))
    missing = report.get("missing_by_node", {})
    if first.get("last_error"):
        result.failures.append(f"re-replication failed: {first['last_error']}")
    elif any(n not in lost for n in missing) or report.get("unreadable"):
        result.failures.append(f"inv3: referenced replicas missing where no disk was lost: "
                               f"{missing}, unreadable manifests {report.get('unreadable')}")
    result.notes.append(f"re-replication copied {report.get('copied', 0)} replica(s) {missing}")
    # Until a pass ends with no backlog (a node may still be starting), then
    # the proof: one more pass finds every referenced chunk at its RF.
    end = time.monotonic() + REPAIR_DEADLINE
    last = report
    while (last.get("backlog") or last.get("missing")) and time.monotonic() < end:
        time.sleep(1)
        last = admin_pass(clients, "/_cairn/repair").get("last") or {}
    if last.get("backlog") or last.get("missing"):
        result.failures.append(f"inv5: replicas still missing after repair: missing "
                               f"{last.get('missing')}, backlog {last.get('backlog_by_node')}")
