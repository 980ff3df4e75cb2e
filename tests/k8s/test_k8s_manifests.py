"""k8s/: every kustomization renders, validates against its schemas, and would run a sweep as shipped.

Rendering is `kubectl kustomize` (offline). RayCluster/RayJob are checked against the CRDs' v1 openAPIV3Schema
of EVERY supported KubeRay release (vendored in schemas/<release>/, made strict: unknown fields are errors, as
with `kubectl apply --validate=strict`); core objects and every pod template against kubernetes-validate's
strict schemas. No API server is involved: what the operator does with these objects is taken from its source
(ray-project/kuberay at the release tags) and stated next to each check.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cluster.sizing import DAEMONSET_CPU, DAEMONSET_MEMORY_GIB, NODE_TYPES, estimated_allocatable, parse_quantity

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
KUBE_VERSION = "1.32.0"  # the kubectl/kustomize these manifests are written for
SUPPORTED_RELEASES = ("v1.6.2", "v1.7.0")  # oldest first: the README names the first
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
SAMPLES = sorted(p.name for p in (K8S / "samples").iterdir() if p.is_dir() and p.name != "base")
TARGETS = ["base", *(f"overlays/{o}" for o in OVERLAYS), *(f"samples/{s}" for s in ["base", *SAMPLES]), "quota"]
# What an operator applies without editing (the rest carry a placeholder the README tells them to set).
APPLY_AS_SHIPPED = {"overlays/cpu-dev", "overlays/s3-results", "quota", *(f"samples/{s}" for s in SAMPLES)}
CRD_FILES = {"RayCluster": "raycluster.v1.json", "RayJob": "rayjob.v1.json"}
CORE_API_VERSIONS = {"v1", "networking.k8s.io/v1", "policy/v1", "scheduling.k8s.io/v1"}
DASHBOARD_PORT, METRICS_PORTS = 8265, {8080, 44217, 44227}
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


def _render(target: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl (with kustomize) is needed to render k8s/; install kubectl >= 1.32")
    done = subprocess.run([kubectl, "kustomize", str(K8S / target)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"kubectl kustomize k8s/{target} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {target: _render(target) for target in TARGETS}


def _strict(schema):
    """Close every object schema that lists properties (CRDs prune unknown fields silently)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _vendored(release: str, kind: str) -> dict:
    return json.loads((SCHEMAS / release / CRD_FILES[kind]).read_text())


@pytest.fixture(scope="module")
def crd_validators():
    import jsonschema

    return {
        (release, kind): jsonschema.Draft7Validator(_strict(_vendored(release, kind)["openAPIV3Schema"]))
        for release in SUPPORTED_RELEASES
        for kind in CRD_FILES
    }


def _pod_templates(obj: dict) -> list[tuple[str, dict]]:
    spec = obj.get("spec") or {}
    if obj["kind"] == "RayCluster":
        out = [("head", spec["headGroupSpec"]["template"])]
        out += [(f"worker group {g['groupName']}", g["template"]) for g in spec.get("workerGroupSpecs", [])]
        return out
    if obj["kind"] == "RayJob":
        out = [("submitter", spec["submitterPodTemplate"])] if "submitterPodTemplate" in spec else []
        if "rayClusterSpec" in spec:
            out += _pod_templates({"kind": "RayCluster", "spec": spec["rayClusterSpec"]})
        return out
    return []


def _containers(obj: dict) -> list[tuple[str, dict, dict]]:
    """(where, container, pod spec) for every container, init container and KubeRay's autoscaler."""
    found = []
    for where, template in _pod_templates(obj):
        pod = template["spec"]
        for c in pod.get("initContainers", []) + pod["containers"]:
            found.append((f"{where}/{c['name']}", c, pod))
    if obj["kind"] == "RayCluster" and obj["spec"].get("enableInTreeAutoscaling"):
        # KubeRay builds this sidecar from autoscalerOptions; its pod is the head's.
        head_pod = obj["spec"]["headGroupSpec"]["template"]["spec"]
        found.append(("head/autoscaler", obj["spec"].get("autoscalerOptions") or {}, head_pod))
    return found


def _all(rendered, kind=None):
    for target, docs in rendered.items():
        for obj in docs:
            if kind is None or obj["kind"] == kind:
                yield target, obj


def _one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in docs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def _workers(cluster: dict) -> dict:
    return cluster["spec"]["workerGroupSpecs"][0]


def _limits(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]["resources"]["limits"]


# --- schemas: every supported KubeRay release, strict ----------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_renders_and_validates_against_every_supported_release(rendered, crd_validators, target):
    import kubernetes_validate

    docs = rendered[target]
    assert docs, f"k8s/{target} rendered nothing"
    for obj in docs:
        where = f"k8s/{target}: {obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in CRD_FILES:
            assert obj["apiVersion"] == "ray.io/v1", where
            for release in SUPPORTED_RELEASES:
                errors = sorted(crd_validators[(release, obj["kind"])].iter_errors(obj), key=lambda e: list(e.path))
                detail = "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])
                assert not errors, f"{where} is not valid for KubeRay {release}:\n{detail}"
            for _, template in _pod_templates(obj):
                pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": template["spec"]}
                kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)
        else:
            assert obj["apiVersion"] in CORE_API_VERSIONS, where
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_strict_validation_catches_a_typo_and_a_field_the_oldest_release_lacks(rendered, crd_validators):
    # Guards the guard: a misspelt field must fail, or the check above proves nothing...
    cluster = copy.deepcopy(next(obj for _, obj in _all(rendered, "RayCluster")))
    cluster["spec"]["autoscalerOptions"]["idleTimeoutSecond"] = 60
    assert list(crd_validators[(SUPPORTED_RELEASES[0], "RayCluster")].iter_errors(cluster))
    # ...and each release's own schema is used: v1.7.0 added spec.networkPolicy, which v1.6.2 rejects.
    cluster = copy.deepcopy(next(obj for _, obj in _all(rendered, "RayCluster")))
    cluster["spec"]["networkPolicy"] = {}
    assert list(crd_validators[("v1.6.2", "RayCluster")].iter_errors(cluster))
    assert not list(crd_validators[("v1.7.0", "RayCluster")].iter_errors(cluster))


def test_vendored_schemas_name_their_release_and_source_hash():
    for release in SUPPORTED_RELEASES:
        for kind in CRD_FILES:
            vendored = _vendored(release, kind)
            assert vendored["release"] == release and vendored["source_file"].startswith(f"{release}/")
            assert re.fullmatch(r"[0-9a-f]{64}", vendored["source_sha256"])
            assert vendored["source_sha256"] in (SCHEMAS / "README.md").read_text()
    assert sorted(p.name for p in SCHEMAS.iterdir() if p.is_dir()) == sorted(SUPPORTED_RELEASES)


def test_vendored_crd_schemas_match_the_shared_copies():
    """The vendored schemas are the v1 openAPIV3Schema of ../shared/schemas/kuberay (hash-pinned)."""
    import hashlib

    shared = REPO.parent / "shared" / "schemas" / "kuberay"
    if not shared.is_dir():
        pytest.skip("no ../shared/schemas/kuberay next to the repo to compare against")
    for release in SUPPORTED_RELEASES:
        for kind in CRD_FILES:
            vendored = _vendored(release, kind)
            digest = hashlib.sha256((shared / vendored["source_file"]).read_bytes()).hexdigest()
            assert digest == vendored["source_sha256"], f"{vendored['source_file']} changed: re-extract it"


# --- security -------------------------------------------------------------------------------------


def test_every_namespaced_object_is_in_zerotune(rendered):
    for target, obj in _all(rendered):
        if obj["kind"] not in {"Namespace", "PriorityClass"}:  # cluster-scoped
            assert obj["metadata"].get("namespace") == "zerotune", f"k8s/{target}: {obj['kind']}"


def test_containers_meet_the_restricted_pod_security_standard(rendered):
    checked = 0
    for target, obj in _all(rendered):
        for where, container, pod in _containers(obj):
            ctx, pod_ctx = container.get("securityContext") or {}, pod.get("securityContext") or {}
            label = f"k8s/{target} {obj['kind']} {where}"
            assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, label
            assert ctx.get("runAsUser", pod_ctx.get("runAsUser", 1)) != 0, label
            assert ctx.get("allowPrivilegeEscalation") is False, label
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], label
            assert not ctx.get("capabilities", {}).get("add"), label
            assert ctx.get("privileged") is not True, label
            seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
            assert seccomp == "RuntimeDefault", label
            checked += 1
        for _, template in _pod_templates(obj):
            pod = template["spec"]
            assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), obj["metadata"]["name"]
            assert not any("hostPath" in v for v in pod.get("volumes", [])), obj["metadata"]["name"]
    assert checked == 3 * sum(1 for _ in _all(rendered, "RayCluster"))  # head + autoscaler + worker


def test_token_auth_is_on_and_no_token_is_committed(rendered):
    for target, obj in _all(rendered, "RayCluster"):
        auth = obj["spec"].get("authOptions") or {}
        assert (auth.get("mode"), auth.get("secretName")) == ("token", "zerotune-ray-auth"), f"k8s/{target}"
    for target, obj in _all(rendered):
        assert obj["kind"] != "Secret", f"k8s/{target} carries a Secret; create tokens out of band"


def test_dashboard_is_not_exposed_outside_the_cluster(rendered):
    for target, obj in _all(rendered):
        assert obj["kind"] not in {"Service", "Ingress", "Route"}, f"k8s/{target} exposes {obj['kind']}"
        if obj["kind"] == "RayCluster":
            head = obj["spec"]["headGroupSpec"]
            # KubeRay creates the head Service from these two fields.
            assert head.get("serviceType", "ClusterIP") == "ClusterIP", f"k8s/{target}"
            assert head.get("enableIngress", False) is False, f"k8s/{target}"
            assert "headService" not in head, f"k8s/{target}: a custom head Service needs its own check"


def _ingress_to(docs: list[dict], labels: dict) -> list[tuple[dict, set]]:
    """(peer, ports) for every ingress peer of every NetworkPolicy that selects a pod with `labels`."""
    out = []
    for policy in (o for o in docs if o["kind"] == "NetworkPolicy"):
        if policy["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items():
            for rule in policy["spec"]["ingress"]:
                assert rule.get("from"), "an ingress rule without `from` admits everyone"
                out += [(peer, {p["port"] for p in rule.get("ports", [])}) for peer in rule["from"]]
    return out


def test_network_policies_admit_only_named_peers_on_their_ports(rendered):
    for target, docs in rendered.items():
        clusters = [o for o in docs if o["kind"] == "RayCluster"]
        if not clusters:
            continue
        name = clusters[0]["metadata"]["name"]
        for node_type in ("head", "worker"):
            peers = _ingress_to(docs, {"ray.io/cluster": name, "ray.io/node-type": node_type})
            assert ({"podSelector": {"matchLabels": {"ray.io/cluster": name}}}, set()) in peers, target
            for peer, ports in peers:
                assert "ipBlock" not in peer, f"k8s/{target}: ipBlock peers are not expected"
                if "namespaceSelector" in peer:
                    # a named namespace, never `{}` (all namespaces), and only the client/metrics ports
                    assert peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], target
                    assert ports and ports <= {DASHBOARD_PORT, 10001, *METRICS_PORTS}, f"k8s/{target}: {ports}"
                else:
                    assert peer["podSelector"]["matchLabels"] == {"ray.io/cluster": name}, target


def _operator_peers(docs):
    head = {"ray.io/cluster": "zerotune", "ray.io/node-type": "head"}
    return [
        (peer, ports)
        for peer, ports in _ingress_to(docs, head)
        if (peer.get("podSelector") or {}).get("matchLabels") == {"app.kubernetes.io/name": "kuberay-operator"}
    ]


def test_the_operator_reaches_the_jobs_api_from_the_namespace_the_readme_installs_it_in(rendered):
    """The operator submits (HTTPMode) and polls RayJobs on 8265; blocked, a finished sweep reads Failed."""
    section = _readme_section()
    install = re.search(r"helm install kuberay-operator kuberay/kuberay-operator --version (\S+) -n (\S+)", section)
    assert install, "the README pins the operator install: helm install ... --version X -n NAMESPACE"
    assert f"v{install[1]}" in SUPPORTED_RELEASES
    for target, docs in rendered.items():
        if not any(o["kind"] == "RayCluster" for o in docs):
            continue
        (peer, ports), *more = _operator_peers(docs)
        assert not more and ports == {DASHBOARD_PORT}, target
        namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        assert namespace == install[2], f"k8s/{target} admits the operator from {namespace}"
        # one replacement point: the name appears in exactly one field of everything rendered
        assert json.dumps(docs).count(f'"{namespace}"') == 1, target


def test_prometheus_may_scrape_ray_metrics_on_every_ray_pod(rendered):
    for target, docs in rendered.items():
        for cluster in (o for o in docs if o["kind"] == "RayCluster"):
            for node_type, ports in (("head", METRICS_PORTS), ("worker", {8080})):
                labels = {"ray.io/cluster": cluster["metadata"]["name"], "ray.io/node-type": node_type}
                scrape = [
                    (peer, p)
                    for peer, p in _ingress_to(docs, labels)
                    if (peer.get("podSelector") or {}).get("matchLabels") == {"app.kubernetes.io/name": "prometheus"}
                ]
                assert len(scrape) == 1 and ports <= scrape[0][1], f"k8s/{target} {node_type}"
            for where, template in _pod_templates(cluster):
                declared = {p["containerPort"] for p in template["spec"]["containers"][0].get("ports", [])}
                assert 8080 in declared, f"k8s/{target} {where}: the metrics port KubeRay's PodMonitors scrape"


def test_only_the_autoscaler_holds_an_api_token_and_the_project_adds_no_rbac(rendered):
    """KubeRay (common/rbac.go, v1.6.2 and v1.7.0) creates Role+RoleBinding `<cluster>` for the head's service
    account when autoscaling is on: pods get/list/watch/patch, pods/resize patch, rayclusters get/patch in the
    namespace. A project Role could only add to that grant, so there is none; what the project does control is
    which container gets the token: the autoscaler sidecar, not the Ray container that runs job code."""
    for target, docs in rendered.items():
        assert not [o for o in docs if o["kind"] in {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}]
        for cluster in (o for o in docs if o["kind"] == "RayCluster"):
            assert cluster["spec"]["enableInTreeAutoscaling"] is True
            head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
            account = _one(docs, "ServiceAccount", head["serviceAccountName"])  # KubeRay requires it to exist
            assert account["automountServiceAccountToken"] is False and head["automountServiceAccountToken"] is False
            volumes = {v["name"]: v for v in head["volumes"]}
            mounts = cluster["spec"]["autoscalerOptions"]["volumeMounts"]
            (token,) = [m for m in mounts if m["mountPath"] == TOKEN_PATH]
            sources = volumes[token["name"]]["projected"]["sources"]
            assert {"serviceAccountToken", "configMap", "downwardAPI"} == {k for s in sources for k in s}, target
            assert token["readOnly"] is True
            for _, container, _ in _containers(cluster)[:-1]:  # every container but the autoscaler
                assert token["name"] not in {m["name"] for m in container.get("volumeMounts", [])}, target
            for group in cluster["spec"]["workerGroupSpecs"]:
                assert group["template"]["spec"]["automountServiceAccountToken"] is False


# --- scheduling, sizing and scratch space -----------------------------------------------------


def test_ray_containers_request_the_node_disk_their_scratch_volume_may_fill(rendered):
    """/tmp/ray holds Ray's logs and its spilled objects (the session dir is the default spill path): its
    sizeLimit caps both, so each Ray container requests at least that much ephemeral storage."""
    for target, cluster in _all(rendered, "RayCluster"):
        for where, template in _pod_templates(cluster):
            pod = template["spec"]
            volumes = {v["name"]: v for v in pod["volumes"]}
            container = pod["containers"][0]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            scratch = volumes[mounts["/tmp/ray"]]["emptyDir"]
            assert volumes[mounts["/dev/shm"]]["emptyDir"].get("medium") == "Memory", f"k8s/{target} {where}"
            request = container["resources"]["requests"].get("ephemeral-storage")
            assert request, f"k8s/{target} {where}: no ephemeral-storage request"
            assert parse_quantity(request) >= parse_quantity(scratch["sizeLimit"]), f"k8s/{target} {where}"
            shm = parse_quantity(volumes[mounts["/dev/shm"]]["emptyDir"]["sizeLimit"])
            assert shm < parse_quantity(container["resources"]["limits"]["memory"]), f"k8s/{target} {where}"


def test_gpu_requests_equal_limits(rendered):
    for target, obj in _all(rendered, "RayCluster"):
        for where, container, _ in _containers(obj):
            res = container.get("resources") or {}
            requests, limits = res.get("requests", {}), res.get("limits", {})
            for key in ("cpu", "memory", "nvidia.com/gpu"):
                assert str(requests.get(key)) == str(limits.get(key)), f"k8s/{target} {where} {key}"
    assert "nvidia.com/gpu" not in _limits(_workers(_one(rendered["overlays/cpu-dev"], "RayCluster")))


def test_gpu_workers_schedule_without_gpu_feature_discovery_labels(rendered):
    """nvidia.com/gpu.* node labels exist only where NVIDIA's GPU feature discovery runs: requiring them leaves
    the pods Pending elsewhere. The GPU request already keeps them on GPU nodes; tolerations are the patch point."""
    for overlay in ("gpu", "gpu-node", "s3-results"):
        pod = _workers(_one(rendered[f"overlays/{overlay}"], "RayCluster"))["template"]["spec"]
        terms = (
            ((pod.get("affinity") or {}).get("nodeAffinity") or {}).get(
                "requiredDuringSchedulingIgnoredDuringExecution"
            )
            or {}
        ).get("nodeSelectorTerms", [])
        keys = set(pod.get("nodeSelector") or {}) | {e["key"] for t in terms for e in t.get("matchExpressions", [])}
        assert not [k for k in keys if k.startswith("nvidia.com/gpu.")], f"overlays/{overlay}: {keys}"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    patch_point = yaml.safe_load((K8S / "overlays/gpu/raycluster.gpu-scheduling.yaml").read_text())
    assert {op["path"].rsplit("/", 1)[-1] for op in patch_point if op["op"] == "add"} == {"nodeSelector", "tolerations"}


@pytest.mark.parametrize("node_type", sorted(NODE_TYPES))
def test_gpu_overlays_fit_every_known_8_gpu_node(rendered, node_type):
    """8 one-GPU pods (overlays/gpu) or 1 eight-GPU pod (overlays/gpu-node) fit the node's allocatable next to
    its DaemonSets: no stranded 8th GPU (12 CPU x 8 = 96 does not fit a 96-vCPU node's ~95.7 allocatable)."""
    node = estimated_allocatable(NODE_TYPES[node_type])
    for overlay, pods in (("gpu", 8), ("gpu-node", 1)):
        limits = _limits(_workers(_one(rendered[f"overlays/{overlay}"], "RayCluster")))
        assert int(limits["nvidia.com/gpu"]) * pods == node["gpus"], overlay
        assert pods * parse_quantity(limits["cpu"]) <= node["cpu"] - DAEMONSET_CPU, (overlay, node)
        assert pods * parse_quantity(limits["memory"]) / 2**30 <= node["memory_gib"] - DAEMONSET_MEMORY_GIB, overlay


def test_the_head_outranks_ordinary_pods_and_is_not_evicted_voluntarily(rendered):
    for target, docs in rendered.items():
        for cluster in (o for o in docs if o["kind"] == "RayCluster"):
            head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
            priority = _one(docs, "PriorityClass", head["priorityClassName"])
            assert priority["value"] > 0 and priority.get("globalDefault") is False, target
            budget = _one(docs, "PodDisruptionBudget")
            assert budget["spec"]["maxUnavailable"] == 0, target
            assert budget["spec"]["selector"]["matchLabels"] == {
                "ray.io/cluster": "zerotune",
                "ray.io/node-type": "head",
            }
            annotations = _workers(cluster)["template"]["metadata"]["annotations"]
            assert annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false", target
            assert annotations["karpenter.sh/do-not-disrupt"] == "true", target


def test_autoscaler_v2_with_an_idle_timeout_longer_than_a_trial_gap(rendered):
    for target, cluster in _all(rendered, "RayCluster"):
        options = cluster["spec"]["autoscalerOptions"]
        assert options["version"] == "v2", target  # KubeRay applies its v2 settings only when named
        assert tuple(map(int, cluster["spec"]["rayVersion"].split("."))) >= (2, 10)
        assert options["idleTimeoutSeconds"] >= (60 if target == "overlays/cpu-dev" else 300), target


# --- storage: an explicit choice, never a silent default ----------------------------------------


def test_results_storage_is_an_explicit_choice(rendered):
    from cluster.sizing import find_placeholders

    for target, docs in rendered.items():
        left = find_placeholders(docs)
        if target in APPLY_AS_SHIPPED:
            assert not left, f"k8s/{target} is applied as shipped but still holds {left}"
        else:  # only the documented patch point may be left open
            assert {where for where, _ in left} <= {"PersistentVolumeClaim/zerotune-results.spec.storageClassName"}
        for pvc in (o for o in docs if o["kind"] == "PersistentVolumeClaim"):
            if "ReadWriteMany" in pvc["spec"]["accessModes"]:
                # RWX on the cluster's default class = a block disk on EKS/GKE/AKS: Pending forever
                assert pvc["spec"].get("storageClassName"), f"k8s/{target}: an RWX claim must name its class"
    assert find_placeholders(rendered["overlays/gpu"]), "overlays/gpu must ask for its RWX class"


def test_every_cluster_knows_where_its_results_go(rendered):
    for overlay in OVERLAYS:
        docs = rendered[f"overlays/{overlay}"]
        cluster = _one(docs, "RayCluster")
        head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in head.get("env", [])}
        secrets = {s["secretRef"]["name"] for s in head.get("envFrom", [])}
        pvcs = [o for o in docs if o["kind"] == "PersistentVolumeClaim"]
        if pvcs:
            assert env["ZEROTUNE_RESULTS"] == "/mnt/results" and not secrets, overlay
            for _, template in _pod_templates(cluster):
                mounts = {m["mountPath"]: m["name"] for m in template["spec"]["containers"][0]["volumeMounts"]}
                volumes = {v["name"]: v for v in template["spec"]["volumes"]}
                assert volumes[mounts["/mnt/results"]]["persistentVolumeClaim"]["claimName"] == "zerotune-results"
        else:  # object storage: the URI and the credentials come from the Secret
            assert "ZEROTUNE_RESULTS" not in env and secrets == {"zerotune-s3"}, overlay
            for _, template in _pod_templates(cluster):
                assert {"secretRef": {"name": "zerotune-s3"}} in template["spec"]["containers"][0]["envFrom"]
                assert "results" not in {v["name"] for v in template["spec"]["volumes"]}


# --- samples: one per overlay, sized for it, robust to a late ConfigMap ------------------------------


def test_one_sample_per_overlay_sized_for_its_worker_pods(rendered):
    sweeps_config = pytest.importorskip("sweeps.config")
    assert SAMPLES == OVERLAYS
    for name in SAMPLES:
        docs, overlay = rendered[f"samples/{name}"], rendered[f"overlays/{name}"]
        cluster, job, configmap = _one(overlay, "RayCluster"), _one(docs, "RayJob"), _one(docs, "ConfigMap")
        head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
        volume = next(v for v in head["volumes"] if v.get("configMap", {}).get("name") == configmap["metadata"]["name"])
        mount = next(m for m in head["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
        assert f"f={mount['mountPath']}/sweep.yaml" in job["spec"]["entrypoint"] and "sweep.yaml" in configmap["data"]
        cfg = sweeps_config.load_config(raw=yaml.safe_load(configmap["data"]["sweep.yaml"]))
        group, pod = _workers(cluster), _limits(_workers(cluster))
        gpus = int(pod.get("nvidia.com/gpu", 0))
        assert cfg.scaling.use_gpu == (gpus > 0), name
        per_pod = min(cfg.scaling.num_workers, gpus) if gpus else 1
        assert cfg.scaling.cpus_per_worker * per_pod <= parse_quantity(pod["cpu"]), name
        pods_per_trial = -(-cfg.scaling.num_workers // max(1, gpus))
        assert pods_per_trial * (cfg.search.max_concurrent_trials or 1) <= group["maxReplicas"], name


def test_sample_ray_jobs_are_submitted_by_the_operator_to_the_existing_cluster(rendered):
    for name in SAMPLES:
        job = _one(rendered[f"samples/{name}"], "RayJob")
        spec = job["spec"]
        assert spec["clusterSelector"] == {"ray.io/cluster": "zerotune"}
        # HTTPMode: no submitter pod, so no image to pull or rewrite per overlay (K8sJobMode would pull the
        # multi-GB head image, or need a per-overlay image the cpu-dev node could not pull).
        assert spec["submissionMode"] == "HTTPMode" and "submitterPodTemplate" not in spec
        assert spec.get("backoffLimit", 0) == 0  # KubeRay rejects retries with clusterSelector
    comment = (K8S / "samples/base/rayjob.sweep.yaml").read_text()
    assert (
        "delete this RayJob and apply it again" in comment and "Re-applying an unchanged RayJob does nothing" in comment
    )


def _entrypoint(rendered, tmp_path, *, bound: int | None = None) -> str:
    script = _one(rendered["samples/cpu-dev"], "RayJob")["spec"]["entrypoint"]
    # Only paths and timings change: the config folder, a 0.2 s poll instead of 2 s, and (for the give-up
    # branch) the bound on polls.
    script = script.replace("/etc/zerotune/sweeps", str(tmp_path / "sweeps")).replace("sleep 2", "sleep 0.2")
    return script if bound is None else script.replace("-gt 90", f"-gt {bound}")


@pytest.fixture
def stub_zerotune(tmp_path) -> dict:
    """PATH with a `zerotune` that fails unless its config file exists, like the real one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "zerotune"
    stub.write_text('#!/bin/sh\n[ -s "$3" ] || { echo "no such config: $3" >&2; exit 1; }\necho "ran: $*"\n')
    stub.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


def test_the_sample_entrypoint_waits_for_a_late_configmap(rendered, tmp_path, stub_zerotune):
    """The kubelet projects a ConfigMap created after the head started at its next sync (up to a minute or
    two): a submit that reads it at once fails for good (backoffLimit 0). The entrypoint waits instead."""
    import threading

    (tmp_path / "sweeps").mkdir()
    late = threading.Timer(0.5, lambda: (tmp_path / "sweeps" / "sweep.yaml").write_text("name: x\n"))
    late.start()
    env = {**stub_zerotune, "ZEROTUNE_RESULTS": "/mnt/results"}
    done = subprocess.run(
        ["sh", "-c", _entrypoint(rendered, tmp_path)], env=env, capture_output=True, text=True, timeout=30
    )
    late.join()
    assert done.returncode == 0, done.stderr
    assert "waiting for" in done.stdout
    assert done.stdout.strip().endswith(f"ran: sweep run {tmp_path}/sweeps/sweep.yaml storage.path=/mnt/results")
    # no config ever: a clear error naming the fix, not a sweep started on nothing
    (tmp_path / "sweeps" / "sweep.yaml").unlink()
    done = subprocess.run(
        ["sh", "-c", _entrypoint(rendered, tmp_path, bound=1)], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and "fix: apply the sample's ConfigMap" in done.stderr
    # no results location on the head: refused before the sweep starts
    (tmp_path / "sweeps" / "sweep.yaml").write_text("name: x\n")
    done = subprocess.run(
        ["sh", "-c", _entrypoint(rendered, tmp_path)], env=stub_zerotune, capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0 and "ZEROTUNE_RESULTS" in done.stderr and "ran:" not in done.stdout


# --- quota example, kind quickstart, README ------------------------------------------------------


def test_the_quota_example_admits_each_gpu_overlay_at_full_scale(rendered):
    quota = _one(rendered["quota"], "ResourceQuota")["spec"]["hard"]
    limit_range = _one(rendered["quota"], "LimitRange")["spec"]["limits"][0]
    # KubeRay's wait-gcs-ready init container states no ephemeral-storage: the LimitRange supplies it, and sets
    # no ephemeral-storage LIMIT (it would cap the Ray containers too and evict them when they spill).
    assert "ephemeral-storage" in limit_range["defaultRequest"] and "ephemeral-storage" not in limit_range["default"]
    for overlay in ("gpu", "gpu-node"):
        cluster = _one(rendered[f"overlays/{overlay}"], "RayCluster")
        group = _workers(cluster)
        head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
        worker = group["template"]["spec"]["containers"][0]["resources"]["requests"]
        for key in ("cpu", "memory", "nvidia.com/gpu", "ephemeral-storage"):
            total = group["maxReplicas"] * parse_quantity(worker.get(key, "0")) + parse_quantity(head.get(key, "0"))
            total += parse_quantity({"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"}.get(key, "0"))
            assert total <= parse_quantity(quota[f"requests.{key}"]), (overlay, key)


def test_the_kind_quickstart_config_is_a_one_node_cluster_that_enforces_network_policy():
    config = yaml.safe_load((K8S / "quickstart/kind/cluster.kind.yaml").read_text())
    assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    assert set(config) <= {"kind", "apiVersion", "name", "nodes", "networking"}
    (node,) = config["nodes"]  # cpu-dev's RWO volume: every pod on one node
    assert node["role"] == "control-plane"
    assert re.fullmatch(r"kindest/node:v1\.32\.\d+", node["image"])  # pinned, the Kubernetes the manifests target
    # kindnet (the default CNI) enforces NetworkPolicy since kind v0.24: keep it
    assert not (config.get("networking") or {}).get("disableDefaultCNI")


def _readme_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## On Kubernetes (KubeRay): the operator's path")
    end = text.index("\n## ", start + 10)
    return text[start:end]


def test_the_readme_walks_an_operator_from_an_empty_cluster_to_a_report():
    section = _readme_section()
    assert f"KubeRay {SUPPORTED_RELEASES[0]}" in section and "oldest" in section
    steps = [
        "kind create cluster --config k8s/quickstart/kind/cluster.kind.yaml",
        "helm install kuberay-operator",
        "kind load docker-image zerotune:dev",
        "create secret generic zerotune-ray-auth",
        "kubectl apply -k k8s/overlays/cpu-dev",
        "zerotune cluster wait",
        "kubectl apply -k k8s/samples/cpu-dev",
        "zerotune job logs",
        "zerotune report",
    ]
    positions = [section.find(step) for step in steps]
    assert -1 not in positions, [s for s, p in zip(steps, positions, strict=True) if p < 0]
    assert positions == sorted(positions), "the kind quickstart's steps are out of order"
    for cloud in ("EKS", "GKE", "AKS"):
        assert cloud in section
    for path in set(re.findall(r"k8s/[\w./-]+", section)):
        assert (REPO / path.rstrip(".")).exists(), f"README names {path}, which does not exist"
    assert "not exercised" in section.lower()


def test_overlay_fields_carry_comments():
    """Each patch op / overlay field has a comment line above it (the k8s/ convention)."""
    for path in sorted([*K8S.glob("overlays/*/*.yaml"), *K8S.glob("components/*/*.yaml")]):
        if path.name == "kustomization.yaml":
            continue
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("- op:"):  # an op that changes something
                assert lines[i - 1].lstrip().startswith("#"), f"{path.relative_to(REPO)}:{i + 1} has no comment"
