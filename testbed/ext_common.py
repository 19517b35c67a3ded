"""What the parts of moto_ext share: the bed's state, the commands sent, the call counts, and
the instances as moto and the bed know them."""

import datetime
import json
import os
import sys
import threading

from moto.core.exceptions import JsonRESTError
from moto.ec2.models import ec2_backends

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
