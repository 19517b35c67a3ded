"""What the benchmarks (bench.py) share: the bed's clients, a steady load, running the action,
fleets and prebuilt images."""

import base64
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))


def load_env():
    env = {}
    with open(os.environ["TESTBED_ENV"]) as f:
        for line in f:
            if "=" in line and not line.startswith("#"):
                k, v = line.strip().split("=", 1)
                env[k] = v
    return env


# Rewriting BENCHMARKS.md from recorded figures needs no test bed.
RECORD_ONLY = sys.argv[1:2] in (["--markdown-only"], ["--image"])
ENV = {} if RECORD_ONLY else load_env()
BIN = "" if RECORD_ONLY else os.environ["EC2_DEPLOY_BIN"]
CONTEXT = "" if RECORD_ONLY else os.environ["DEMO_CONTEXT"]


def client(service):
    return boto3.client(service, endpoint_url=ENV["AWS_ENDPOINT_URL"], region_name=ENV["AWS_REGION"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def log(*args):
    print("bench:", *args, file=sys.stderr, flush=True)


def bed(*args):
    return subprocess.run([os.path.join(ROOT, "scripts/testbed"), *args], check=True, capture_output=True, text=True).stdout.split()


def on_instance(iid, *cmd, check=True):
    return subprocess.run([ENV["TESTBED_EXEC"], iid, *cmd], capture_output=True, text=True, check=check)


def median_range(values, fmt="{:.2f}"):
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


# ---- load --------------------------------------------------------------------------------

class Load:
    """Steady load: THREADS threads, one connection per request, a GET /version each; bounded by
    a stop flag, 300 s and 500,000 requests."""

    def __init__(self, url, threads=3):
        host, port = url.replace("http://", "").split("/")[0].split(":")
        self.addr = (host, int(port))
        self.stop_flag = threading.Event()
        self.ok = self.failed = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        self.started = time.time()
        for t in self.threads:
            t.start()

    def one(self):
        try:
            with socket.create_connection(self.addr, timeout=5) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.sendall(b"GET /version HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            return data.startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def run(self):
        n = 0
        while not self.stop_flag.is_set() and time.time() - self.started < 300 and n < 500_000:
            ok = self.one()
            n += 1
            with self.lock:
                if ok:
                    self.ok += 1
                else:
                    self.failed += 1

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join()
        return self.ok, self.failed


# ---- running the action ------------------------------------------------------------------

def action(workspace, inputs, extra_env=None):
    env = {
        "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
        "AWS_ENDPOINT_URL": ENV["AWS_ENDPOINT_URL"], "AWS_REGION": ENV["AWS_REGION"],
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "DOCKER_HOST": ENV["DOCKER_HOST"], "EC2_DEPLOY_DOCKER": ENV["TESTBED_DOCKER"],
        "GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": workspace, "GITHUB_SHA": "0" * 40,
        **(extra_env or {}),
    }
    for k, v in inputs.items():
        env[f"INPUT_{k.upper()}"] = v
    started = time.time()
    r = subprocess.run([BIN, "action"], cwd=workspace, env=env, capture_output=True, text=True)
    return r, time.time() - started


def workspace_with_demo():
    ws = tempfile.mkdtemp(prefix="bench-ws-")
    for f in ("Dockerfile", "demo-app"):
        shutil.copy(os.path.join(CONTEXT, f), ws)
    return ws


def fleet(n, lb):
    suite = f"bench-{uuid.uuid4().hex[:6]}"
    ids = bed("add-instance", "--count", str(n), "--tag", f"Suite={suite}", "--tag", "Role=web", *([] if lb else ["--no-lb"]))
    return suite, ids


def base_inputs(repo, suite, tag):
    return {"environment": "bench", "ecr-repository": repo, "registry": ENV["TESTBED_REGISTRY"], "image-tag": tag,
            "build-args": f"VERSION={tag}", "targets": f"Suite={suite}\nRole=web", "ports": "3000:3000",
            "health-check-path": "/health", "proxy-image": ENV["TESTBED_PROXY_IMAGE"]}


def wait_healthy(elb, ids, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        h = elb.describe_target_health(TargetGroupArn=ENV["TESTBED_TARGET_GROUP_ARN"], Targets=[{"Id": i} for i in ids])
        if all(d["TargetHealth"]["State"] == "healthy" for d in h["TargetHealthDescriptions"]):
            return
        time.sleep(0.2)
    raise SystemExit("bench: targets never became healthy")


def registry_login():
    """The runner's docker CLI environment, logged in to the registry with ECR's token."""
    ecr = client("ecr")
    token = base64.b64decode(ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]).decode().split(":", 1)[1]
    denv = {**os.environ, "DOCKER_HOST": ENV["DOCKER_HOST"], "DOCKER_CONFIG": tempfile.mkdtemp(), "DOCKER_BUILDKIT": "1"}
    subprocess.run([ENV["TESTBED_DOCKER"], "login", "-u", "AWS", "--password-stdin", ENV["TESTBED_REGISTRY"]],
                   input=token, text=True, env=denv, check=True, capture_output=True)
    return denv


def prebuild(repo, ws, tags):
    """Builds and pushes the demo app as each tag (VERSION=tag), as the action would."""
    denv = registry_login()
    docker = ENV["TESTBED_DOCKER"]
    for tag in tags:
        ref = f"{ENV['TESTBED_REGISTRY']}/{repo}:{tag}"
        subprocess.run([docker, "build", "-q", "--build-arg", f"VERSION={tag}", "-t", ref, ws], env=denv, check=True, capture_output=True)
        subprocess.run([docker, "push", ref], env=denv, check=True, capture_output=True)
    shutil.rmtree(denv["DOCKER_CONFIG"], ignore_errors=True)
    time.sleep(1)  # the registry's push notifications reach ECR


def physical_limit(ids, image):
    """Seconds the work itself takes, one instance after another (three batches of one): pull a
    release the instance has not pulled, start it on a spare port, until /health answers 200."""
    total = 0.0
    for iid in ids:
        script = (f"aws ecr get-login-password --region {ENV['AWS_REGION']} | docker login -u AWS --password-stdin {ENV['TESTBED_REGISTRY']} >/dev/null; "
                  f"t0=$(date +%s%N); docker pull -q {image} >/dev/null; docker run -d --name bench-limit -p 3999:3000 {image} >/dev/null; "
                  "until curl -sf -o /dev/null http://127.0.0.1:3999/health; do sleep 0.01; done; "
                  "echo $(( $(date +%s%N) - t0 )); docker rm -f bench-limit >/dev/null")
        out = on_instance(iid, "bash", "-c", script)
        total += int(out.stdout.strip().splitlines()[-1]) / 1e9
    return total


def deploy_under_load(ws, inputs, lb):
    load = Load(lb)
    time.sleep(0.5)
    r, secs = action(ws, inputs)
    time.sleep(0.5)
    ok, failed = load.stop()
    if r.returncode != 0:
        raise SystemExit(f"bench: ec2-deploy failed:\n{r.stdout[-3000:]}\n{r.stderr[-2000:]}")
    return {"ok": ok, "failed": failed, "seconds": secs}


def suite_markdown(suite):
    """S1: the suite's own build and its aws CLI calls (see the docstring)."""
    if not suite:
        return []
    b, a = suite["build"], suite["aws_cli"]
    return [
        "## S1 — the suite's own build",
        "",
        "| Dev profile | Cold build of every test binary (s) | target/ (GB) |",
        "|---|---|---|",
        f"| full debug info (Cargo's default) | {b['full']['seconds']} | {b['full']['gb']} |",
        f"| line tables only (`debug = \"line-tables-only\"`) | {b['lines']['seconds']} | {b['lines']['gb']} |",
        "",
        f"{b['method']} Ratio line tables ÷ full: {b['lines']['seconds'] / b['full']['seconds']:.2f} in time, "
        f"{b['lines']['gb'] / b['full']['gb']:.2f} on disk; backtraces keep their files and lines.",
        "",
        "| The tests' own aws CLI calls | CPU for 20 calls (core-s) | Wall for 20 calls (s) |",
        "|---|---|---|",
        f"| a process per call | {a['process']['cpu']} | {a['process']['wall']} |",
        f"| the bed's warm aws CLI (`testbed/aws_server.py`) | {a['warm']['cpu']} | {a['warm']['wall']} |",
        "",
        f"{a['method']}",
        "",
    ]
