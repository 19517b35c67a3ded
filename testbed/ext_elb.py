"""ELBv2 target groups that drive haproxy; see moto_ext.py."""

import csv
import io
import socket
import time
import traceback

from moto.elbv2 import models as elbv2_models

from ext_common import (
    LOCK,
    bed,
    count_call,
    log,
)

# ---- ELBv2: haproxy follows the target groups the bed manages ----

def haproxy(command):
    sock_path = bed()["haproxy_socket"]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(sock_path)
    try:
        s.sendall((command + "\n").encode())
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks).decode()
    finally:
        s.close()


def haproxy_stats():
    text = haproxy("show stat")
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise RuntimeError(f"haproxy show stat: unexpected answer {text[:200]!r}")
    reader = csv.DictReader(io.StringIO("\n".join([lines[0][2:]] + lines[1:])))
    return {(row["pxname"], row["svname"]): row for row in reader}


DRAINING: dict = {}  # (tg arn, instance id) -> deadline (epoch seconds)
BASELINE: dict = {}  # (tg arn, instance id) -> haproxy chkdown count at registration


def managed_backend(arn):
    return bed().get("target_groups", {}).get(arn)


_orig_register = elbv2_models.ELBv2Backend.register_targets
_orig_deregister = elbv2_models.ELBv2Backend.deregister_targets
_orig_health = elbv2_models.ELBv2Backend.describe_target_health


def register_targets(self, target_group_arn, instances):
    count_call("RegisterTargets")
    _orig_register(self, target_group_arn, instances)
    backend = managed_backend(target_group_arn)
    if not backend:
        return
    stats = haproxy_stats()
    for target in instances:
        iid = target["Id"]
        with LOCK:
            DRAINING.pop((target_group_arn, iid), None)
        if (backend, iid) not in stats:
            # First registration in this group: the instance becomes a server of its backend
            # (created in maintenance), checked as the group checks its targets.
            inst = bed().get("instances", {}).get(iid)
            if inst is None or not inst.get("lb", True):
                continue  # no host behind it (or kept out of the load balancer): moto's bookkeeping only
            haproxy(f"add server {backend}/{iid} {inst['ip']}:3000 check inter 500ms fall 2 rise 2")
            haproxy(f"enable health {backend}/{iid}")
        # Out of maintenance straight into DOWN, so the target takes traffic only after it
        # passes its checks, as an ALB target stays "initial" until healthy. The two commands go
        # in one line so haproxy schedules nothing between them.
        haproxy(f"set server {backend}/{iid} state ready; set server {backend}/{iid} health down")
        row = haproxy_stats().get((backend, iid), {})
        with LOCK:
            BASELINE[(target_group_arn, iid)] = int(row.get("chkdown") or 0)


def deregister_targets(self, target_group_arn, instances):
    count_call("DeregisterTargets")
    # ELBv2 answers success for a target that is not registered (moto raises): keep AWS's behaviour.
    tg = self.target_groups.get(target_group_arn)
    if tg is not None:
        instances = [t for t in instances if t["Id"] in tg.targets]
        if not instances:
            return
    _orig_deregister(self, target_group_arn, instances)
    backend = managed_backend(target_group_arn)
    if not backend:
        return
    tg = self.target_groups[target_group_arn]
    delay = int(tg.attributes.get("deregistration_delay.timeout_seconds", 300))
    for target in instances:
        iid = target["Id"]
        haproxy(f"set server {backend}/{iid} state drain")
        with LOCK:
            DRAINING[(target_group_arn, iid)] = time.time() + delay


def drain_loop():
    """A draining target leaves when it has no connection left or the delay has passed."""
    while True:
        time.sleep(0.2)
        with LOCK:
            items = list(DRAINING.items())
        if not items:
            continue
        try:
            stats = haproxy_stats()
        except Exception:
            log("drain loop:", traceback.format_exc())
            continue
        for (arn, iid), deadline in items:
            backend = managed_backend(arn)
            row = stats.get((backend, iid))
            if row is None:  # the instance (and its haproxy server) is gone
                with LOCK:
                    DRAINING.pop((arn, iid), None)
                continue
            if int(row.get("scur") or 0) == 0 or time.time() >= deadline:
                try:
                    haproxy(f"set server {backend}/{iid} state maint")
                finally:
                    with LOCK:
                        DRAINING.pop((arn, iid), None)


def describe_target_health(self, target_group_arn, targets):
    count_call("DescribeTargetHealth")
    backend = managed_backend(target_group_arn)
    if not backend:
        return _orig_health(self, target_group_arn, targets)
    tg = self.target_groups.get(target_group_arn)
    if tg is None:
        return _orig_health(self, target_group_arn, targets)
    stats = haproxy_stats()
    with LOCK:
        draining = {iid for (arn, iid) in DRAINING if arn == target_group_arn}
    if not targets:
        ids = list(tg.targets) + [i for i in draining if i not in tg.targets]
        targets = [{"Id": i} for i in ids]
    out = []
    port = tg.port
    for target in targets:
        iid = target["Id"]
        t_port = target.get("Port", port)
        if iid in tg.targets:
            row = stats.get((backend, iid), {})
            status = row.get("status", "")
            chkdown = int(row.get("chkdown") or 0)
            if status.startswith("UP") or status == "NOLB":
                with LOCK:
                    BASELINE[(target_group_arn, iid)] = -1  # has been healthy since registration
                out.append(elbv2_models.FakeHealthStatus(iid, t_port, tg.health_check_port, "healthy"))
            else:
                with LOCK:
                    base = BASELINE.get((target_group_arn, iid), 0)
                if base != -1 and chkdown <= base:
                    out.append(elbv2_models.FakeHealthStatus(iid, t_port, tg.health_check_port, "initial",
                                                             "Elb.InitialHealthChecking", "Initial health checks in progress"))
                else:
                    out.append(elbv2_models.FakeHealthStatus(iid, t_port, tg.health_check_port, "unhealthy",
                                                             "Target.FailedHealthChecks",
                                                             f"Health checks failed ({row.get('check_status', '')} {row.get('last_chk', '')})".strip()))
        elif iid in draining:
            out.append(elbv2_models.FakeHealthStatus(iid, t_port, tg.health_check_port, "draining",
                                                     "Target.DeregistrationInProgress", "Target deregistration is in progress"))
        else:
            out.append(elbv2_models.FakeHealthStatus(iid, t_port, tg.health_check_port, "unused",
                                                     "Target.NotRegistered", "Target is not registered to the target group"))
    return out


elbv2_models.ELBv2Backend.register_targets = register_targets
elbv2_models.ELBv2Backend.deregister_targets = deregister_targets
elbv2_models.ELBv2Backend.describe_target_health = describe_target_health
