"""Self-test of the test bed, driven only through boto3 and the aws CLI (never our Rust code).

If the bed lies, every other test lies with it: these check that Run Command really runs, fails,
stops and times out as SSM does, that images really travel from the runner to an instance, and
that the load balancer really follows the target group. Needs `scripts/testbed up` and the env
file in TESTBED_ENV (scripts/test sets both up).
"""

import base64
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import boto3
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTBED = os.path.join(ROOT, "scripts", "testbed")


def load_env():
    path = os.environ.get("TESTBED_ENV", "/var/tmp/ec2-deploy-testbed/env")
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                k, v = line.split("=", 1)
                env[k] = v
    return env


ENV = load_env()
os.environ.update({k: v for k, v in ENV.items() if k.startswith("AWS_") or k == "TESTBED_STATE"})


def client(service):
    return boto3.client(service, endpoint_url=ENV["AWS_ENDPOINT_URL"], region_name=ENV["AWS_REGION"])


ssm = client("ssm")
elb = client("elbv2")


def bed(*args):
    r = subprocess.run([TESTBED, *args], capture_output=True, text=True, check=True)
    return r.stdout.split()


def on_instance(iid, *cmd):
    return subprocess.run([ENV["TESTBED_EXEC"], iid, *cmd], capture_output=True, text=True)


@pytest.fixture
def fleet(request):
    """Fresh instances with a tag value of their own, terminated after the test."""
    def make(n, lb=False):
        tag = f"selftest-{uuid.uuid4().hex[:8]}"
        ids = bed("add-instance", "--count", str(n), "--tag", f"Suite={tag}", *([] if lb else ["--no-lb"]))
        request.addfinalizer(lambda: bed("remove-instance", *ids))
        return tag, ids
    return make


def send(script, **kw):
    return ssm.send_command(DocumentName="AWS-RunShellScript", Parameters={"commands": [script]}, **kw)["Command"]["CommandId"]


def wait_command(cid, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        cmd = ssm.list_commands(CommandId=cid)["Commands"][0]
        if cmd["Status"] in ("Success", "Failed", "Cancelled", "TimedOut"):
            return cmd
        time.sleep(0.3)
    raise AssertionError(f"command {cid} not finished after {timeout}s")


def invocations(cid):
    out, token = [], None
    while True:
        kw = {"NextToken": token} if token else {}
        page = ssm.list_command_invocations(CommandId=cid, Details=True, **kw)
        out += page["CommandInvocations"]
        token = page.get("NextToken")
        if not token:
            return {i["InstanceId"]: i for i in out}


def test_send_command_by_tag_runs_on_each_instance_with_its_own_output(fleet):
    tag, ids = fleet(3)
    cid = send('echo "id=$AWS_SSM_INSTANCE_ID region=$AWS_SSM_REGION_NAME"; hostname -I',
               Targets=[{"Key": "tag:Suite", "Values": [tag]}])
    cmd = wait_command(cid)
    assert (cmd["Status"], cmd["TargetCount"], cmd["CompletedCount"], cmd["ErrorCount"]) == ("Success", 3, 3, 0)
    invs = invocations(cid)
    assert sorted(invs) == sorted(ids)
    ips = {i["InstanceId"]: i["IPAddress"] for i in ssm.describe_instance_information(
        Filters=[{"Key": "tag:Suite", "Values": [tag]}])["InstanceInformationList"]}
    for iid, inv in invs.items():
        plugin = inv["CommandPlugins"][0]
        assert (inv["Status"], plugin["ResponseCode"]) == ("Success", 0)
        assert f"id={iid} region={ENV['AWS_REGION']}" in plugin["Output"]
        assert ips[iid] in plugin["Output"]
        full = ssm.get_command_invocation(CommandId=cid, InstanceId=iid)
        assert full["StandardOutputContent"].startswith(f"id={iid}")


def test_tags_and_across_keys_or_across_values(fleet):
    tag, ids = fleet(2)
    cid = send("true", Targets=[{"Key": "tag:Suite", "Values": [tag, "no-such-value"]},
                                {"Key": "tag:Name", "Values": ["no-such-name"]}])
    assert wait_command(cid)["TargetCount"] == 0
    cid = send("true", Targets=[{"Key": "tag:Suite", "Values": ["other", tag]}])
    assert sorted(invocations(cid)) == sorted(ids)


def test_failing_script_reports_failed_with_exit_code_and_stderr(fleet):
    _, (iid,) = fleet(1)
    cid = send("echo partial; echo 'it broke' >&2; exit 7", InstanceIds=[iid])
    assert wait_command(cid)["Status"] == "Failed"
    inv = ssm.get_command_invocation(CommandId=cid, InstanceId=iid)
    assert (inv["Status"], inv["StatusDetails"], inv["ResponseCode"]) == ("Failed", "Failed", 7)
    assert inv["StandardOutputContent"] == "partial\n"
    assert "it broke" in inv["StandardErrorContent"]


def test_unknown_instance_id_is_rejected():
    with pytest.raises(ssm.exceptions.InvalidInstanceId):
        send("true", InstanceIds=["i-00000000000000000"])


def test_max_errors_stops_sending_and_terminates_the_rest(fleet):
    _, ids = fleet(3)
    cid = send("exit 1", InstanceIds=ids, MaxConcurrency="1", MaxErrors="0")
    cmd = wait_command(cid)
    assert (cmd["Status"], cmd["ErrorCount"], cmd["CompletedCount"]) == ("Failed", 1, 3)
    details = sorted(i["StatusDetails"] for i in invocations(cid).values())
    assert details == ["Failed", "Terminated", "Terminated"]


def test_max_concurrency_runs_one_at_a_time(fleet):
    _, ids = fleet(3)
    # Each invocation records when it ran; with MaxConcurrency=1 the intervals must not overlap.
    cid = send("date +%s.%N; sleep 0.5; date +%s.%N", InstanceIds=ids, MaxConcurrency="1")
    assert wait_command(cid)["Status"] == "Success"
    spans = sorted(tuple(map(float, i["CommandPlugins"][0]["Output"].split())) for i in invocations(cid).values())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans


def test_percent_max_errors_lets_the_command_finish(fleet):
    _, ids = fleet(3)
    script = f'[ "$AWS_SSM_INSTANCE_ID" = "{ids[0]}" ] && exit 3; exit 0'
    cid = send(script, InstanceIds=ids, MaxConcurrency="100%", MaxErrors="50%")
    cmd = wait_command(cid)
    # 1 error allowed (50% of 3, rounded down): everything ran, the command is Failed/Incomplete.
    assert (cmd["Status"], cmd["StatusDetails"], cmd["ErrorCount"], cmd["CompletedCount"]) == ("Failed", "Incomplete", 1, 3)


def test_cancel_stops_a_running_script(fleet):
    _, (iid,) = fleet(1)
    marker = f"{60 + (uuid.uuid4().int % 1000) / 1000:.3f}"
    cid = send(f"sleep {marker}", InstanceIds=[iid])
    deadline = time.time() + 10
    while ssm.get_command_invocation(CommandId=cid, InstanceId=iid)["Status"] != "InProgress":
        assert time.time() < deadline
        time.sleep(0.1)
    ssm.cancel_command(CommandId=cid)
    cmd = wait_command(cid, timeout=15)
    assert cmd["Status"] == "Cancelled"
    assert ssm.get_command_invocation(CommandId=cid, InstanceId=iid)["Status"] == "Cancelled"
    ps = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True)
    assert ps.stdout == "", "the cancelled script is still running"


def test_execution_timeout_kills_the_script(fleet):
    _, (iid,) = fleet(1)
    cid = ssm.send_command(DocumentName="AWS-RunShellScript", InstanceIds=[iid],
                           Parameters={"commands": ["sleep 30"], "executionTimeout": ["1"]})["Command"]["CommandId"]
    cmd = wait_command(cid, timeout=20)
    inv = invocations(cid)[iid]
    assert (cmd["Status"], inv["Status"], inv["StatusDetails"]) == ("TimedOut", "TimedOut", "Execution Timed Out")


def test_offline_instance_never_runs_the_script(fleet):
    tag, (iid,) = fleet(1)
    bed("offline", iid)
    info = ssm.describe_instance_information(Filters=[{"Key": "tag:Suite", "Values": [tag]}])
    assert [i["PingStatus"] for i in info["InstanceInformationList"]] == ["ConnectionLost"]
    cid = send("touch /var/lib/ec2-deploy/ran", InstanceIds=[iid], TimeoutSeconds=30)
    cmd = wait_command(cid, timeout=45)
    inv = invocations(cid)[iid]
    assert (inv["Status"], inv["StatusDetails"]) == ("TimedOut", "Delivery Timed Out")
    assert (cmd["ErrorCount"], cmd["DeliveryTimedOutCount"]) == (0, 1)
    assert on_instance(iid, "test", "-e", "/var/lib/ec2-deploy/ran").returncode == 1
    bed("online", iid)
    cid = send("touch /var/lib/ec2-deploy/ran", InstanceIds=[iid])
    assert wait_command(cid)["Status"] == "Success"
    assert on_instance(iid, "test", "-e", "/var/lib/ec2-deploy/ran").returncode == 0


def http_get(url):
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None, ""


def docker(*args, **kw):
    env = {**os.environ, "DOCKER_HOST": ENV["DOCKER_HOST"], "DOCKER_BUILDKIT": "1", **kw.pop("env", {})}
    return subprocess.run([ENV["TESTBED_DOCKER"], *args], capture_output=True, text=True, env=env, check=True, **kw)


def target_health(iid):
    out = elb.describe_target_health(TargetGroupArn=ENV["TESTBED_TARGET_GROUP_ARN"], Targets=[{"Id": iid}])
    return out["TargetHealthDescriptions"][0]["TargetHealth"]["State"]


def wait_health(iid, want, timeout=30):
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        state = target_health(iid)
        if not seen or seen[-1] != state:
            seen.append(state)
        if state == want:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"{iid}: target health never became {want}: {seen}")


def test_image_from_the_runner_runs_on_an_instance_behind_the_load_balancer(fleet, tmp_path):
    context = os.environ.get("DEMO_CONTEXT")
    if not context:
        pytest.fail("DEMO_CONTEXT is not set: scripts/test builds the demo image context")
    _, (iid,) = fleet(1, lb=True)
    ecr = client("ecr")
    repo = f"selftest-{uuid.uuid4().hex[:8]}"
    ecr.create_repository(repositoryName=repo)
    ref = f"{ENV['TESTBED_REGISTRY']}/{repo}:v-selftest"
    cfg = {"DOCKER_CONFIG": str(tmp_path)}
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    password = base64.b64decode(token).decode().split(":", 1)[1]
    docker("login", "-u", "AWS", "--password-stdin", ENV["TESTBED_REGISTRY"], input=password, env=cfg)
    docker("build", "-q", "--build-arg", "VERSION=v-selftest", "-t", ref, context, env=cfg)
    docker("push", ref, env=cfg)
    # The push reached ECR through the registry's notification.
    deadline = time.time() + 10
    while True:
        try:
            ecr.describe_images(repositoryName=repo, imageIds=[{"imageTag": "v-selftest"}])
            break
        except ecr.exceptions.ImageNotFoundException:
            assert time.time() < deadline, "the push never showed up in ECR"
            time.sleep(0.2)

    ip = [i["IPAddress"] for i in ssm.describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": [iid]}])["InstanceInformationList"]][0]
    script = (f"aws ecr get-login-password --region $AWS_SSM_REGION_NAME | docker login -u AWS --password-stdin {ENV['TESTBED_REGISTRY']} "
              f"&& docker run -d --name web -p 3000:3000 {ref}")
    cid = send(script, InstanceIds=[iid])
    assert wait_command(cid)["Status"] == "Success", ssm.get_command_invocation(CommandId=cid, InstanceId=iid)["StandardErrorContent"]
    deadline = time.time() + 10
    while http_get(f"http://{ip}:3000/version") != (200, "v-selftest\n"):
        assert time.time() < deadline, "the app does not answer on the instance's own address"
        time.sleep(0.2)

    tg = ENV["TESTBED_TARGET_GROUP_ARN"]
    lb = ENV["TESTBED_LB_URL"]
    assert target_health(iid) == "unused"
    elb.register_targets(TargetGroupArn=tg, Targets=[{"Id": iid}])
    seen = wait_health(iid, "healthy")
    assert seen[0] == "initial", seen
    try:
        assert http_get(f"{lb}/version") == (200, "v-selftest\n")

        # Deregistered: draining, then gone, and haproxy stops routing to it.
        elb.deregister_targets(TargetGroupArn=tg, Targets=[{"Id": iid}])
        wait_health(iid, "unused", timeout=15)
        assert http_get(f"{lb}/version")[0] == 503

        # Registered again, then the app stops: the target turns unhealthy.
        elb.register_targets(TargetGroupArn=tg, Targets=[{"Id": iid}])
        wait_health(iid, "healthy")
        assert on_instance(iid, "docker", "stop", "web").returncode == 0
        wait_health(iid, "unhealthy", timeout=15)
        assert http_get(f"{lb}/version")[0] == 503
    finally:
        elb.deregister_targets(TargetGroupArn=tg, Targets=[{"Id": iid}])


def test_parameter_versions_are_unique_under_concurrent_puts():
    # The deploy lock relies on Parameter Store giving every PutParameter its own version.
    import concurrent.futures
    ssm = client("ssm")
    name = f"/testbed/versions/{uuid.uuid4().hex}"

    def put(i):
        return ssm.put_parameter(Name=name, Value=f"writer {i}", Type="String", Overwrite=True)["Version"]

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        versions = sorted(pool.map(put, range(64)))
    assert versions == list(range(1, 65))
    history = ssm.get_parameter_history(Name=name, MaxResults=50)["Parameters"]
    assert [p["Version"] for p in history] == list(range(1, 51))
