"""Training as Kubernetes objects: the Service and Indexed Job ``olmo lab kubernetes`` renders,
checked offline against Kubernetes' own schemas (``kubernetes-validate`` bundles them, strict:
an unknown field is an error). Nothing here talks to a cluster."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from olmo_assets.lab.kubernetes import lab_objects, manifest
from olmo_assets.lab.params import Lab
from olmo_nn.cli.main import main
from olmo_nn.config import ConfigError

#: The oldest Kubernetes still commonly run (extended support) and the newest bundled.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")

OLMO_7B_KUBERNETES = """\
# Rendered by `olmo lab kubernetes` from params.yaml (olmo_assets/lab/kubernetes.py).
apiVersion: v1
kind: Service
metadata:
  name: olmo-train
  namespace: research
  labels:
    app.kubernetes.io/name: olmo-train
    app.kubernetes.io/part-of: olmo-lab
spec:
  clusterIP: None
  selector:
    app.kubernetes.io/name: olmo-train
    app.kubernetes.io/part-of: olmo-lab
  publishNotReadyAddresses: true
  ports:
  - name: rendezvous
    port: 29500
---
apiVersion: batch/v1
kind: Job
metadata:
  name: olmo-train
  namespace: research
  labels:
    app.kubernetes.io/name: olmo-train
    app.kubernetes.io/part-of: olmo-lab
spec:
  completionMode: Indexed
  completions: 4
  parallelism: 4
  backoffLimit: 0
  template:
    metadata:
      labels:
        app.kubernetes.io/name: olmo-train
        app.kubernetes.io/part-of: olmo-lab
    spec:
      subdomain: olmo-train
      restartPolicy: Never
      serviceAccountName: olmo-trainer
      nodeSelector:
        nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3
      tolerations:
      - key: nvidia.com/gpu
        operator: Exists
        effect: NoSchedule
      containers:
      - name: trainer
        image: ghcr.io/example/olmo-lab:v1
        workingDir: /shared/lab
        command:
        - python
        - -m
        - torch.distributed.run
        args:
        - --nnodes=4
        - --nproc-per-node=8
        - --node-rank=$(JOB_COMPLETION_INDEX)
        - --master-addr=olmo-train-0.olmo-train
        - --master-port=29500
        - -m
        - olmo_nn.cli.main
        - train
        - /shared/lab/configs/olmo-7b.yaml
        - data.paths=[/shared/lab/lab/shards/web/00000/train]
        - max_steps=300
        - global_batch_size=8
        - micro_batch_size=8
        - save_interval_unsharded=100
        - save_interval=100
        - eval.interval=100
        - mlflow_experiment=olmo-lab/lab
        - --run-dir
        - /shared/lab/lab/runs/train
        env:
        - name: MLFLOW_TRACKING_URI
          value: sqlite:////shared/lab/.mlflow/mlflow.db
        - name: NCCL_DEBUG
          value: WARN
        resources:
          requests:
            cpu: '64'
            memory: 1600Gi
          limits:
            memory: 1600Gi
            nvidia.com/gpu: '8'
        volumeMounts:
        - name: repository
          mountPath: /shared/lab
          subPath: lab
        - name: shm
          mountPath: /dev/shm
      volumes:
      - name: repository
        persistentVolumeClaim:
          claimName: olmo-lab
      - name: shm
        emptyDir:
          medium: Memory
          sizeLimit: 256Gi
"""

OLMO_7B_KUBERNETES_PARAMS: dict[str, Any] = {
    "image": "ghcr.io/example/olmo-lab:v1",
    "claim": "olmo-lab",
    "sub_path": "lab",
    "mount_path": "/shared/lab",
    "namespace": "research",
    "service_account": "olmo-trainer",
    "memory": "1600Gi",
    "shared_memory": "256Gi",
    "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "env": {"NCCL_DEBUG": "WARN"},
}


def _lab(folder: Path, kubernetes: dict[str, Any], **slurm: Any) -> Lab:
    """A repository whose one source shard is tokenized (its summary is all the trainer's
    arguments read), training OLMo-7B on 4 nodes × 8 GPUs unless ``slurm`` says otherwise."""
    params = {
        "sources": {"web": {"kind": "prose"}},
        "train": {
            "config": "configs/olmo-7b.yaml",
            "nproc": 8,
            "slurm": {"nodes": 4, "gpus_per_node": 8, "cpus_per_node": 64} | slurm,
            "kubernetes": kubernetes,
        },
    }
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    shard = folder / "lab" / "shards" / "web" / "00000"
    shard.mkdir(parents=True)
    (shard / "summary.json").write_text(json.dumps({"splits": {"train": {}}}), encoding="utf-8")
    return Lab.load(folder)


@pytest.fixture(autouse=True)
def _no_tracking_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pinned objects name the repository's own MLflow store, not this shell's server."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("OLMO_LAB_DATABASE_URL", raising=False)


@pytest.fixture
def olmo_7b_lab(tmp_path: Path) -> Lab:
    return _lab(tmp_path / "lab", OLMO_7B_KUBERNETES_PARAMS)


def test_the_objects_of_an_olmo_7b_run_on_4_nodes_of_8_gpus(olmo_7b_lab: Lab) -> None:
    assert manifest(lab_objects(olmo_7b_lab)) == OLMO_7B_KUBERNETES


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_is_valid_against_the_kubernetes_schema(
    olmo_7b_lab: Lab, tmp_path: Path, version: str
) -> None:
    """The pinned run's objects, and the fewest settings (CPU nodes, nothing optional),
    as ``kubectl`` would read the YAML."""
    plain = _lab(tmp_path / "plain", {"image": "olmo-lab", "claim": "olmo-lab"}, gpus_per_node=0)
    for lab in (olmo_7b_lab, plain):
        objects = list(yaml.safe_load_all(manifest(lab_objects(lab))))
        assert [o["kind"] for o in objects] == ["Service", "Job"]
        for item in objects:
            assert kubernetes_validate.validate(item, version, strict=True)


def test_the_schema_check_fails_on_a_wrong_field(olmo_7b_lab: Lab) -> None:
    service, job = lab_objects(olmo_7b_lab)
    misspelt = copy.deepcopy(job)
    container = misspelt["spec"]["template"]["spec"]["containers"][0]
    container["workdir"] = container.pop("workingDir")
    with pytest.raises(kubernetes_validate.ValidationError, match="'workdir' was unexpected"):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSIONS[-1], strict=True)
    not_a_number = copy.deepcopy(job)
    not_a_number["spec"]["completions"] = "four"
    with pytest.raises(kubernetes_validate.ValidationError, match="'four'"):
        kubernetes_validate.validate(not_a_number, KUBERNETES_VERSIONS[-1], strict=True)
    kubernetes_validate.validate(service, KUBERNETES_VERSIONS[-1], strict=True)


def test_pod_zero_is_reachable_by_the_name_the_nodes_meet_on(olmo_7b_lab: Lab) -> None:
    """The schema cannot see this: the Service selects the Job's pods, and its name is their
    subdomain, so pod 0 is ``<job>-0.<service>``, the ``--master-addr``."""
    service, job = lab_objects(olmo_7b_lab)
    pod = job["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["subdomain"] == service["metadata"]["name"]
    address = f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    assert f"--master-addr={address}" in pod["spec"]["containers"][0]["args"]


def test_the_tracking_uri_comes_from_the_environment_and_the_paths_stay_without_a_mount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = _lab(tmp_path / "lab", {"image": "olmo-lab", "claim": "olmo-lab"})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    _, job = lab_objects(lab)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == [{"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"}]
    # No mount_path: the claim mounts at the repository's own path.
    assert container["workingDir"] == str(lab.repo)
    assert f"{lab.run_dir}" in container["args"]


def test_missing_settings_and_bad_names_are_errors_that_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"train\.kubernetes\.image is not set"):
        lab_objects(_lab(tmp_path / "a", {"claim": "olmo-lab"}))
    with pytest.raises(ValueError, match=r"train\.nproc=8 .*\.gpus_per_node=4"):
        lab_objects(_lab(tmp_path / "b", {"image": "i", "claim": "c"}, gpus_per_node=4))
    with pytest.raises(ConfigError, match=r"train\.kubernetes\.name='OLMo_train'"):
        _lab(tmp_path / "c", {"name": "OLMo_train"})


def test_a_tracking_uri_holding_a_password_never_reaches_the_manifest(
    olmo_7b_lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLMO_LAB_DATABASE_URL", "postgresql://lab:s3cret@db.internal/olmo")
    with pytest.raises(ValueError) as raised:
        lab_objects(olmo_7b_lab)
    assert "postgresql://lab:***@db.internal/olmo" in str(raised.value)
    assert "s3cret" not in str(raised.value)


def test_the_command_prints_or_writes_what_the_function_renders(
    olmo_7b_lab: Lab,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = str(olmo_7b_lab.repo)
    assert main(["lab", "kubernetes", "--repo", repo]) == 0
    assert capsys.readouterr().out == OLMO_7B_KUBERNETES
    output = tmp_path / "out" / "train.yaml"
    assert main(["lab", "kubernetes", "--repo", repo, "--output", str(output)]) == 0
    assert capsys.readouterr().out == f"wrote {output}\n"
    assert output.read_text(encoding="utf-8") == OLMO_7B_KUBERNETES
