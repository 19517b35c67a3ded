"""Benchmarks on the test bed; writes BENCHMARKS.md. Run through scripts/bench.

P1 downtime      failed requests at the load balancer during a 3-instance deploy under steady
                 load, per mode: the proxy alone, the proxy behind target groups, target groups
                 with drain (proxy: false), and the seed's procedure (on each host in turn: docker
                 stop, docker rm, docker pull, docker run), same load, same run.
P2 build cache   build+push after a one-line change ÷ cold build+push, with every local image
                 and build cache wiped before each build (the cache comes only from the registry).
P2b multi-stage  the same on a multi-stage Dockerfile (dependencies, build, slim runtime): through
                 the action (each stage the image copies from pushed as its own cache image),
                 and a bring-your-own build that pushes the dependencies stage the same way.
P3 overhead      wall time of a Run Command as ec2-deploy follows it minus the longest time an
                 instance spent in the script.
P4 scale         1,000 tagged instances: SSM API calls counted at moto, wall time, peak RSS.
P5 start         `ec2-deploy --version` wall time and the binary's size.
P7 modes         the wall time of P1's deploys per mode ÷ the physical limit (pull + start +
                 healthy, per batch of one, summed), same run.
P6 image         the action's image: size by layer and cold build time, from one build by
                 scripts/image (recorded with `bench.py --image $IMAGE_STATE/image.json`).
S1 the suite     what the test suite's own choices cost (the dev profile's debug info, the tests'
                 aws CLI calls): figures measured by hand and recorded in BENCHMARKS.json's
                 "suite" entry with their method, rendered here (`bench.py --markdown-only`).

Every figure is the median of RUNS runs with the min–max; comparisons are ratios within one run.
"""

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid


from bench_support import (
    suite_markdown,
    deploy_under_load,
    physical_limit,
    BIN,
    ENV,
    Load,
    ROOT,
    RUNS,
    action,
    base_inputs,
    bed,
    client,
    fleet,
    log,
    median_range,
    on_instance,
    prebuild,
    registry_login,
    wait_healthy,
    workspace_with_demo,
)


# ---- P1 and P7 -----------------------------------------------------------------------------

def p1_downtime():
    """Failed requests at the load balancer and wall time of a 3-instance deploy, per mode. Two
    fleets one after the other (the seed's procedure and the proxy cannot share instances: both
    want port 3000): the first compares the drain path without the proxy with the seed's
    procedure, the second the proxy alone (by tags, one instance at a time) with the proxy behind
    the target group (batches of one, no drain). Each fleet also measures its physical limit."""
    ecr, elb = client("ecr"), client("elbv2")
    tg = ENV["TESTBED_TARGET_GROUP_ARN"]
    lb = ENV["TESTBED_LB_URL"] + "/version"
    results = {"drain": [], "seed": [], "proxy": [], "proxy-tg": [], "limit": []}
    for family in ("direct", "proxy"):
        suite, ids = fleet(3, lb=True)
        repo = f"bench-p1-{uuid.uuid4().hex[:6]}"
        ecr.create_repository(repositoryName=repo)
        ws = workspace_with_demo()
        tags = [f"r{n}" for n in range(2 * RUNS + 2)]
        prebuild(repo, ws, tags)
        proxy = "true" if family == "proxy" else "false"
        tg_inputs = lambda tag: {**base_inputs(repo, suite, tag), "target-groups": tg, "batch-size": "1", "proxy": proxy,
                                 "proxy-image": ENV["TESTBED_PROXY_IMAGE"]}
        r, _ = action(ws, tg_inputs(tags[0]))
        if r.returncode != 0:
            raise SystemExit(f"bench: first deploy failed:\n{r.stdout}\n{r.stderr}")
        wait_healthy(elb, ids)
        n = 1
        for run in range(RUNS):
            if family == "direct":
                m = deploy_under_load(ws, tg_inputs(tags[n]), lb)
                results["drain"].append(m)
                log(f"P1 run {run + 1} target groups, drain: {m['ok'] + m['failed']} requests, {m['failed']} failed, {m['seconds']:.1f}s")
                n += 1
                # the seed's procedure: on each host in turn, stop, rm, pull, run — still in the load balancer
                image = f"{ENV['TESTBED_REGISTRY']}/{repo}:{tags[n]}"
                load = Load(lb)
                time.sleep(0.5)
                t0 = time.time()
                for iid in ids:
                    script = (f"aws ecr get-login-password --region {ENV['AWS_REGION']} | docker login -u AWS --password-stdin {ENV['TESTBED_REGISTRY']} >/dev/null; "
                              f"docker stop {repo} >/dev/null; docker rm {repo} >/dev/null; docker pull -q {image} >/dev/null; "
                              f"docker run -d -p 3000:3000 --name {repo} --restart always {image} >/dev/null")
                    on_instance(iid, "bash", "-c", script)
                secs = time.time() - t0
                time.sleep(0.5)
                ok, failed = load.stop()
                results["seed"].append({"ok": ok, "failed": failed, "seconds": secs})
                log(f"P1 run {run + 1} seed procedure: {ok + failed} requests, {failed} failed, {secs:.1f}s")
            else:
                by_tags = {**tg_inputs(tags[n]), "max-concurrency": "1"}
                del by_tags["target-groups"], by_tags["batch-size"]
                m = deploy_under_load(ws, by_tags, lb)
                results["proxy"].append(m)
                log(f"P1 run {run + 1} proxy, by tags one at a time: {m['ok'] + m['failed']} requests, {m['failed']} failed, {m['seconds']:.1f}s")
                n += 1
                m = deploy_under_load(ws, tg_inputs(tags[n]), lb)
                results["proxy-tg"].append(m)
                log(f"P1 run {run + 1} proxy behind target groups: {m['ok'] + m['failed']} requests, {m['failed']} failed, {m['seconds']:.1f}s")
            n += 1
            wait_healthy(elb, ids)
        limit = physical_limit(ids, f"{ENV['TESTBED_REGISTRY']}/{repo}:{tags[n]}")
        results["limit"].append(limit)
        log(f"P7 physical limit ({family} fleet): {limit:.2f}s")
        bed("remove-instance", *ids)
        shutil.rmtree(ws, ignore_errors=True)
    return results


# ---- P2 ----------------------------------------------------------------------------------

BENCH_DOCKERFILE = """# A build with an expensive layer before the application's files, as real services have
# (dependencies compiled before the source is copied).
FROM {base}
RUN i=0; while [ $i -lt {loops} ]; do i=$((i+1)); done; echo "$i" > /deps-built
COPY app.txt /app.txt
COPY demo-app /demo-app
ENTRYPOINT ["/demo-app"]
"""


BENCH_MULTISTAGE = """# A typical multi-stage build: dependencies, then the build from the source, then a slim
# runtime stage that copies only the result.
FROM {base} AS deps
RUN i=0; while [ $i -lt {loops} ]; do i=$((i+1)); done; echo "$i" > /deps-built
FROM deps AS build
COPY app.txt /src/app.txt
RUN cat /deps-built /src/app.txt > /app.txt
FROM {base} AS runtime
COPY --from=build /app.txt /app.txt
COPY demo-app /demo-app
ENTRYPOINT ["/demo-app"]
"""


def runner_docker(*args, **kw):
    env = {**os.environ, "DOCKER_HOST": ENV["DOCKER_HOST"]}
    return subprocess.run([ENV["TESTBED_DOCKER"], *args], env=env, capture_output=True, text=True, **kw)


def fresh_builder_state():
    """No local image, no build cache: only the registry can supply a cache (and the base)."""
    runner_docker("system", "prune", "--all", "--force")
    runner_docker("builder", "prune", "--all", "--force")


def push_base_image():
    """A small base with a shell (busybox), in the registry like any base image, used by digest so
    that it is the same image every build (a local import would be a new image each time)."""
    root = tempfile.mkdtemp()
    os.makedirs(os.path.join(root, "bin"))
    shutil.copy("/bin/busybox", os.path.join(root, "bin", "busybox"))
    for name in ("sh", "echo"):
        os.symlink("busybox", os.path.join(root, "bin", name))
    tar = subprocess.run(["tar", "-C", root, "-c", "."], capture_output=True, check=True).stdout
    shutil.rmtree(root)
    ref = f"{ENV['TESTBED_REGISTRY']}/bench-base:1"
    denv = registry_login()
    docker = ENV["TESTBED_DOCKER"]
    subprocess.run([docker, "import", "-", ref], input=tar, env=denv, check=True, capture_output=True)
    subprocess.run([docker, "push", ref], env=denv, check=True, capture_output=True)
    digests = json.loads(subprocess.run([docker, "image", "inspect", "--format", "{{json .RepoDigests}}", ref], env=denv, check=True, capture_output=True, text=True).stdout)
    return digests[0]


def p2_build_cache():
    ecr = client("ecr")
    suite, ids = fleet(1, lb=False)
    repo = f"bench-p2-{uuid.uuid4().hex[:6]}"
    ecr.create_repository(repositoryName=repo)
    ws = workspace_with_demo()
    base = push_base_image()
    with open(os.path.join(ws, "Dockerfile"), "w") as f:
        f.write(BENCH_DOCKERFILE.replace("{loops}", os.environ.get("BENCH_LOOPS", "15000000")).replace("{base}", base))
    cold, warm = [], []
    built = re.compile(r"Built and pushed \S+ in ([0-9.]+)s")
    for run in range(RUNS):
        times = []
        for kind in ("cold", "warm"):
            with open(os.path.join(ws, "app.txt"), "w") as f:
                f.write(f"{run}-{kind}-{uuid.uuid4()}\n")  # the one-line change
            fresh_builder_state()
            if kind == "cold":
                # a new repository: nothing in the registry to take a cache from
                repo = f"bench-p2-{uuid.uuid4().hex[:6]}"
                ecr.create_repository(repositoryName=repo)
            tag = f"{kind}-{run}"
            # One container name for every repository of the benchmark: each run replaces the last.
            r, _ = action(ws, {**base_inputs(repo, suite, tag), "build-args": "", "health-check-path": "", "container-name": "bench-p2"})
            m = built.search(r.stdout)
            if r.returncode != 0 or not m:
                raise SystemExit(f"bench: P2 {kind} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
            times.append(float(m.group(1)))
            time.sleep(1)  # the push notification reaches ECR before the next run looks for a cache
        cold.append(times[0])
        warm.append(times[1])
        log(f"P2 run {run + 1}: cold {times[0]:.1f}s, warm {times[1]:.1f}s, ratio {times[1] / times[0]:.2f}")
    bed("remove-instance", *ids)
    shutil.rmtree(ws, ignore_errors=True)
    return cold, warm


def byo_build(ws, repo, tag):
    """A bring-your-own build (plain docker driver, as on GitHub's runners): the dependencies
    stage built and pushed as its own image with inline cache, then the image with both as cache.
    Returns its seconds (builds and pushes, login excluded)."""
    denv = registry_login()
    docker, registry = ENV["TESTBED_DOCKER"], ENV["TESTBED_REGISTRY"]
    deps, image = f"{registry}/{repo}:cache-deps", f"{registry}/{repo}:{tag}"
    inline = ["--build-arg", "BUILDKIT_INLINE_CACHE=1"]
    started = time.monotonic()
    for cmd in (
        [docker, "build", "-q", *inline, "--target", "deps", "--cache-from", deps, "-t", deps, ws],
        [docker, "push", deps],
        [docker, "build", "-q", *inline, "--cache-from", deps, "--cache-from", f"{registry}/{repo}:latest", "-t", image, ws],
        [docker, "tag", image, f"{registry}/{repo}:latest"],
        [docker, "push", image],
        [docker, "push", f"{registry}/{repo}:latest"],
    ):
        r = subprocess.run(cmd, env=denv, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"bench: P2b {' '.join(cmd[1:3])} failed:\n{r.stderr[-3000:]}")
    seconds = time.monotonic() - started
    shutil.rmtree(denv["DOCKER_CONFIG"], ignore_errors=True)
    return seconds


def p2b_multi_stage():
    """P2's method on BENCH_MULTISTAGE: cold then warm (a one-line change of the source) through
    the action, and the same two through byo_build, each pair in a new repository."""
    ecr = client("ecr")
    suite, ids = fleet(1, lb=False)
    ws = workspace_with_demo()
    base = push_base_image()
    with open(os.path.join(ws, "Dockerfile"), "w") as f:
        f.write(BENCH_MULTISTAGE.replace("{loops}", os.environ.get("BENCH_LOOPS", "15000000")).replace("{base}", base))
    built = re.compile(r"Built and pushed \S+ in ([0-9.]+)s")
    cache_push = re.compile(r"Pushed the layer cache of \d+ stage\(s\) in ([0-9.]+)s")
    rows = {"action": ([], []), "byo": ([], []), "action_cache_push": ([], [])}
    for run in range(RUNS):
        for how in ("action", "byo"):
            repo = f"bench-p2b-{uuid.uuid4().hex[:6]}"
            ecr.create_repository(repositoryName=repo)
            for n, kind in enumerate(("cold", "warm")):
                with open(os.path.join(ws, "app.txt"), "w") as f:
                    f.write(f"{run}-{how}-{kind}-{uuid.uuid4()}\n")  # the one-line change
                fresh_builder_state()
                tag = f"{kind}-{run}"
                if how == "action":
                    r, _ = action(ws, {**base_inputs(repo, suite, tag), "build-args": "", "health-check-path": "", "container-name": "bench-p2b"})
                    m = built.search(r.stdout)
                    if r.returncode != 0 or not m:
                        raise SystemExit(f"bench: P2b {kind} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
                    seconds = float(m.group(1))
                    pushed = cache_push.search(r.stdout)
                    if not pushed:
                        raise SystemExit(f"bench: P2b {kind}: the action pushed no stage's layer cache:\n{r.stdout[-3000:]}")
                    rows["action_cache_push"][n].append(float(pushed.group(1)))
                else:
                    seconds = byo_build(ws, repo, tag)
                rows[how][n].append(seconds)
                time.sleep(1)  # the push notification reaches ECR before the next run looks for a cache
            cold, warm = rows[how][0][-1], rows[how][1][-1]
            log(f"P2b run {run + 1} {how}: cold {cold:.1f}s, warm {warm:.1f}s, ratio {warm / cold:.2f}")
    bed("remove-instance", *ids)
    shutil.rmtree(ws, ignore_errors=True)
    return rows


# ---- P3 ----------------------------------------------------------------------------------

def p3_overhead():
    ecr, ssm = client("ecr"), client("ssm")
    suite, ids = fleet(3, lb=False)
    repo = f"bench-p3-{uuid.uuid4().hex[:6]}"
    ecr.create_repository(repositoryName=repo)
    ws = workspace_with_demo()
    done = re.compile(r"command (\S+) Success after ([0-9.]+)s")
    rows = []
    for run in range(RUNS):
        r, _ = action(ws, {**base_inputs(repo, suite, f"p3-{run}"), "max-concurrency": "100%"})
        m = done.search(r.stdout)
        if r.returncode != 0 or not m:
            raise SystemExit(f"bench: P3 failed:\n{r.stdout[-3000:]}")
        cid, followed = m.group(1), float(m.group(2))
        longest = 0.0
        for iid in ids:
            inv = ssm.get_command_invocation(CommandId=cid, InstanceId=iid)
            longest = max(longest, float(inv["ExecutionElapsedTime"][2:-1]))
        rows.append((followed, longest, followed - longest))
        log(f"P3 run {run + 1}: followed {followed:.2f}s, longest instance {longest:.2f}s, overhead {followed - longest:.2f}s")
    bed("remove-instance", *ids)
    shutil.rmtree(ws, ignore_errors=True)
    return rows


# ---- P4 ----------------------------------------------------------------------------------

def calls(reset=False):
    with urllib.request.urlopen(ENV["TESTBED_HOOK_URL"] + ("/reset-calls" if reset else "/calls")) as r:
        return json.loads(r.read())


def p4_scale(n=1000):
    ec2, ecr = client("ec2"), client("ecr")
    suite = f"scale-{uuid.uuid4().hex[:6]}"
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    ids = []
    for _ in range(n // 500):
        out = ec2.run_instances(ImageId=ami, MinCount=500, MaxCount=500, InstanceType="t3.micro", TagSpecifications=[{
            "ResourceType": "instance", "Tags": [{"Key": "Suite", "Value": suite}, {"Key": "Role", "Value": "web"},
                                                 {"Key": "testbed:agent", "Value": "local"}]}])
        ids += [i["InstanceId"] for i in out["Instances"]]
    repo = f"bench-p4-{uuid.uuid4().hex[:6]}"
    ecr.create_repository(repositoryName=repo)
    ws = workspace_with_demo()
    # the image exists before the timed runs: P4 measures the fleet side
    prebuild(repo, ws, ["p4-prebuilt"])
    rows = []
    for run in range(RUNS):
        calls(reset=True)
        r, secs = action(ws, {**base_inputs(repo, suite, "p4-prebuilt"), "max-concurrency": "50%"})
        counted = calls()
        ssm_calls = sum(v for k, v in counted.items() if k not in ("RegisterTargets", "DeregisterTargets", "DescribeTargetHealth"))
        rows.append({"seconds": secs, "calls": ssm_calls, "detail": counted, "code": r.returncode})
        log(f"P4 run {run + 1}: exit {r.returncode}, {secs:.1f}s, SSM calls {ssm_calls} {counted}")
    # Peak memory: the same deploy once more under /usr/bin/time.
    env_inputs = {**base_inputs(repo, suite, "p4-prebuilt"), "max-concurrency": "50%"}
    env = {"PATH": os.environ["PATH"], "AWS_ENDPOINT_URL": ENV["AWS_ENDPOINT_URL"], "AWS_REGION": ENV["AWS_REGION"],
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "DOCKER_HOST": ENV["DOCKER_HOST"],
           "EC2_DEPLOY_DOCKER": ENV["TESTBED_DOCKER"], "GITHUB_WORKSPACE": ws, "GITHUB_SHA": "0" * 40}
    env.update({f"INPUT_{k.upper()}": v for k, v in env_inputs.items()})
    rss_values = []
    for _ in range(RUNS):
        t = subprocess.run(["/usr/bin/time", "-f", "%M", BIN, "action"], cwd=ws, env=env, capture_output=True, text=True)
        rss_values.append(int(t.stderr.strip().splitlines()[-1]) / 1024)
    ec2.terminate_instances(InstanceIds=ids)
    shutil.rmtree(ws, ignore_errors=True)
    return rows, rss_values, n


# ---- P5 ----------------------------------------------------------------------------------

def p5_start():
    samples = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        for _ in range(100):
            subprocess.run([BIN, "--version"], capture_output=True, check=True)
        samples.append((time.perf_counter() - t0) / 100 * 1000)
    return samples, os.path.getsize(BIN) / 1e6


# ---- report ------------------------------------------------------------------------------

def main():
    only = set(sys.argv[1:]) or {"p1", "p2", "p2b", "p3", "p4", "p5"}
    # A run updates the figures it measures and keeps the others (P6 comes from scripts/image).
    results = {}
    previous = os.path.join(ROOT, "BENCHMARKS.json")
    if os.path.exists(previous):
        with open(previous) as f:
            results = {k: v for k, v in json.load(f).items() if k not in only}
    for name, measure in (("p5", p5_start), ("p3", p3_overhead), ("p1", p1_downtime), ("p2", p2_build_cache), ("p2b", p2b_multi_stage), ("p4", p4_scale)):
        if name not in only:
            continue
        results[name] = measure()
        results.setdefault("machines", {})[name] = this_machine()
        # Saved after each benchmark, so a later failure does not lose the earlier figures.
        with open(os.path.join(ROOT, "BENCHMARKS.json"), "w") as f:
            json.dump(results, f, indent=1, default=str)
        write_markdown(results)


def this_machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    return (f"{os.cpu_count()} cores ({cpu}), {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, "
            f"{platform.system()} {platform.release()}; {time.strftime('%Y-%m-%d')}")


def write_markdown(results):
    # Runs of some benchmarks keep the others' figures: each is named with the machine it ran on.
    by_machine = {}
    for name, machine in ((n, m) for n, m in sorted(results.get("machines", {}).items()) if n in results):
        by_machine.setdefault(machine, []).append(name[0].upper() + name[1:])
    machines = [f"Machine ({', '.join(names)}): {machine}." for machine, names in by_machine.items()] or [f"Machine: {this_machine()}."]
    out = [
        "# Benchmarks",
        "",
        "Measured by `scripts/bench` on the local test bed (see `testbed/`): moto with real Run Command, simulated",
        "instances as network namespaces with their own Docker engine, haproxy following the ELBv2 target group.",
        *machines,
        f"Each figure is the median of {RUNS} runs with the min–max in brackets; comparisons are ratios within one run.",
        "Method details are in `testbed/bench.py`'s docstring and below each table.",
        "",
    ]
    if "p1" in results and isinstance(results["p1"], dict):
        p1 = results["p1"]
        cells = lambda rows: (f"{median_range([r['ok'] + r['failed'] for r in rows], '{:.0f}')} | {median_range([r['failed'] for r in rows], '{:.0f}')} | "
                              f"{median_range([100 * r['failed'] / (r['ok'] + r['failed']) for r in rows])} | {median_range([r['seconds'] for r in rows], '{:.1f}')}")
        modes = [
            ("proxy", "ec2-deploy, proxy on each instance, by tags (`max-concurrency: 1`), the load balancer untouched"),
            ("proxy-tg", "ec2-deploy, proxy + `target-groups` (canary + batches of 1, no drain)"),
            ("drain", "ec2-deploy, `proxy: false` + `target-groups` (canary + batches of 1: drain → swap → healthy)"),
            ("seed", "the seed's procedure (each host in turn: `docker stop`, `rm`, `pull`, `run`, still in the load balancer)"),
        ]
        out += [
            "## P1 — downtime during a 3-instance deploy under steady load, per mode",
            "",
            "| Procedure | Requests | Failed requests | Failed % | Deploy time (s) |",
            "|---|---|---|---|---|",
        ] + [f"| {label} | {cells(p1[k])} |" for k, label in modes] + [
            "",
            "Load: 3 threads sending `GET /version` through haproxy (one connection per request, TCP_NODELAY) from",
            "0.5 s before until 0.5 s after each deploy. A request fails on a non-200 answer, a refused or reset",
            "connection or a 5 s timeout. haproxy checks every 500 ms (fall 2, rise 2) and does not retry failed",
            "requests (`retries 0`), as an ALB does not. All procedures deploy prebuilt images. Two fleets of 3, one",
            "after the other in the same run (the seed's procedure and the proxy both want the instance's port):",
            "the first alternates the drain path and the seed's procedure, the second the proxy alone and the proxy",
            "behind the target group. Goal for ec2-deploy: 0 failed requests in every mode.", "",
            "## P7 — wall time per mode against the physical limit",
            "",
            "| Mode | Deploy time (s) | Physical limit (s) | Time ÷ limit |",
            "|---|---|---|---|",
        ]
        limit = statistics.median(p1["limit"])
        for k, label in modes[:3]:
            secs = [r["seconds"] for r in p1[k]]
            out.append(f"| {label} | {median_range(secs, '{:.1f}')} | {limit:.1f} | {median_range([t / limit for t in secs])} |")
        out += [
            "",
            "The physical limit is the work itself, one instance after another as three batches of one: on each",
            "instance `docker pull` of a release it has not pulled, `docker run`, then `/health` polled every 10 ms",
            f"until 200 — summed over the 3 instances (median of the fleets: {', '.join(f'{x:.2f}' for x in p1['limit'])} s).",
            "Deploy time is the whole `ec2-deploy action` run: plan, lock, the record, the pull on every instance before the",
            "first batch (one Run Command), Run Command delivery and polling (the poll backs off from 0.5 s), and for target",
            "groups each batch's wait for haproxy to see it healthy (two checks 500 ms apart) — and, with `proxy: false`, each",
            "batch's drain (here at most the group's 5 s deregistration delay; AWS's default is 300 s, which the proxy modes",
            "never wait). Not reached: at most 3× the limit, and by tags faster than the seed's procedure. Each instance's",
            "script costs about 1 s on an idle bed (the summary's Time per phase table says where), each command a delivery.", "",
        ]
    if "p2" in results:
        cold, warm = results["p2"]
        ratios = [w / c for c, w in zip(cold, warm)]
        out += [
            "## P2 — build cache from the registry",
            "",
            "| Build + push | Seconds |",
            "|---|---|",
            f"| cold (new repository, no cache anywhere) | {median_range(cold, '{:.1f}')} |",
            f"| after a one-line change, cache only from the registry | {median_range(warm, '{:.1f}')} |",
            f"| **ratio warm ÷ cold** | **{median_range(ratios)}** |",
            "",
            "Before every build the runner's Docker engine loses every image and all build cache (`docker system",
            "prune --all`, `docker builder prune --all`); the base image (busybox) comes from the registry by digest,",
            "as any base does. The Dockerfile has an expensive `RUN` layer before `COPY app.txt`, and the change is",
            "one line of `app.txt`. Time is ec2-deploy's own \"Built and pushed … in\" (login, build, push). The seed ran",
            "with its layer cache disabled: its ratio is 1.0 by construction. Goal: ≤ 0.3.",
            "",
        ]
    if "p2b" in results:
        p2b = results["p2b"]
        ratio = lambda how: median_range([w / c for c, w in zip(*p2b[how])])
        out += [
            "## P2b — build cache on a multi-stage Dockerfile",
            "",
            "| Build + push | Cold (s) | After a one-line change (s) | Ratio warm ÷ cold |",
            "|---|---|---|---|",
            f"| the action (`build: true`: the stage the image copies from pushed as `:ec2-deploy-cache-build`, inline cache) | {median_range(p2b['action'][0], '{:.1f}')} | {median_range(p2b['action'][1], '{:.1f}')} | **{ratio('action')}** |",
            f"| bring your own build: the dependencies stage pushed as its own cache image, then `image-digest` | {median_range(p2b['byo'][0], '{:.1f}')} | {median_range(p2b['byo'][1], '{:.1f}')} | **{ratio('byo')}** |",
            "",
            f"Pushing the stage's cache image took {median_range(p2b['action_cache_push'][0], '{:.1f}')} s of the action's cold build: what caching the stage costs it. The stage's",
            "layers are small here (its step costs CPU, not bytes); a stage of hundreds of MB uploads them once per change.",
            "",
            "The Dockerfile (`BENCH_MULTISTAGE` in `testbed/bench.py`): a dependencies stage with P2's expensive `RUN`,",
            "a build stage from it that copies the source (`app.txt`) and builds from it, a runtime stage from the base",
            "that copies only the result. Otherwise P2's method (no local image or build cache before any build; each",
            "cold build in a new repository). The runtime stage's image holds nothing of the stages it copies from, so",
            "the action builds the one it copies from (`build`, with `deps` as its parent) with its own inline cache,",
            "pushes it as `:ec2-deploy-cache-build` and reads it back with `--cache-from`. The second row is the same",
            "by hand (`--target deps` pushed as `:cache-deps`, then the image). With a BuildKit container builder,",
            "`cache-to: type=registry,mode=max` keeps every stage's layers in one cache; the test bed cannot run one",
            "(it needs the moby/buildkit image), so that path is not measured here.",
            "",
        ]
    if "p3" in results:
        rows = results["p3"]
        out += [
            "## P3 — orchestration overhead",
            "",
            "| Command followed (s) | Longest instance in the script (s) | Overhead (s) |",
            "|---|---|---|",
            f"| {median_range([r[0] for r in rows])} | {median_range([r[1] for r in rows])} | {median_range([r[2] for r in rows])} |",
            "",
            "A 3-instance deploy by tags with `max-concurrency: 100%` of an existing image. \"Followed\" is from",
            "SendCommand to ec2-deploy seeing every invocation finished; the instance time is SSM's",
            "`ExecutionElapsedTime`. The poll interval starts at 1 s and backs off to 5 s while nothing",
            "changes. Goal: about one poll interval.",
            "",
        ]
    if "p4" in results:
        rows, rss, n = results["p4"]
        out += [
            f"## P4 — {n:,} instances in one deploy",
            "",
            "| Wall time (s) | SSM API calls | Peak RSS of ec2-deploy (MB) |",
            "|---|---|---|",
            f"| {median_range([r['seconds'] for r in rows], '{:.1f}')} | {median_range([r['calls'] for r in rows], '{:.0f}')} | {median_range(rss, '{:.1f}')} |",
            "",
            f"Calls of one run, by operation: `{json.dumps(rows[-1]['detail'], sort_keys=True)}`.",
            "",
            f"{n:,} moto instances tagged for the deploy, with a simulated agent and no host (the bed runs no",
            "command on them: each invocation succeeds after 50–200 ms). Deploy by tags, `max-concurrency: 50%`,",
            "an image already in the registry. Calls are counted at moto for the operations the bed implements",
            "(plan, send, follow); the release record and the deploy lock add 5 more (GetParameterHistory, PutParameter",
            "for the record; PutParameter, GetParameter, DeleteParameter for the lock), and one PutParameter per 30 s",
            "while the lock is held. Calls grow with pages of 50 instances, not with polls × instances. The wall",
            "time is mostly the emulator: each DescribeInstanceInformation page walks all 1,000 moto instances.",
            "Peak RSS from `/usr/bin/time -f %M` on separate runs of the same deploy. Goals: < 500 calls, < 50 MB.",
            "",
        ]
    if "p5" in results:
        samples, size = results["p5"]
        out += [
            "## P5 — start time and size",
            "",
            "| `ec2-deploy --version` (ms) | Release binary (MB) |",
            "|---|---|",
            f"| {median_range(samples)} | {size:.1f} |",
            "",
            "Mean of 100 sequential runs per sample. Goals: ≤ 5 ms, ≤ 25 MB.",
            "",
        ]
    if "p6" in results:
        img = results["p6"]
        mb = lambda n: f"{n / 1e6:.1f}"
        # The docker packages: installed by apt (before 2026-12-02), unpacked and copied in since.
        cli = sum(l["bytes"] for l in img["layers"] if "apt-get install" in l["created_by"] or "COPY /rootfs/" in l["created_by"])
        binary = sum(l["bytes"] for l in img["layers"] if "ec2-deploy" in l["created_by"] and "COPY" in l["created_by"])
        out += [
            "## P6 — the action's image",
            "",
            "| Image (MB) | Gzipped (MB) | Debian 13 slim base (MB) | docker CLI + buildx + CA certificates (MB) | ec2-deploy, static (MB) | Build (s) |",
            "|---|---|---|---|---|---|",
            f"| {mb(img['bytes'])} | {mb(img['gzip_bytes'])} | {mb(img['base_bytes'])} | {mb(cli)} | {mb(binary)} | {img['build_seconds']} |",
            "",
            "Measured by `scripts/bench p6` (a cold `scripts/image`): the `Dockerfile` built as the",
            "release workflow builds it, against bases made here with debootstrap (no registry can be reached):",
            "Debian 13 minbase trimmed like the official `debian:trixie-slim`, and for the build stage the same with",
            f"gcc and Rust {img['rust']}. Sizes are uncompressed, from `docker image inspect` and `docker history`,",
            "except \"gzipped\" (`docker save | gzip -6 | wc -c`: about what a runner downloads at job set-up); the",
            "build time is one cold build on 2 cores (no layer cache). Most of the image is Debian's `docker-buildx`",
            "(~64 MB) and `docker-cli` (~30 MB): the action builds with BuildKit through them. The figures are the",
            "linux/amd64 image's; the linux/arm64 one is built by `scripts/release` and not measured here.",
            "",
        ]
    out += suite_markdown(results.get("suite"))
    with open(os.path.join(ROOT, "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(out))
    log("wrote BENCHMARKS.md")


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown-only"]:
        with open(os.path.join(ROOT, "BENCHMARKS.json")) as f:
            write_markdown(json.load(f))
    elif sys.argv[1:2] == ["--image"] and len(sys.argv) == 3:
        # Records the image figures scripts/image wrote (its $IMAGE_STATE/image.json).
        with open(os.path.join(ROOT, "BENCHMARKS.json")) as f:
            results = json.load(f)
        with open(sys.argv[2]) as f:
            results["p6"] = json.load(f)
        with open(os.path.join(ROOT, "BENCHMARKS.json"), "w") as f:
            json.dump(results, f, indent=1, default=str)
        write_markdown(results)
    else:
        main()
