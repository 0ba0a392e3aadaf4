"""launchers/: valid YAML with the fields each tool needs, and their ftc commands compile."""

from __future__ import annotations

import shlex

import pytest
import yaml

from tests.conftest import ROOT, plan_for

pytestmark = pytest.mark.unit
L = ROOT / "launchers"


def _overrides(words):
    return [w for w in words if "=" in w]


def test_ray_cluster_config():
    c = yaml.safe_load((L / "ray-cluster.yaml").read_text())
    assert {"cluster_name", "provider", "available_node_types", "head_node_type"} <= set(c)
    assert c["head_node_type"] in c["available_node_types"]
    assert any("--dashboard-host=127.0.0.1" in cmd for cmd in c["head_start_ray_commands"])


def test_kuberay_rayjob_runs_ftc_on_the_cluster():
    job = yaml.safe_load((L / "kuberay-rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:2] == ["ftc", "train"] and "launcher.address=auto" in words
    gpus = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    plan = plan_for(_overrides(words))
    assert int(gpus["resources"]["limits"]["nvidia.com/gpu"]) == plan.launcher.num_workers
    assert plan.errors == ()
    assert any(w.startswith("data.path") for w in plan.warnings)  # s3:// cannot be checked from here


def test_k8s_job_is_a_single_gpu_qlora_run():
    job = yaml.safe_load((L / "k8s-job-qlora.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["ftc", "train"] and container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    args = [a for a in container["args"] if not a.startswith("data.path")]
    plan = plan_for(args + ["data.path=ftc:sample/train.jsonl"])
    assert plan.method.quantization is not None and plan.world_size == 1 and plan.errors == ()


def test_dockerfile_installs_ftc():
    text = (L / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM " in text and 'pip install --no-cache-dir ".[all]"' in text


def test_k8s_vllm_serving_deployment_reads_the_model_from_object_storage():
    deployment, service = yaml.safe_load_all((L / "k8s-vllm-serve.yaml").read_text())
    assert (deployment["apiVersion"], deployment["kind"]) == ("apps/v1", "Deployment")
    assert (service["kind"], service["spec"]["type"]) == ("Service", "ClusterIP")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"][
        "labels"].items()
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    fetch = pod["initContainers"][0]
    assert fetch["args"][:2] == ["s3", "sync"] and fetch["args"][2].startswith("s3://")
    vllm = pod["containers"][0]
    assert vllm["image"].startswith("vllm/vllm-openai:")
    args = dict(a.removeprefix("--").split("=", 1) for a in vllm["args"] if "=" in a)
    assert args["model"] == fetch["args"][3] and int(args["port"]) == vllm["ports"][0]["containerPort"]
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert vllm["readinessProbe"]["httpGet"]["path"] == "/health"
    key = next(e for e in vllm["env"] if e["name"] == "VLLM_API_KEY")
    assert "secretKeyRef" in key["valueFrom"] and "value" not in key  # the key from a Secret, never inline
    mounted = {m["mountPath"] for m in vllm["volumeMounts"]} & {m["mountPath"] for m in fetch["volumeMounts"]}
    assert mounted == {"/models"}
