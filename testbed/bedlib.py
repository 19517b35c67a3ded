"""What bed.py builds on: its constants and state file, the processes it spawns and waits for,
the checks that a part answers, and the network namespaces of the simulated hosts."""

import contextlib
import fcntl
import http.client
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
STATE = os.environ.get("TESTBED_STATE", "/var/tmp/ec2-deploy-testbed")
RUN = "/run/edtb"  # short paths for containerd's sockets
BRIDGE, HOST_IP = "edtb0", "10.77.0.1"
NS_PREFIX = "edtb-"
REGION, ACCOUNT = "ap-northeast-2", "123456789012"
REGISTRY_PASSWORD = f"{ACCOUNT}-auth-token"  # what moto's ECR GetAuthorizationToken hands out
DEREGISTRATION_DELAY = 5
LB_SLICES = int(os.environ.get("TESTBED_LB_SLICES", "8"))
DOCKER = "/usr/bin/docker"  # Debian's client: it still builds with BuildKit (the other has no buildx)
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def say(*args):
    print("testbed:", *args, flush=True)


def sh(*argv, check=True, quiet=False):
    r = subprocess.run(argv, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"testbed: `{' '.join(argv)}` failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r


def path(*parts):
    return os.path.join(STATE, *parts)


# ---- state -------------------------------------------------------------------------------

@contextlib.contextmanager
def locked():
    os.makedirs(STATE, exist_ok=True)
    with open(path(".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def load():
    try:
        with open(path("bed.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def save(state):
    tmp = path("bed.json.tmp")
    with open(tmp, "w") as f:
        json.dump(state, f, indent=2)
    os.replace(tmp, path("bed.json"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(name, argv, env=None, netns=None):
    """Start a long-running process in its own session, log to logs/NAME.log, record its pid."""
    os.makedirs(path("logs"), exist_ok=True)
    os.makedirs(path("pids"), exist_ok=True)
    if netns:
        argv = ["nsenter", f"--net=/var/run/netns/{netns}", "--"] + argv
    log = open(path("logs", f"{name}.log"), "ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    with open(path("pids", f"{name}.pid"), "w") as f:
        f.write(f"{proc.pid} {start_time(proc.pid)}\n")
    return proc


def start_time(pid):
    """When process `pid` started (clock ticks since boot), or None: with its pid it names one
    process, never another that was given the same pid later (pids wrap at 32768 here)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def alive(pid):
    try:
        os.kill(pid, 0)
        return not open(f"/proc/{pid}/stat").read().split(") ")[1].startswith("Z")
    except (ProcessLookupError, FileNotFoundError):
        return False


def recorded_pids():
    out = {}
    if os.path.isdir(path("pids")):
        for name in os.listdir(path("pids")):
            with contextlib.suppress(ValueError, OSError):
                pid, *start = open(path("pids", name)).read().split()
                # A recorded process that has exited is left out: its pid may be another's now,
                # and a signal meant for it would reach that one (a test, say).
                if not start or start[0] == start_time(int(pid)):
                    out[name[:-4]] = int(pid)
    return out


def wait_for(what, check, timeout=30, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"testbed: {what} exited with {proc.returncode}; see {path('logs')}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    raise SystemExit(f"testbed: {what} not ready after {timeout}s; see {path('logs')}")


def http_ok(url, expect=(200,)):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status in expect
    except urllib.error.HTTPError as e:
        return e.code in expect


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, sock_path):
        super().__init__("localhost", timeout=3)
        self.sock_path = sock_path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(3)
        self.sock.connect(self.sock_path)


def docker_ping(sock_path):
    c = UnixHTTP(sock_path)
    try:
        c.request("GET", "/_ping")
        return c.getresponse().status == 200
    finally:
        c.close()


def aws_server_answers(sock_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(sock_path)
        s.sendall(json.dumps({"args": ["--version"], "env": {}}).encode())
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return json.loads(data)["code"] == 0
    finally:
        s.close()


def haproxy(state, command):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(state["haproxy_socket"])
    s.sendall((command + "\n").encode())
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    s.close()
    return out.decode()


def aws(state, service):
    import boto3
    return boto3.client(service, endpoint_url=state["aws_endpoint_url"], region_name=REGION, **{
        "aws_access_key_id": CREDS["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": CREDS["AWS_SECRET_ACCESS_KEY"]})


# ---- network namespaces ------------------------------------------------------------------

def address(index):
    """Host INDEX of the bed's network 10.77.0.0/16 (a long suite adds hundreds of instances)."""
    return f"10.77.{index // 256}.{index % 256}"


def make_host(netns, index):
    """A namespace with address `address(INDEX)` on the bridge, loopback up, default route to the bridge."""
    ip = address(index)
    sh("ip", "netns", "add", netns)
    sh("ip", "link", "add", f"edtbv{index}", "type", "veth", "peer", "name", f"edtbp{index}")
    sh("ip", "link", "set", f"edtbp{index}", "netns", netns)
    sh("ip", "link", "set", f"edtbv{index}", "master", BRIDGE, "up")
    for cmd in (["ip", "link", "set", f"edtbp{index}", "name", "eth0"],
                ["ip", "addr", "add", f"{ip}/16", "dev", "eth0"],
                ["ip", "link", "set", "eth0", "up"],
                ["ip", "link", "set", "lo", "up"],
                ["ip", "route", "add", "default", "via", HOST_IP],
                ["ip", "route", "add", "169.254.169.254/32", "via", HOST_IP]):
        sh("nsenter", f"--net=/var/run/netns/{netns}", "--", *cmd)
    return ip


def start_dockerd(name, netns, base, registry, forward=True):
    os.makedirs(base, exist_ok=True)
    port = registry.rsplit(":", 1)[1]
    if forward:
        spawn(f"registry-forward-{name}", ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr", f"TCP:{HOST_IP}:{port}"], netns=netns)
    exec_root = os.path.join(RUN, name)
    sock = os.path.join(base, "docker.sock")
    proc = spawn(f"dockerd-{name}", [
        "dockerd", f"--host=unix://{sock}", f"--data-root={base}/docker", f"--exec-root={exec_root}",
        f"--pidfile={exec_root}.pid", f"--insecure-registry={registry}", "--log-level=warn",
    ], netns=netns)
    return proc, sock
