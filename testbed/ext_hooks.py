"""ECR pushes the registry reports, the instances' metadata service (IMDSv2), and CloudWatch's
DescribeAlarms over RPC v2 CBOR; see moto_ext.py."""

import base64
import json
import traceback
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler

from moto.ecr.models import ecr_backends

from ext_common import (
    API_CALLS,
    LOCK,
    THROTTLE,
    bed,
    count_call,
    log,
    running_count,
)

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
        # the most at once; /lifecycle-actions: the CompleteLifecycleAction calls (ext_asg).
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
            if self.path == "/lifecycle-actions":
                from ext_asg import ACTIONS_LOCK, LIFECYCLE_ACTIONS
                with ACTIONS_LOCK:
                    body = json.dumps(LIFECYCLE_ACTIONS).encode()
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
