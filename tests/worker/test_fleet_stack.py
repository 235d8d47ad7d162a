"""The CloudFormation stack (deploy/aws/vidworker.yaml) read as data: least privilege, drain, lifecycle.

``make lint`` runs cfn-lint on it (the resource schemas); these tests hold the
properties cfn-lint cannot know: what the worker needs and no more, the hook
outlasting the drain, the secret never in user data, user data that names
only settings the worker reads.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.conftest import ROOT
from worker.segments import SEGMENT_TAGS
from worker.settings import Settings

TEMPLATE = ROOT / "deploy" / "aws" / "vidworker.yaml"
SPOT_NOTICE = 120
"""Seconds between a spot notice and the instance's end; a drain beyond it needs the hook."""

WORKER_ACTIONS = {
    # SQS: receive, extend, delete, retry later / hand back (send a copy), queue attributes, DLQ lookup
    "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes",
    "sqs:SendMessage", "sqs:GetQueueUrl",
    # S3: sources, outputs, job state, segments, outbox; ListBucket so a missing key is 404, not 403
    "s3:GetObject", "s3:PutObject", "s3:PutObjectTagging", "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts", "s3:DeleteObject", "s3:ListBucket",
    # the callback secret; the group
    "ssm:GetParameter", "autoscaling:SetInstanceProtection", "autoscaling:CompleteLifecycleAction",
}  # fmt: skip


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    from cfnlint.decode import decode  # type: ignore[import-untyped]

    found, problems = decode(str(TEMPLATE))
    assert not problems and found is not None, problems
    return dict(found)


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: body["Properties"] for name, body in template["Resources"].items() if body["Type"] == kind}


def statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    [role] = resources(template, "AWS::IAM::Role").values()
    return [item for policy in role["Policies"] for item in policy["PolicyDocument"]["Statement"]]


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def text_of(resource: Any) -> str:
    """An ARN as written: a Sub's template, a GetAtt's ``Name.Arn``."""
    if isinstance(resource, str):
        return resource
    if "Fn::Sub" in resource:
        sub = resource["Fn::Sub"]
        return str(sub if isinstance(sub, str) else sub[0])
    if "Fn::GetAtt" in resource:
        return ".".join(as_list(resource["Fn::GetAtt"]))
    return str(resource)


def user_data(template: dict[str, Any], name: str) -> str:
    data = template["Resources"][name]["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"][
        "Fn::Sub"
    ]
    return str(data[0])


def env_file(script: str) -> dict[str, str]:
    body = script.split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    return dict(line.split("=", 1) for line in body.splitlines())


def test_the_role_allows_exactly_what_the_worker_calls(template: dict[str, Any]) -> None:
    allowed = {action for item in statements(template) for action in as_list(item["Action"])}
    assert allowed == WORKER_ACTIONS
    assert all(item["Effect"] == "Allow" and "Condition" not in item for item in statements(template))


def test_no_wildcard_where_a_name_or_prefix_will_do(template: dict[str, Any]) -> None:
    for item in statements(template):
        for resource in as_list(item["Resource"]):
            arn = text_of(resource)
            assert arn != "*" and not arn.endswith(":*"), (item["Sid"], arn)
            if item["Sid"] == "CooperateWithTheGroups":  # only the group's generated id is unknown
                assert re.fullmatch(
                    r".*:autoScalingGroup:\*:autoScalingGroupName/\$\{AWS::StackName\}-(gpu|cpu)", arn
                )
            elif "*" in arn:  # objects under a named prefix of the stack's bucket
                assert arn.startswith("${Bucket.Arn}/") and arn.endswith("*"), (item["Sid"], arn)
                assert arn != "${Bucket.Arn}/*", "a prefix, not the whole bucket"


def test_deletes_reach_only_the_outbox_and_merged_segments(template: dict[str, Any]) -> None:
    [delete] = [item for item in statements(template) if "s3:DeleteObject" in as_list(item["Action"])]
    assert as_list(delete["Action"]) == ["s3:DeleteObject"]
    assert sorted(map(text_of, delete["Resource"])) == [
        "${Bucket.Arn}/jobs/*/segments/0*",
        "${Bucket.Arn}/jobs/.outbox/*",
    ]


def test_instances_require_imdsv2_reachable_from_a_container(template: dict[str, Any]) -> None:
    templates = resources(template, "AWS::EC2::LaunchTemplate")
    assert len(templates) == 2
    for properties in templates.values():
        options = properties["LaunchTemplateData"]["MetadataOptions"]
        assert options["HttpTokens"] == "required" and options["HttpPutResponseHopLimit"] == 2
        assert options["InstanceMetadataTags"] == "enabled"
        [disk] = properties["LaunchTemplateData"]["BlockDeviceMappings"]
        assert disk["Ebs"]["Encrypted"] is True


@pytest.mark.parametrize("tier", ["Gpu", "Cpu"])
def test_user_data_names_the_secret_never_holds_it_and_sets_only_known_settings(
    template: dict[str, Any], tier: str
) -> None:
    script = user_data(template, f"{tier}LaunchTemplate")
    env = env_file(script)
    known = {str(field.validation_alias) for field in Settings.model_fields.values()} | {"AWS_REGION"}
    known |= {
        choice
        for field in Settings.model_fields.values()
        for choice in getattr(field.validation_alias, "choices", [])
    }
    assert set(env) <= known, set(env) - known
    assert "CALLBACK_SECRET" not in env and env["CALLBACK_SECRET_PARAMETER"] == "${CallbackSecretParameter}"
    assert [name for name in template["Parameters"] if "Secret" in name] == ["CallbackSecretParameter"]
    assert env["WORKER_FLEET"] == "true"


@pytest.mark.parametrize("tier", ["Gpu", "Cpu"])
def test_the_lifecycle_hook_outlasts_the_drain_and_matches_the_worker(
    template: dict[str, Any], tier: str
) -> None:
    group = template["Resources"][f"{tier}Group"]["Properties"]
    env = env_file(user_data(template, f"{tier}LaunchTemplate"))
    [hook] = group["LifecycleHookSpecificationList"]
    assert hook["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
    assert hook["DefaultResult"] == "CONTINUE"  # a worker that died still lets the instance go
    assert hook["LifecycleHookName"] == env["WORKER_LIFECYCLE_HOOK"]
    assert group["AutoScalingGroupName"] == {"Fn::Sub": env["WORKER_AUTOSCALING_GROUP"]}
    assert hook["HeartbeatTimeout"] == {"Fn::FindInMap": ["Drain", {"Ref": "DrainSeconds"}, "HookSeconds"]}
    assert env["WORKER_DRAIN_SECONDS"] == "${DrainSeconds}"
    drains = template["Mappings"]["Drain"]
    assert sorted(drains, key=int) == template["Parameters"]["DrainSeconds"]["AllowedValues"]
    for drain, row in drains.items():
        assert row["HookSeconds"] >= int(drain) + SPOT_NOTICE, drain  # drain, then release and hand back
    assert group["MetricsCollection"][0]["Metrics"][0] == "GroupInServiceInstances"


def test_the_bucket_is_private_encrypted_and_expires_what_the_worker_leaves(template: dict[str, Any]) -> None:
    [bucket] = resources(template, "AWS::S3::Bucket").values()
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    rules = {rule["Id"]: rule for rule in bucket["LifecycleConfiguration"]["Rules"] if "Id" in rule}
    [(key, value)] = SEGMENT_TAGS.items()
    assert rules["vidworker-segments"]["TagFilters"] == [{"Key": key, "Value": value}]
    assert rules["vidworker-job-state"]["Prefix"] == "jobs/"
    assert rules["vidworker-incomplete-uploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 1
    }
    [outputs] = [rule for rule in bucket["LifecycleConfiguration"]["Rules"] if "Fn::If" in rule]
    assert outputs["Fn::If"][0] == "ExpireOutputs" and outputs["Fn::If"][1]["Prefix"] == "processed/"


def test_queues_redrive_to_their_own_encrypted_longer_lived_dead_letter_queue(
    template: dict[str, Any],
) -> None:
    queues = resources(template, "AWS::SQS::Queue")
    for tier in ("Gpu", "Cpu"):
        queue, dead = queues[f"{tier}Queue"], queues[f"{tier}DeadLetterQueue"]
        assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
            "Fn::GetAtt": [f"{tier}DeadLetterQueue", "Arn"]
        }
        assert dead["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]
        assert queue["SqsManagedSseEnabled"] and dead["SqsManagedSseEnabled"]
        assert queue["ReceiveMessageWaitTimeSeconds"] == 20


@pytest.mark.parametrize("tier", ["Gpu", "Cpu"])
def test_each_group_tracks_its_own_backlog_per_instance_and_wakes_from_zero(
    template: dict[str, Any], tier: str
) -> None:
    policy = template["Resources"][f"{tier}BacklogPolicy"]["Properties"]
    assert policy["AutoScalingGroupName"] == {"Ref": f"{tier}Group"}
    tracking = policy["TargetTrackingConfiguration"]
    assert tracking["TargetValue"] == {"Ref": "AcceptableLatencySeconds"}
    metrics = {item["Id"]: item for item in tracking["CustomizedMetricSpecification"]["Metrics"]}
    queue = metrics["visible"]["MetricStat"]["Metric"]["Dimensions"][0]["Value"]
    assert queue == {"Fn::GetAtt": [f"{tier}Queue", "QueueName"]}
    assert [item["Id"] for item in metrics.values() if item["ReturnData"]] == ["backlog"]
    assert f"${{{tier}SecondsPerMessage}}" in metrics["backlog"]["Expression"]["Fn::Sub"]
    alarm = template["Resources"][f"{tier}WakeAlarm"]["Properties"]
    wake = template["Resources"][f"{tier}WakePolicy"]["Properties"]
    assert alarm["AlarmActions"] == [{"Ref": f"{tier}WakePolicy"}]
    assert wake["AdjustmentType"] == "ExactCapacity" and wake["StepAdjustments"][0]["ScalingAdjustment"] == 1
    assert "inservice, 0) == 0" in next(item for item in alarm["Metrics"] if item["ReturnData"])["Expression"]
