"""Training as Kubernetes objects: a headless Service and an Indexed Job, one pod per node.

:func:`training_objects` writes what a Kubernetes user would write by hand for a multi-node
``torchrun``: an Indexed Job (``completionMode: Indexed``, as many completions as nodes, all
running at once), whose pod ``i`` is node rank ``i`` (``$(JOB_COMPLETION_INDEX)``, which the
Job controller sets in each pod), and a headless Service that gives pod 0 the stable name
``<job>-0.<service>`` the other nodes meet on (``--master-addr``). Every pod mounts the
PersistentVolumeClaim holding the repository, whose token shards it reads and whose run
folder it writes. :func:`lab_objects` fills them in from ``params.yaml``
(``train.kubernetes``, and the job's shape from ``train.slurm`` and ``train.nproc``) and the
trainer's arguments; :func:`manifest` writes them as YAML documents for ``kubectl apply -f``.

The lab renders these objects and nothing more: it does not apply them, nor follow the job,
and Dagster and DVC keep running where the pipeline runs. Nothing here imports Dagster or DVC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from olmo_assets.lab.params import Lab

__all__ = ["MASTER_PORT", "lab_objects", "manifest", "training_objects"]

MASTER_PORT = 29500
"""The port node rank 0 (pod 0) serves the rendezvous on; pods have their own addresses, so
any port does."""

#: Rendered into each pod's arguments; Kubernetes replaces it with the pod's index.
_NODE_RANK = "$(JOB_COMPLETION_INDEX)"
_REPOSITORY_VOLUME = "repository"
_HEADER = "Rendered by `olmo lab kubernetes` from params.yaml (olmo_assets/lab/kubernetes.py)."


def training_objects(
    *,
    command: Sequence[str],
    torchrun: Sequence[str],
    nodes: int,
    processes_per_node: int,
    image: str,
    claim: str,
    mount_path: str,
    name: str = "olmo-train",
    namespace: str | None = None,
    sub_path: str | None = None,
    gpus_per_node: int = 0,
    gpu_resource: str = "nvidia.com/gpu",
    cpus_per_node: int | None = None,
    memory: str | None = None,
    shared_memory: str | None = None,
    service_account: str | None = None,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] = (),
    env: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The headless Service and the Indexed Job, as plain objects (``kubectl``'s YAML).

    ``torchrun`` is how to start it in the image (``python -m torch.distributed.run``),
    ``command`` what it runs (``-m olmo_nn.cli.main train …``, with paths under
    ``mount_path``, the repository's path in the pod, which is also the working folder).
    """
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "olmo-lab"}
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = labels
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "clusterIP": "None",
            "selector": labels,
            # Pod 0's name must resolve before it is ready: the others connect at start.
            "publishNotReadyAddresses": True,
            "ports": [{"name": "rendezvous", "port": MASTER_PORT}],
        },
    }
    launch = [
        f"--nnodes={nodes}",
        f"--nproc-per-node={processes_per_node}",
        f"--node-rank={_NODE_RANK}",
        f"--master-addr={name}-0.{name}",
        f"--master-port={MASTER_PORT}",
        *command,
    ]
    mount: dict[str, Any] = {"name": _REPOSITORY_VOLUME, "mountPath": mount_path}
    if sub_path:
        mount["subPath"] = sub_path
    shm: dict[str, Any] = {"medium": "Memory"}
    if shared_memory:
        shm["sizeLimit"] = shared_memory
    container: dict[str, Any] = {
        "name": "trainer",
        "image": image,
        "workingDir": mount_path,
        "command": list(torchrun),
        "args": launch,
        "env": [{"name": key, "value": value} for key, value in (env or {}).items()],
        "resources": _resources(gpus_per_node, gpu_resource, cpus_per_node, memory),
        "volumeMounts": [mount, {"name": "shm", "mountPath": "/dev/shm"}],
    }
    pod: dict[str, Any] = {
        # With the Service of the same name, pod i is reachable as <name>-i.<name>.
        "subdomain": name,
        # A failed rank ends the job: torchrun's static rendezvous cannot take a new pod in.
        "restartPolicy": "Never",
    }
    if service_account:
        pod["serviceAccountName"] = service_account
    if node_selector:
        pod["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod["tolerations"] = [dict(toleration) for toleration in tolerations]
    pod["containers"] = [container]
    pod["volumes"] = [
        {"name": _REPOSITORY_VOLUME, "persistentVolumeClaim": {"claimName": claim}},
        {"name": "shm", "emptyDir": shm},
    ]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "completionMode": "Indexed",
            "completions": nodes,
            "parallelism": nodes,
            "backoffLimit": 0,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
    return [service, job]


def _resources(
    gpus: int, gpu_resource: str, cpus: int | None, memory: str | None
) -> dict[str, dict[str, str]]:
    """GPUs as a limit (an extended resource's request is its limit); CPUs as a request
    only (a CPU limit would throttle the data loaders); memory requested and limited."""
    requests, limits = {}, {}
    if cpus:
        requests["cpu"] = str(cpus)
    if memory:
        requests["memory"] = limits["memory"] = memory
    if gpus:
        limits[gpu_resource] = str(gpus)
    return {name: values for name, values in (("requests", requests), ("limits", limits)) if values}


def lab_objects(lab: Lab) -> list[dict[str, Any]]:
    """The objects of ``train.kubernetes``: the trainer's arguments as the train step has
    them, with the repository's path replaced by its path in the pod, and the MLflow store
    the train step would use (:attr:`Lab.mlflow_uri`: ``MLFLOW_TRACKING_URI`` if set, else
    the repository's SQLite store, seen from the pod)."""
    from olmo_assets.lab.steps.training import TORCHRUN, trainer_arguments

    params = lab.params.train
    kubernetes, shape = params.kubernetes, params.slurm
    for key, value in (("image", kubernetes.image), ("claim", kubernetes.claim)):
        if not value:
            raise ValueError(
                f"train.kubernetes.{key} is not set in {lab.repo / 'params.yaml'}: name the "
                "image with the lab installed (image) and the PersistentVolumeClaim holding "
                "this repository (claim)"
            )
    if shape.gpus_per_node and params.nproc > shape.gpus_per_node:
        raise ValueError(
            f"train.nproc={params.nproc} processes per node but train.slurm.gpus_per_node="
            f"{shape.gpus_per_node}: one process per GPU at most"
        )
    assert kubernetes.image and kubernetes.claim
    here = str(lab.repo)
    there = kubernetes.mount_path or here

    def in_pod(text: str) -> str:
        return text.replace(here + "/", there.rstrip("/") + "/")

    return training_objects(
        command=[in_pod(argument) for argument in trainer_arguments(lab)],
        torchrun=[kubernetes.python, *TORCHRUN[1:]],
        nodes=shape.nodes,
        processes_per_node=params.nproc,
        image=kubernetes.image,
        claim=kubernetes.claim,
        mount_path=there,
        name=kubernetes.name,
        namespace=kubernetes.namespace,
        sub_path=kubernetes.sub_path,
        gpus_per_node=shape.gpus_per_node,
        gpu_resource=kubernetes.gpu_resource,
        cpus_per_node=shape.cpus_per_node,
        memory=kubernetes.memory,
        shared_memory=kubernetes.shared_memory,
        service_account=kubernetes.service_account,
        node_selector=kubernetes.node_selector,
        tolerations=kubernetes.tolerations,
        env={"MLFLOW_TRACKING_URI": _tracking_uri(lab, in_pod), **kubernetes.env},
    )


def _tracking_uri(lab: Lab, in_pod: Any) -> str:
    """The pods' MLflow tracking URI: ``train.kubernetes.env``'s, else the lab's as the pods
    see it; never one holding a password (a manifest is printed, applied and committed)."""
    from olmo_assets.lab.database import redacted

    uri = str(lab.params.train.kubernetes.env.get("MLFLOW_TRACKING_URI") or lab.mlflow_uri)
    if redacted(uri) != uri:
        raise ValueError(
            f"the MLflow tracking URI {redacted(uri)} holds a password, which a manifest must "
            "not: set train.kubernetes.env.MLFLOW_TRACKING_URI to a tracking server the pods "
            "reach (http://…), or give the pods the URI from a Secret"
        )
    return str(in_pod(uri))


class _Dumper(yaml.SafeDumper):
    """Writes a mapping used twice (the labels) twice, not as a YAML alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def manifest(objects: Sequence[Mapping[str, Any]]) -> str:
    """The objects as YAML documents separated by ``---`` (``kubectl apply -f -``)."""
    body = yaml.dump_all(
        [dict(item) for item in objects],
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        width=100,
    )
    return f"# {_HEADER}\n{body}"
