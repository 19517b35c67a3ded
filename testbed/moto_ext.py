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
* Auto Scaling: an instance's launch lifecycle hook completed by its boot script
  (CompleteLifecycleAction, DescribeAutoScalingInstances for the bed's instances).

Where SSM's documented behaviour is ambiguous the choice made is said in place.

The parts: ext_common (shared state), ext_ssm (Run Command, Parameter Store), ext_elb (target
groups and haproxy), ext_hooks (ECR pushes, IMDS, CloudWatch), ext_asg (lifecycle hooks).
Importing each applies its patches to moto.
"""

import os
import sys
import threading
from http.server import ThreadingHTTPServer

import ext_asg  # noqa: F401 (patches moto's Auto Scaling responses)
import ext_ssm  # noqa: F401 (patches moto's SSM responses)
from ext_common import log
from ext_elb import drain_loop
from ext_hooks import Hook, Imds, serve_cloudwatch_cbor


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
