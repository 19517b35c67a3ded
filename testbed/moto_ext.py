"""moto server with SSM Run Command, ELBv2 target health and ECR pushes made real.

Stock moto 5.2.5 answers SendCommand with an instant "Success" and runs nothing, has no
ListCommandInvocations / CancelCommand / DescribeInstanceInformation, and reports every
registered target healthy at once. A test bed like that would let a broken deploy pass, so this
module is loaded into moto's own process (``python moto_ext.py --host H --port P``) and replaces
those parts, keeping everything else (EC2, ECR API, Secrets Manager, SSM parameters, ELBv2
bookkeeping) as moto ships it:

* Run Command: SendCommand (AWS-RunShellScript) runs the ``commands`` on each targeted simulated
  instance, inside its network namespace and against its own Docker engine (``instance-exec``),
  with MaxConcurrency, MaxErrors, executionTimeout, TimeoutSeconds (delivery) and CancelCommand
  behaving as the SSM documentation describes. An instance marked offline (agent ConnectionLost)
  never runs anything: its invocation ends as Delivery Timed Out.
* ELBv2: the target groups the bed manages drive haproxy through its runtime API, so membership
  is real traffic routing; DescribeTargetHealth reports haproxy's real check state; a deregistered
  target drains until it has no connections or the group's deregistration delay has passed.
* ECR: the registry notifies every push here and the image is recorded in moto's ECR, so
  DescribeImages answers as ECR does after a ``docker push``.
* CloudWatch: DescribeAlarms over RPC v2 CBOR (the protocol the Rust SDK speaks, which moto does
  not), answered from moto's own alarms.

Where SSM's documented behaviour is ambiguous the choice made is said in place.
"""

import base64
import csv
import datetime
import io
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from moto.core.exceptions import JsonRESTError
from moto.core.responses import ActionResult, EmptyResult
from moto.ec2.models import ec2_backends
from moto.ecr.models import ecr_backends
from moto.elbv2 import models as elbv2_models
from moto.ssm.responses import SimpleSystemManagerResponse

STATE = os.environ["TESTBED_STATE"]
HERE = os.path.dirname(os.path.abspath(__file__))
INSTANCE_EXEC = os.path.join(HERE, "instance-exec")

# Limits SSM documents for what it returns.
STDOUT_CAP, STDERR_CAP, DETAILS_CAP, PAGE_MAX = 24000, 8000, 2500, 50
PLUGIN = "aws:runShellScript"
TERMINAL = {"Success", "Failed", "TimedOut", "Cancelled"}

LOCK = threading.RLock()
COMMANDS: dict = {}  # command id -> RunCommand, in send order
API_CALLS: dict = {}  # operation -> count, for the benchmarks (GET /calls on the hook port)
# Invocations running now and the most seen at once, over every command with the same comment
# (all the commands of one deploy): GET /in-progress?comment=TEXT on the hook port.
IN_PROGRESS: dict = {}


def running_count(comment):
    return IN_PROGRESS.setdefault(comment, {"now": 0, "peak": 0})


def started_running(comment):
    with LOCK:
        c = running_count(comment)
        c["now"] += 1
        c["peak"] = max(c["peak"], c["now"])


def log(*args):
    print("[moto_ext]", *args, file=sys.stderr, flush=True)


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def bed():
    """The bed's state file (written by bed.py): instances, target groups, registry, haproxy."""
    with open(os.path.join(STATE, "bed.json")) as f:
        return json.load(f)


def instance_dir(instance_id):
    return os.path.join(STATE, "instances", instance_id)


def is_offline(instance_id):
    return os.path.exists(os.path.join(instance_dir(instance_id), "offline"))


def ssm_error(code, message):
    return JsonRESTError(code, message)


def resolve_count(value, total, rounding, what):
    """MaxConcurrency / MaxErrors: a number, or a percentage of the targets."""
    value = str(value or "").strip()
    try:
        if value.endswith("%"):
            pct = float(value[:-1])
            if not 0 <= pct <= 100:
                raise ValueError
            return rounding(total * pct / 100.0)
        n = int(value)
        if n < 0:
            raise ValueError
        return n
    except ValueError:
        raise ssm_error("ValidationException", f"{what} {value!r} is not a number or a percentage")


def ec2(account, region):
    return ec2_backends[account][region]


def running_instance(account, region, instance_id):
    for reservation in ec2(account, region).all_reservations():
        for instance in reservation.instances:
            if instance.id == instance_id:
                return instance if instance.state == "running" else None
    return None


def instance_tags(instance):
    return {t["key"]: t["value"] for t in instance.get_tags()}


def managed_instances(account, region):
    """Instances that have an SSM agent: the bed's simulated instances, plus moto instances tagged
    ``testbed:agent=local`` (the scale benchmark's: their script runs as a plain local process)."""
    known = bed().get("instances", {})
    out = []
    for reservation in ec2(account, region).all_reservations():
        for instance in reservation.instances:
            if instance.state != "running":
                continue
            tags = instance_tags(instance)
            if instance.id in known or tags.get("testbed:agent") == "local":
                out.append((instance, tags))
    return out


class Invocation:
    def __init__(self, command, instance_id, tags):
        self.command = command
        self.instance_id = instance_id
        self.local = tags.get("testbed:agent") == "local" and instance_id not in bed().get("instances", {})
        self.status = "Pending"
        self.details = "Pending"
        self.code = -1
        self.stdout = ""
        self.stderr = ""
        self.start = None
        self.end = None
        self.proc = None
        self.cancel = False

    @property
    def terminal(self):
        return self.status in TERMINAL

    @property
    def is_error(self):
        # Failed and Execution Timed Out count against MaxErrors; delivery problems do not.
        return self.details in ("Failed", "Execution Timed Out")

    def finish(self, status, details, code=None):
        with LOCK:
            if self.status == "InProgress":
                running_count(self.command.comment)["now"] -= 1
            self.status, self.details = status, details
            if code is not None:
                self.code = code
            self.end = now()

    def elapsed(self):
        if not self.start:
            return "PT0S"
        end = self.end or now()
        return f"PT{(end - self.start).total_seconds():.3f}S"

    def plugin_output(self):
        out = self.stdout
        if self.stderr:
            out += "\n----------ERROR-------\n" + self.stderr
        return out[:DETAILS_CAP]

    def run(self):
        cmd = self.command
        deadline = cmd.requested + datetime.timedelta(seconds=cmd.delivery_timeout)
        # Delivery: an instance whose agent lost its connection receives nothing until it is
        # back; past the delivery timeout the invocation ends as Delivery Timed Out.
        while True:
            if self.cancel:
                return self.finish("Cancelled", "Cancelled")
            if running_instance(cmd.account, cmd.region, self.instance_id) is None:
                return self.finish("Failed", "Undeliverable")
            if not is_offline(self.instance_id):
                break
            if now() >= deadline:
                return self.finish("TimedOut", "Delivery Timed Out")
            with LOCK:
                self.status, self.details = "Delayed", "Delayed"
            time.sleep(0.2)

        if self.local:
            # A simulated agent without a host (the scale benchmark's thousand instances): it
            # takes the command, runs nothing, and succeeds after a short while.
            with LOCK:
                self.status, self.details, self.start = "InProgress", "InProgress", now()
            started_running(self.command.comment)
            time.sleep(random.uniform(0.05, 0.2))
            if self.cancel:
                return self.finish("Cancelled", "Cancelled", -1)
            self.stdout = "test bed: no-op on a simulated agent without a host\n"
            return self.finish("Success", "Success", 0)
        workdir = os.path.join(instance_dir(self.instance_id), "ssm", cmd.command_id)
        os.makedirs(workdir, exist_ok=True)
        script = os.path.join(workdir, "_script.sh")
        with open(script, "w") as f:
            f.write("\n".join(cmd.commands) + "\n")
        os.chmod(script, 0o700)
        out_path, err_path = os.path.join(workdir, "stdout"), os.path.join(workdir, "stderr")
        env = {
            "AWS_SSM_INSTANCE_ID": self.instance_id,
            "AWS_SSM_REGION_NAME": cmd.region,
        }
        # The agent runs the script file with `sh -c`: a shebang is honoured, otherwise sh runs it.
        argv = [INSTANCE_EXEC, self.instance_id, "sh", "-c", script]
        full_env = {**os.environ, **env}
        with LOCK:
            if self.cancel:
                return self.finish("Cancelled", "Cancelled")
            self.status, self.details, self.start = "InProgress", "InProgress", now()
            started_running(self.command.comment)
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                self.proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                             cwd=workdir, env=full_env, start_new_session=True)
        timed_out = False
        try:
            self.proc.wait(timeout=cmd.execution_timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_group(self.proc)
        with open(out_path, "rb") as f:
            self.stdout = f.read().decode("utf-8", "replace")
        with open(err_path, "rb") as f:
            self.stderr = f.read().decode("utf-8", "replace")
        if self.cancel:
            return self.finish("Cancelled", "Cancelled", -1)
        if timed_out:
            return self.finish("TimedOut", "Execution Timed Out", -1)
        code = self.proc.returncode
        if code == 0:
            return self.finish("Success", "Success", 0)
        return self.finish("Failed", "Failed", code if code > 0 else 128 - code)


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    except ProcessLookupError:
        pass


class RunCommand:
    def __init__(self, account, region, params, targets_resolved):
        self.account, self.region = account, region
        self.command_id = str(uuid.uuid4())
        self.document = params["DocumentName"]
        self.comment = params.get("Comment", "")
        self.parameters = params.get("Parameters") or {}
        self.commands = self.parameters.get("commands") or []
        try:
            self.execution_timeout = int((self.parameters.get("executionTimeout") or ["3600"])[0])
        except ValueError:
            raise ssm_error("InvalidParameters", "executionTimeout must be a number of seconds")
        self.delivery_timeout = int(params.get("TimeoutSeconds") or 3600)
        self.targets = params.get("Targets") or []
        self.instance_ids_param = params.get("InstanceIds") or []
        self.max_concurrency_param = params.get("MaxConcurrency") or "50"
        self.max_errors_param = params.get("MaxErrors") or "0"
        self.requested = now()
        n = len(targets_resolved)
        self.concurrency = max(1, resolve_count(self.max_concurrency_param, n, math.ceil, "MaxConcurrency"))
        self.max_errors = resolve_count(self.max_errors_param, n, math.floor, "MaxErrors")
        self.order = [iid for iid, _ in targets_resolved]
        self.invocations = {iid: Invocation(self, iid, tags) for iid, tags in targets_resolved}
        self.status, self.details = ("Pending", "Pending") if n else ("Success", "Success")
        self.cancel_requested = False
        threading.Thread(target=self._schedule, daemon=True, name=f"cmd-{self.command_id}").start()

    def _schedule(self):
        pending = list(self.order)
        running = {}
        try:
            while True:
                with LOCK:
                    errors = sum(1 for i in self.invocations.values() if i.is_error)
                    stop = errors > self.max_errors
                    while pending and not stop and not self.cancel_requested and len(running) < self.concurrency:
                        inv = self.invocations[pending.pop(0)]
                        if inv.cancel:
                            inv.finish("Cancelled", "Cancelled")
                            continue
                        t = threading.Thread(target=self._run_one, args=(inv,), daemon=True)
                        running[inv.instance_id] = t
                        t.start()
                        if self.status == "Pending":
                            self.status, self.details = "InProgress", "InProgress"
                    if stop or self.cancel_requested:
                        # Past MaxErrors SSM stops sending: the invocations never started end as
                        # Terminated. Status has no "Terminated" value; SSM reports Cancelled.
                        for iid in pending:
                            inv = self.invocations[iid]
                            if self.cancel_requested or inv.cancel:
                                inv.finish("Cancelled", "Cancelled")
                            else:
                                inv.finish("Cancelled", "Terminated")
                        pending = []
                    for iid in [i for i, t in running.items() if not t.is_alive()]:
                        del running[iid]
                    if not pending and not running:
                        self._finalise()
                        return
                time.sleep(0.05)
        except Exception:
            log("scheduler crashed:", traceback.format_exc())
            with LOCK:
                self.status, self.details = "Failed", "Failed"

    def _run_one(self, inv):
        try:
            inv.run()
        except Exception:
            log("invocation crashed:", traceback.format_exc())
            inv.stderr += "\n[test bed] agent error:\n" + traceback.format_exc()
            inv.finish("Failed", "Failed", -1)

    def _finalise(self):
        invs = list(self.invocations.values())
        errors = sum(1 for i in invs if i.is_error)
        delivery = sum(1 for i in invs if i.details == "Delivery Timed Out")
        if self.cancel_requested:
            self.status, self.details = "Cancelled", "Cancelled"
        elif all(i.status == "Success" for i in invs):
            self.status, self.details = "Success", "Success"
        elif errors > self.max_errors:
            exec_timeouts = sum(1 for i in invs if i.details == "Execution Timed Out")
            if exec_timeouts > self.max_errors and exec_timeouts == errors:
                self.status, self.details = "TimedOut", "Execution Timed Out"
            else:
                self.status, self.details = "Failed", "Failed"
        elif delivery > self.max_errors:
            self.status, self.details = "TimedOut", "Delivery Timed Out"
        else:
            # Attempted everywhere, not everything succeeded, not enough errors to be Failed.
            self.status, self.details = "Failed", "Incomplete"

    def cancel(self, instance_ids=None):
        with LOCK:
            targets = instance_ids or list(self.invocations)
            if not instance_ids:
                self.cancel_requested = True
            for iid in targets:
                inv = self.invocations.get(iid)
                if inv is None or inv.terminal:
                    continue
                inv.cancel = True
                if inv.status != "InProgress":
                    continue
                inv.status, inv.details = "Cancelling", "Cancelling"
                if inv.proc is not None:
                    threading.Thread(target=kill_group, args=(inv.proc,), daemon=True).start()
            if self.status not in TERMINAL:
                self.status, self.details = "Cancelling", "Cancelling"

    def counts(self):
        invs = self.invocations.values()
        return {
            "TargetCount": len(self.invocations),
            "CompletedCount": sum(1 for i in invs if i.terminal),
            "ErrorCount": sum(1 for i in invs if i.is_error),
            "DeliveryTimedOutCount": sum(1 for i in invs if i.details == "Delivery Timed Out"),
        }

    def response_object(self):
        return {
            "CommandId": self.command_id,
            "DocumentName": self.document,
            "DocumentVersion": "$DEFAULT",
            "Comment": self.comment,
            "ExpiresAfter": self.requested + datetime.timedelta(seconds=self.delivery_timeout + self.execution_timeout),
            "Parameters": self.parameters,
            "InstanceIds": self.instance_ids_param,
            "Targets": self.targets,
            "RequestedDateTime": self.requested,
            "Status": self.status,
            "StatusDetails": self.details,
            "MaxConcurrency": self.max_concurrency_param,
            "MaxErrors": self.max_errors_param,
            "TimeoutSeconds": self.delivery_timeout,
            **self.counts(),
        }

    def invocation_object(self, inv, details):
        out = {
            "CommandId": self.command_id,
            "InstanceId": inv.instance_id,
            "Comment": self.comment,
            "DocumentName": self.document,
            "DocumentVersion": "$DEFAULT",
            "RequestedDateTime": self.requested,
            "Status": inv.status,
            "StatusDetails": inv.details,
            "StandardOutputUrl": "",
            "StandardErrorUrl": "",
            "CommandPlugins": [],
        }
        if details:
            plugin = {
                "Name": PLUGIN,
                "Status": inv.status,
                "StatusDetails": inv.details,
                "ResponseCode": inv.code,
                "Output": inv.plugin_output() if inv.terminal else "",
            }
            if inv.start:
                plugin["ResponseStartDateTime"] = inv.start
            if inv.end:
                plugin["ResponseFinishDateTime"] = inv.end
            out["CommandPlugins"] = [plugin]
        return out


# Fault injection for what the emulator cannot produce by itself: a throttling storm. While set
# (GET /throttle?needle=TEXT on the hook port), the follow calls (ListCommands,
# ListCommandInvocations, GetCommandInvocation) for commands whose comment contains TEXT answer
# ThrottlingException three times out of four, in bursts, as SSM does under load.
THROTTLE = {"needle": None, "count": 0}


def throttle(command_id):
    with LOCK:
        command = COMMANDS.get(command_id)
        needle = THROTTLE["needle"]
        if not needle or command is None or needle not in command.comment:
            return
        THROTTLE["count"] += 1
        if THROTTLE["count"] % 4 == 0:
            return
        API_CALLS["Throttled"] = API_CALLS.get("Throttled", 0) + 1
    raise ssm_error("ThrottlingException", "Rate exceeded")


def count_call(name):
    with LOCK:
        API_CALLS[name] = API_CALLS.get(name, 0) + 1


def paginate(items, max_results, token, page_max=PAGE_MAX):
    size = min(int(max_results or page_max), page_max)
    start = int(token or 0)
    page = items[start:start + size]
    nxt = str(start + size) if start + size < len(items) else None
    return page, nxt


def tag_match(tags, targets):
    """Targets: AND across keys, OR across a key's values."""
    for target in targets:
        key = target["Key"]
        if not key.startswith("tag:"):
            raise ssm_error("InvalidParameters", f"target key {key!r} is not supported by the test bed (use tag:Key or InstanceIds)")
        if tags.get(key[4:]) not in target.get("Values", []):
            return False
    return True


# ---- SSM handlers (methods added to moto's SimpleSystemManagerResponse) ----

REQUEST_FIELDS = ("DocumentName", "Comment", "Parameters", "InstanceIds", "Targets", "MaxConcurrency",
                  "MaxErrors", "TimeoutSeconds", "CommandId", "InstanceId", "PluginName", "MaxResults",
                  "NextToken", "Details", "Filters", "InstanceInformationFilterList")


def request(handler):
    """The request's fields (moto's JSON handlers read them one by one with _get_param)."""
    out = {}
    for name in REQUEST_FIELDS:
        value = handler._get_param(name)
        if value is not None:
            out[name] = value
    return out


def send_command(self):
    count_call("SendCommand")
    params = request(self)
    document = params.get("DocumentName")
    if document != "AWS-RunShellScript":
        raise ssm_error("InvalidDocument", f"the test bed runs only AWS-RunShellScript, not {document!r}")
    instance_ids = params.get("InstanceIds") or []
    targets = params.get("Targets") or []
    if bool(instance_ids) == bool(targets):
        raise ssm_error("ValidationException", "give exactly one of InstanceIds or Targets")
    if len(instance_ids) > 50:
        raise ssm_error("ValidationException", "InstanceIds: at most 50")
    account, region = self.current_account, self.region
    managed = {inst.id: instance_tags(inst) for inst, _ in managed_instances(account, region)}
    if instance_ids:
        unknown = [i for i in instance_ids if i not in managed]
        if unknown:
            raise ssm_error("InvalidInstanceId", f"Instances {unknown} not in a valid state for account {account}")
        resolved = [(i, managed[i]) for i in dict.fromkeys(instance_ids)]
    else:
        if len(targets) > 5 or any(len(t.get("Values", [])) > 5 for t in targets):
            raise ssm_error("ValidationException", "Targets: at most 5 keys with 5 values each")
        resolved = [(i, tags) for i, tags in sorted(managed.items()) if tag_match(tags, targets)]
    command = RunCommand(account, region, params, resolved)
    with LOCK:
        COMMANDS[command.command_id] = command
    return ActionResult({"Command": command.response_object()})


def find_command(command_id):
    command = COMMANDS.get(command_id)
    if command is None:
        raise ssm_error("InvalidCommandId", f"command {command_id} does not exist")
    return command


def list_commands(self):
    count_call("ListCommands")
    p = request(self)
    throttle(p.get("CommandId"))
    with LOCK:
        if p.get("CommandId"):
            items = [find_command(p["CommandId"])]
        else:
            items = [c for c in COMMANDS.values() if c.region == self.region]
            if p.get("InstanceId"):
                items = [c for c in items if p["InstanceId"] in c.invocations]
        page, nxt = paginate(items, p.get("MaxResults"), p.get("NextToken"))
        result = {"Commands": [c.response_object() for c in page]}
    if nxt:
        result["NextToken"] = nxt
    return ActionResult(result)


def list_command_invocations(self):
    count_call("ListCommandInvocations")
    p = request(self)
    throttle(p.get("CommandId"))
    with LOCK:
        if p.get("CommandId"):
            commands = [find_command(p["CommandId"])]
        else:
            commands = [c for c in COMMANDS.values() if c.region == self.region]
        pairs = []
        for c in commands:
            for iid in c.order:
                if p.get("InstanceId") and iid != p["InstanceId"]:
                    continue
                pairs.append((c, c.invocations[iid]))
        page, nxt = paginate(pairs, p.get("MaxResults"), p.get("NextToken"))
        result = {"CommandInvocations": [c.invocation_object(i, bool(p.get("Details"))) for c, i in page]}
    if nxt:
        result["NextToken"] = nxt
    return ActionResult(result)


def get_command_invocation(self):
    count_call("GetCommandInvocation")
    p = request(self)
    throttle(p.get("CommandId"))
    with LOCK:
        command = COMMANDS.get(p.get("CommandId"))
        inv = command.invocations.get(p.get("InstanceId")) if command else None
        if inv is None or (p.get("PluginName") not in (None, PLUGIN)):
            raise ssm_error("InvocationDoesNotExist", "An error occurred (InvocationDoesNotExist)")
        result = {
            "CommandId": command.command_id,
            "InstanceId": inv.instance_id,
            "Comment": command.comment,
            "DocumentName": command.document,
            "DocumentVersion": "$DEFAULT",
            "PluginName": PLUGIN,
            "ResponseCode": inv.code,
            "ExecutionStartDateTime": inv.start.isoformat() if inv.start else "",
            "ExecutionElapsedTime": inv.elapsed(),
            "ExecutionEndDateTime": inv.end.isoformat() if inv.end and inv.start else "",
            "Status": inv.status,
            "StatusDetails": inv.details,
            "StandardOutputContent": inv.stdout[:STDOUT_CAP] if inv.terminal else "",
            "StandardOutputUrl": "",
            "StandardErrorContent": inv.stderr[:STDERR_CAP] if inv.terminal else "",
            "StandardErrorUrl": "",
        }
    return ActionResult(result)


def cancel_command(self):
    count_call("CancelCommand")
    p = request(self)
    with LOCK:
        find_command(p.get("CommandId")).cancel(p.get("InstanceIds") or None)
    return EmptyResult()


def describe_instance_information(self):
    count_call("DescribeInstanceInformation")
    p = request(self)
    filters = p.get("Filters") or []
    legacy = p.get("InstanceInformationFilterList") or []
    known = bed().get("instances", {})
    rows = []
    for inst, _ in managed_instances(self.current_account, self.region):
        tags = instance_tags(inst)
        ping = "ConnectionLost" if is_offline(inst.id) else "Online"
        ok = True
        for f in filters:
            key, values = f["Key"], f.get("Values", [])
            if key.startswith("tag:"):
                ok &= tags.get(key[4:]) in values
            elif key == "tag-key":
                ok &= any(v in tags for v in values)
            elif key == "PingStatus":
                ok &= ping in values
            elif key == "InstanceIds":
                ok &= inst.id in values
            else:
                raise ssm_error("InvalidInstanceInformationFilterValue", f"filter key {key!r} is not supported by the test bed")
        for f in legacy:
            if f["key"] == "InstanceIds":
                ok &= inst.id in f.get("valueSet", [])
            elif f["key"] == "PingStatus":
                ok &= ping in f.get("valueSet", [])
        if not ok:
            continue
        rows.append({
            "InstanceId": inst.id,
            "PingStatus": ping,
            "LastPingDateTime": now(),
            "AgentVersion": "3.3.0.0",
            "IsLatestVersion": True,
            "PlatformType": "Linux",
            "PlatformName": "Debian GNU/Linux (test bed)",
            "PlatformVersion": "12",
            "ResourceType": "EC2Instance",
            "IPAddress": known.get(inst.id, {}).get("ip", inst.private_ip_address),
            "ComputerName": tags.get("Name", inst.id),
        })
    rows.sort(key=lambda r: r["InstanceId"])
    page, nxt = paginate(rows, p.get("MaxResults"), p.get("NextToken"))
    result = {"InstanceInformationList": page}
    if nxt:
        result["NextToken"] = nxt
    return ActionResult(result)


def wrap(fn):
    """moto's dispatcher turns our JsonRESTError into an HTTP error response; anything else would
    be a 500 without a word, so log it."""
    def method(self):
        try:
            return fn(self)
        except JsonRESTError:
            raise
        except Exception:
            log(fn.__name__, "failed:", traceback.format_exc())
            raise
    method.__name__ = fn.__name__
    return method


for _fn in (send_command, list_commands, list_command_invocations, get_command_invocation,
            cancel_command, describe_instance_information):
    setattr(SimpleSystemManagerResponse, _fn.__name__, wrap(_fn))


# ---- SSM Parameter Store: one call at a time ----
# moto numbers a new version from the last one without a lock, so two PutParameter calls served
# at once by the threaded server could get the same number. Parameter Store never gives two puts
# one version (the deploy lock relies on it), so the bed serialises parameter calls.
PARAMETERS = threading.Lock()


def serialised(fn):
    def method(self):
        with PARAMETERS:
            return fn(self)
    method.__name__ = fn.__name__
    return method


for _name in ("put_parameter", "get_parameter", "get_parameters", "get_parameter_history", "delete_parameter",
              "get_parameters_by_path"):
    setattr(SimpleSystemManagerResponse, _name, serialised(getattr(SimpleSystemManagerResponse, _name)))


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


# ---- ECR: record pushes the registry notifies ----

def record_push(event):
    target = event.get("target", {})
    tag, digest, repo = target.get("tag"), target.get("digest"), target.get("repository")
    if event.get("action") != "push" or not tag or not digest or not repo:
        return
    state = bed()
    url = f"{state['registry_url']}/v2/{repo}/manifests/{digest}"
    req = urllib.request.Request(url, headers={
        "Accept": target.get("mediaType") or "application/vnd.docker.distribution.manifest.v2+json",
        "Authorization": "Basic " + base64.b64encode(f"AWS:{state['registry_password']}".encode()).decode(),
    })
    with urllib.request.urlopen(req, timeout=10) as resp:
        manifest = resp.read().decode()
        media_type = resp.headers.get("Content-Type") or target.get("mediaType")
    backend = ecr_backends[state["account"]][state["region"]]
    if repo not in backend.repositories:
        log(f"push to {repo}:{tag} ignored: no ECR repository {repo} in {state['region']}")
        return
    try:
        backend.put_image(repo, manifest, tag, media_type, digest)
        log(f"ECR {repo}:{tag} -> {digest}")
    except Exception as e:  # same tag, same digest: already recorded
        log(f"ECR {repo}:{tag}: {e}")


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            for event in json.loads(body or b"{}").get("events", []):
                record_push(event)
            self.send_response(200)
        except Exception:
            log("registry event:", traceback.format_exc())
            self.send_response(500)
        self.end_headers()

    def do_GET(self):
        # /calls: API call counts since start (for the benchmarks); /reset-calls zeroes them;
        # /throttle?needle=TEXT starts a throttling storm (see THROTTLE), /throttle stops it;
        # /in-progress?comment=TEXT: invocations of commands with that comment running now, and
        # the most at once.
        with LOCK:
            if self.path.startswith("/in-progress"):
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                body = json.dumps(running_count((query.get("comment") or [""])[0])).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if self.path == "/reset-calls":
                API_CALLS.clear()
            if self.path.startswith("/throttle"):
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                THROTTLE["needle"] = (query.get("needle") or [None])[0]
                THROTTLE["count"] = 0
            body = json.dumps(API_CALLS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Imds(BaseHTTPRequestHandler):
    """IMDSv2 for the simulated instances: a token first (PUT), then the region and the asking
    instance's id (found by its address). A request without a token gets 401, as IMDSv2 answers."""

    tokens: set = set()

    def answer(self, code, body=b""):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        if self.path != "/latest/api/token" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return self.answer(400)
        token = uuid.uuid4().hex
        Imds.tokens.add(token)
        self.answer(200, token.encode())

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") not in Imds.tokens:
            return self.answer(401)
        state = bed()
        ip = self.client_address[0]
        iid = next((i for i, v in state.get("instances", {}).items() if v.get("ip") == ip), None)
        values = {"/latest/meta-data/placement/region": state["region"], "/latest/meta-data/instance-id": iid}
        value = values.get(self.path)
        if value is None:
            return self.answer(404)
        self.answer(200, value.encode())

    def log_message(self, *args):
        pass


# ---- CloudWatch: DescribeAlarms over Smithy RPC v2 CBOR ----
#
# The AWS SDK for Rust speaks CloudWatch's newest protocol, RPC v2 CBOR
# (POST /service/GraniteServiceVersion20100801/operation/<Operation>, CBOR bodies); moto 5.2.5
# serves CloudWatch over Query and JSON only (getmoto/moto#9195: no CBOR planned), and answers
# 404. This answers the one operation ec2-deploy calls, DescribeAlarms, from moto's own
# CloudWatch state, so alarms made and set with the aws CLI (Query) are what the deploy reads.

CBOR_PREFIX = "/service/GraniteServiceVersion20100801/operation/"


def cbor_answer(start_response, status, body):
    import cbor2
    data = cbor2.dumps(body)
    start_response(status, [("Content-Type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor"),
                            ("Content-Length", str(len(data)))])
    return [data]


def cloudwatch_cbor(environ, start_response):
    import cbor2
    from moto.cloudwatch.models import cloudwatch_backends
    operation = environ["PATH_INFO"][len(CBOR_PREFIX):]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    request = cbor2.loads(environ["wsgi.input"].read(length)) if length else {}
    if operation != "DescribeAlarms":
        return cbor_answer(start_response, "400 Bad Request",
                           {"__type": "InvalidAction", "message": f"{operation} is not served over CBOR by the test bed"})
    # The region is the SigV4 credential scope's: Credential=KEY/DATE/REGION/SERVICE/aws4_request.
    auth = environ.get("HTTP_AUTHORIZATION", "")
    region = auth.split("Credential=", 1)[1].split("/")[2] if "Credential=" in auth else bed()["region"]
    count_call("DescribeAlarms")
    backend = cloudwatch_backends[bed()["account"]][region]
    alarms = list(backend.describe_alarms())
    if request.get("AlarmNames"):
        alarms = [a for a in alarms if a.name in request["AlarmNames"]]
    if request.get("AlarmNamePrefix"):
        alarms = [a for a in alarms if a.name.startswith(request["AlarmNamePrefix"])]
    metric = [{"AlarmName": a.name, "AlarmArn": a.alarm_arn, "StateValue": a.state_value,
               "StateReason": a.state_reason or ""} for a in alarms]
    return cbor_answer(start_response, "200 OK", {"MetricAlarms": metric, "CompositeAlarms": []})


def serve_cloudwatch_cbor():
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication
    original = DomainDispatcherApplication.__call__

    def call(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith(CBOR_PREFIX):
            try:
                return cloudwatch_cbor(environ, start_response)
            except Exception as e:
                log("CloudWatch CBOR:", traceback.format_exc())
                return cbor_answer(start_response, "500 Internal Server Error", {"__type": "InternalFailure", "message": str(e)})
        return original(self, environ, start_response)

    DomainDispatcherApplication.__call__ = call


def main():
    hook_port = int(os.environ["TESTBED_HOOK_PORT"])
    serve_cloudwatch_cbor()
    try:
        imds = ThreadingHTTPServer(("169.254.169.254", 80), Imds)
        threading.Thread(target=imds.serve_forever, daemon=True).start()
    except OSError as e:
        log("no instance metadata service:", e)
    server = ThreadingHTTPServer(("127.0.0.1", hook_port), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Thread(target=drain_loop, daemon=True).start()
    from moto.server import main as moto_main
    moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()
