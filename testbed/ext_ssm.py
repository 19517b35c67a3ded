"""Run Command made real (SendCommand and what follows it), and Parameter Store one call at a
time; see moto_ext.py."""

import datetime
import math
import os
import random
import signal
import subprocess
import threading
import time
import traceback
import uuid

from moto.core.exceptions import JsonRESTError
from moto.core.responses import ActionResult, EmptyResult
from moto.ssm.responses import SimpleSystemManagerResponse

from ext_common import (
    COMMANDS,
    DETAILS_CAP,
    INSTANCE_EXEC,
    LOCK,
    PAGE_MAX,
    PLUGIN,
    STDERR_CAP,
    STDOUT_CAP,
    TERMINAL,
    bed,
    count_call,
    instance_dir,
    instance_tags,
    is_offline,
    log,
    managed_instances,
    now,
    resolve_count,
    running_count,
    running_instance,
    ssm_error,
    started_running,
    throttle,
)

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
    # A script that has exited (and been reaped) no longer owns its pid: its group id may be a new
    # process group's by now (another test's), so it is not signalled.
    if proc.poll() is not None:
        return
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
