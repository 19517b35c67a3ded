"""Auto Scaling's launch lifecycle hook, as an instance's boot script sees it.

Stock moto has no CompleteLifecycleAction, and DescribeAutoScalingInstances knows only the
instances its own groups launched. The bed's instances are of no group: one is in group G when it
carries the tag ``aws:autoscaling:groupName=G`` (the tag Auto Scaling puts on the instances it
launches; a test sets it). CompleteLifecycleAction for such an instance and group is recorded
(GET /lifecycle-actions on the hook port lists them) and answered as AWS answers; for an
instance of another group, or of none, it is refused as AWS refuses an action it has no record
of. Hooks themselves are not modelled: the group's name and the instance are what is checked.
"""

import threading

from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import ActionResult, EmptyResult

from ext_common import count_call, instance_tags, running_instance

GROUP_TAG = "aws:autoscaling:groupName"
LIFECYCLE_ACTIONS: list = []  # {"group", "hook", "instance", "result"}, in the order received
ACTIONS_LOCK = threading.Lock()


def group_of(account, region, instance_id):
    """The group of a running instance (a launch's hook is of a running one), and the instance."""
    instance = running_instance(account, region, instance_id)
    return (instance_tags(instance).get(GROUP_TAG), instance) if instance else (None, None)


_stock_describe = AutoScalingResponse.describe_auto_scaling_instances


def describe_auto_scaling_instances(self):
    count_call("DescribeAutoScalingInstances")
    ids = self._get_param("InstanceIds", [])
    found = []
    for instance_id in ids:
        group, instance = group_of(self.current_account, self.region, instance_id)
        if group:
            found.append({
                "InstanceId": instance_id,
                "InstanceType": instance.instance_type,
                "AutoScalingGroupName": group,
                "AvailabilityZone": instance.placement,
                "LifecycleState": "Pending:Wait",
                "HealthStatus": "HEALTHY",
                "ProtectedFromScaleIn": False,
            })
    if ids and len(found) == len(ids):
        return ActionResult({"AutoScalingInstances": found})
    return _stock_describe(self)


def complete_lifecycle_action(self):
    count_call("CompleteLifecycleAction")
    group = self._get_param("AutoScalingGroupName")
    hook = self._get_param("LifecycleHookName")
    instance_id = self._get_param("InstanceId")
    result = self._get_param("LifecycleActionResult")
    if result not in ("CONTINUE", "ABANDON"):
        raise ValidationError(f"LifecycleActionResult must be CONTINUE or ABANDON, not {result!r}")
    actual, _ = group_of(self.current_account, self.region, instance_id)
    if actual != group:
        raise ValidationError(f"No active Lifecycle Action found with instance ID {instance_id}")
    with ACTIONS_LOCK:
        LIFECYCLE_ACTIONS.append({"group": group, "hook": hook, "instance": instance_id, "result": result})
    return EmptyResult()


AutoScalingResponse.describe_auto_scaling_instances = describe_auto_scaling_instances
AutoScalingResponse.complete_lifecycle_action = complete_lifecycle_action
