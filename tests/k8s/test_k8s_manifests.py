"""k8s/: every kustomization renders, validates against its schema, and is secure by default.

Rendering is `kubectl kustomize` (offline). RayCluster/RayJob are checked against the KubeRay
CRDs' v1 openAPIV3Schema (vendored in schemas/, made strict: unknown fields are errors, as
with `kubectl apply --validate=strict`); core objects and every pod template against
kubernetes-validate's strict schemas. No API server is involved.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
KUBE_VERSION = "1.32.0"  # the kubectl/kustomize these manifests are written for
TARGETS = ["base", *sorted(f"overlays/{p.name}" for p in (K8S / "overlays").iterdir() if p.is_dir()), "samples"]
CRD_SCHEMAS = {("ray.io/v1", "RayCluster"): "raycluster.v1.json", ("ray.io/v1", "RayJob"): "rayjob.v1.json"}
DASHBOARD_PORT = 8265


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


@pytest.fixture(scope="module")
def crd_validators():
    import jsonschema

    validators = {}
    for key, file in CRD_SCHEMAS.items():
        schema = _strict(json.loads((SCHEMAS / file).read_text())["openAPIV3Schema"])
        validators[key] = jsonschema.Draft7Validator(schema)
    return validators


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
    autoscaler = (obj.get("spec") or {}).get("autoscalerOptions")
    if obj["kind"] == "RayCluster" and obj["spec"].get("enableInTreeAutoscaling"):
        # KubeRay builds this sidecar from autoscalerOptions; its pod is the head's.
        head_pod = obj["spec"]["headGroupSpec"]["template"]["spec"]
        found.append(("head/autoscaler", autoscaler or {}, head_pod))
    return found


def _all(rendered, kind=None):
    for target, docs in rendered.items():
        for obj in docs:
            if kind is None or obj["kind"] == kind:
                yield target, obj


@pytest.mark.parametrize("target", TARGETS)
def test_renders_and_validates(rendered, crd_validators, target):
    import kubernetes_validate

    docs = rendered[target]
    assert docs, f"k8s/{target} rendered nothing"
    for obj in docs:
        where = f"k8s/{target}: {obj['kind']}/{obj['metadata']['name']}"
        key = (obj["apiVersion"], obj["kind"])
        if key in crd_validators:
            errors = sorted(crd_validators[key].iter_errors(obj), key=lambda e: list(e.path))
            assert not errors, where + "\n" + "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])
            for _, template in _pod_templates(obj):
                pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": template["spec"]}
                kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)
        else:
            assert obj["apiVersion"] in {"v1", "rbac.authorization.k8s.io/v1", "networking.k8s.io/v1"}, where
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_strict_crd_validation_catches_a_typo(rendered, crd_validators):
    # Guards the guard: a misspelt field must fail, or the check above proves nothing.
    cluster = copy.deepcopy(next(obj for _, obj in _all(rendered, "RayCluster")))
    cluster["spec"]["autoscalerOptions"]["idleTimeoutSecond"] = 60
    assert list(crd_validators[("ray.io/v1", "RayCluster")].iter_errors(cluster))


def test_every_object_is_namespaced_to_zerotune(rendered):
    for target, obj in _all(rendered):
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "zerotune", (
                f"k8s/{target}: {obj['kind']} {obj['metadata']['name']}"
            )


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
    clusters = sum(1 for _ in _all(rendered, "RayCluster"))
    # head + autoscaler + worker per RayCluster, plus the RayJob submitter
    assert checked == 3 * clusters + 1


def test_ray_needs_writable_scratch_and_shared_memory(rendered):
    for target, obj in _all(rendered, "RayCluster"):
        for where, template in _pod_templates(obj):
            pod = template["spec"]
            volumes = {v["name"]: v for v in pod["volumes"]}
            mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp/ray"]], f"k8s/{target} {where}: /tmp/ray"
            assert volumes[mounts["/dev/shm"]]["emptyDir"].get("medium") == "Memory", f"k8s/{target} {where}"


def test_gpu_requests_equal_limits_and_gpu_overlay_has_gpus(rendered):
    gpu_containers = 0
    for target, obj in _all(rendered):
        for where, container, _ in _containers(obj):
            res = container.get("resources") or {}
            requests, limits = res.get("requests", {}), res.get("limits", {})
            if "nvidia.com/gpu" in requests or "nvidia.com/gpu" in limits:
                assert str(requests.get("nvidia.com/gpu")) == str(limits.get("nvidia.com/gpu")), f"k8s/{target} {where}"
                gpu_containers += 1
    assert gpu_containers >= 3  # base, gpu, s3-results worker groups

    def worker(target):
        cluster = next(o for o in rendered[target] if o["kind"] == "RayCluster")
        return cluster["spec"]["workerGroupSpecs"][0]

    gpu = worker("overlays/gpu")
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu["template"]["spec"]["tolerations"])
    assert gpu["maxReplicas"] > worker("base")["maxReplicas"]
    dev = worker("overlays/cpu-dev")
    assert "nvidia.com/gpu" not in json.dumps(dev["template"]["spec"]["containers"][0]["resources"])


def test_token_auth_is_on_and_no_token_is_committed(rendered):
    for target, obj in _all(rendered, "RayCluster"):
        auth = obj["spec"].get("authOptions") or {}
        assert auth.get("mode") == "token", f"k8s/{target}"
        assert auth.get("secretName") == "zerotune-ray-auth", f"k8s/{target}"
    for target, obj in _all(rendered):
        assert obj["kind"] != "Secret", f"k8s/{target} carries a Secret; create tokens out of band"
    job = next(obj for _, obj in _all(rendered, "RayJob"))
    env = {e["name"]: e for e in job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "zerotune-ray-auth", "key": "auth_token"}


def test_dashboard_is_not_exposed_outside_the_cluster(rendered):
    for target, obj in _all(rendered):
        if obj["kind"] == "Service":
            ports = {p.get("port") for p in obj["spec"].get("ports", [])}
            assert not (obj["spec"].get("type") in {"LoadBalancer", "NodePort"} and DASHBOARD_PORT in ports), target
        assert obj["kind"] not in {"Ingress", "Route"}, f"k8s/{target} exposes {obj['kind']}"
        if obj["kind"] == "RayCluster":
            head = obj["spec"]["headGroupSpec"]
            # KubeRay creates the head Service from these two fields.
            assert head.get("serviceType", "ClusterIP") == "ClusterIP", f"k8s/{target}"
            assert head.get("enableIngress", False) is False, f"k8s/{target}"
            assert "headService" not in head, f"k8s/{target}: a custom head Service needs its own check"


def test_network_policy_selects_the_head_and_admits_only_known_peers(rendered):
    for target, docs in rendered.items():
        clusters = [o for o in docs if o["kind"] == "RayCluster"]
        if not clusters:
            continue
        name = clusters[0]["metadata"]["name"]
        head_labels = {"ray.io/cluster": name, "ray.io/node-type": "head"}  # what KubeRay labels the head with
        policies = [o for o in docs if o["kind"] == "NetworkPolicy"]
        head_policies = [
            p
            for p in policies
            if p["spec"]["podSelector"].get("matchLabels", {}).items() <= head_labels.items()
            and "Ingress" in p["spec"]["policyTypes"]
        ]
        assert head_policies, f"k8s/{target}: no NetworkPolicy selects the head"
        for policy in head_policies:
            for rule in policy["spec"]["ingress"]:
                assert rule.get("from"), f"k8s/{target}: an ingress rule without `from` admits everyone"
                for peer in rule["from"]:
                    assert "ipBlock" not in peer, f"k8s/{target}: ipBlock peers are not expected"
                    ns = peer.get("namespaceSelector")
                    if ns is not None:
                        # a named namespace, never `{}` (all namespaces)
                        assert ns.get("matchLabels", {}).get("kubernetes.io/metadata.name"), f"k8s/{target}"
                    else:
                        assert peer["podSelector"].get("matchLabels"), f"k8s/{target}: empty podSelector"
                if any(
                    "namespaceSelector" in p or "zerotune.io/ray-job-submitter" in json.dumps(p) for p in rule["from"]
                ):
                    # outsiders get the client ports only, never GCS (6379)
                    assert {p["port"] for p in rule["ports"]} <= {DASHBOARD_PORT, 10001}, f"k8s/{target}"
            own = [
                r
                for r in policy["spec"]["ingress"]
                if r["from"] == [{"podSelector": {"matchLabels": {"ray.io/cluster": name}}}]
            ]
            assert own, f"k8s/{target}: the cluster's own pods must reach the head"


def test_autoscaling_rbac_and_versions(rendered):
    for docs in rendered.values():
        clusters = [o for o in docs if o["kind"] == "RayCluster"]
        if not clusters:
            continue
        spec = clusters[0]["spec"]
        assert spec["rayVersion"] == "2.60.0"
        assert spec["enableInTreeAutoscaling"] is True
        assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
        images = {c["image"] for _, c, _ in _containers(clusters[0]) if "image" in c}
        assert all(":" in i and not i.endswith(":latest") for i in images), images  # pinned tags
        sa = spec["headGroupSpec"]["template"]["spec"]["serviceAccountName"]
        bindings = [o for o in docs if o["kind"] == "RoleBinding" and any(s["name"] == sa for s in o["subjects"])]
        assert len(bindings) == 1
        role = next(o for o in docs if o["kind"] == "Role" and o["metadata"]["name"] == bindings[0]["roleRef"]["name"])
        granted = {
            (g, r, v)
            for rule in role["rules"]
            for g in rule["apiGroups"]
            for r in rule["resources"]
            for v in rule["verbs"]
        }
        # exactly what KubeRay's autoscaler needs: no create/delete, no secrets, nothing cluster-wide
        assert granted == {
            ("", "pods", "get"),
            ("", "pods", "list"),
            ("", "pods", "watch"),
            ("", "pods", "patch"),
            ("ray.io", "rayclusters", "get"),
            ("ray.io", "rayclusters", "patch"),
        }
        assert not [o for o in docs if o["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
        for group in spec["workerGroupSpecs"]:
            assert group["template"]["spec"].get("automountServiceAccountToken") is False


def test_results_storage_is_shared(rendered):
    for target in ("base", "overlays/gpu"):
        pvc = next(o for o in rendered[target] if o["kind"] == "PersistentVolumeClaim")
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], target
    s3 = rendered["overlays/s3-results"]
    assert not [o for o in s3 if o["kind"] == "PersistentVolumeClaim"]
    cluster = next(o for o in s3 if o["kind"] == "RayCluster")
    for _, template in _pod_templates(cluster):
        container = template["spec"]["containers"][0]
        assert {"secretRef": {"name": "zerotune-s3"}} in container["envFrom"]
        assert "results" not in {v["name"] for v in template["spec"]["volumes"]}


def test_sample_ray_job_runs_a_sweep_from_the_configmap_on_the_cluster(rendered):
    docs = rendered["samples"]
    job = next(o for o in docs if o["kind"] == "RayJob")
    configmap = next(o for o in docs if o["kind"] == "ConfigMap")
    base_cluster = next(o for o in rendered["base"] if o["kind"] == "RayCluster")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": base_cluster["metadata"]["name"]}
    head = base_cluster["spec"]["headGroupSpec"]["template"]["spec"]
    config_volume = next(
        v for v in head["volumes"] if v.get("configMap", {}).get("name") == configmap["metadata"]["name"]
    )
    mount = next(m for m in head["containers"][0]["volumeMounts"] if m["name"] == config_volume["name"])
    entry = job["spec"]["entrypoint"].split()
    assert entry[:3] == ["zerotune", "sweep", "run"]
    config_path = Path(entry[3])
    assert config_path.parent == Path(mount["mountPath"]) and config_path.name in configmap["data"]
    results_mount = next(m for m in head["containers"][0]["volumeMounts"] if m["name"] == "results")
    assert f"storage.path={results_mount['mountPath']}" in entry
    # the config itself must load with the project's own loader
    sweeps_config = pytest.importorskip("sweeps.config")
    cfg = sweeps_config.load_config(raw=yaml.safe_load(configmap["data"][config_path.name]))
    assert cfg.storage.path == results_mount["mountPath"]


def test_overlay_fields_carry_comments():
    """Each patch op / overlay field has a comment line above it (the issue's convention)."""
    for path in sorted((K8S / "overlays").glob("*/*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("- op:"):  # an op that changes something
                assert lines[i - 1].lstrip().startswith("#"), f"{path.relative_to(REPO)}:{i + 1} has no comment"


def test_vendored_crd_schemas_match_the_shared_copies():
    """The vendored schemas are the v1 openAPIV3Schema of ../shared/schemas/kuberay (hash-pinned)."""
    import hashlib

    shared = REPO.parent / "shared" / "schemas" / "kuberay"
    if not shared.is_dir():
        pytest.skip("no ../shared/schemas/kuberay next to the repo to compare against")
    for ours in CRD_SCHEMAS.values():
        vendored = json.loads((SCHEMAS / ours).read_text())
        digest = hashlib.sha256((shared / vendored["source_file"]).read_bytes()).hexdigest()
        assert digest == vendored["source_sha256"], f"{vendored['source_file']} changed: re-extract {ours}"
