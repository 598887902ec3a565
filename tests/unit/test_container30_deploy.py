"""deploy/ for a locked-down cluster: every object of the Kubernetes manifest validates against the
Kubernetes API's own schema (kubernetes-validate, strict: a misspelt field is an error), the API pods
meet Pod Security's `restricted` profile with a read-only root and a writable /tmp, their probes are
the ones /health is for, and the image runs as a non-root user. No cluster here: checked offline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES = "1.34"  # the oldest release the manifest is written for (the pod-index label needs >= 1.28)


def manifest() -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "pluralign.yaml").read_text()) if d]


def api_pod() -> dict:
    return next(d for d in manifest() if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]


def test_every_object_validates_against_the_kubernetes_schema():
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (requirements.txt) is not installed")
    for doc in manifest():
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)  # raises naming the field


def test_the_api_pods_meet_the_restricted_pod_security_profile():
    pod = api_pod()
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["fsGroup"]  # the volumes writable by the uid, setgid: shared with the group
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]  # torch and Lance need a writable temporary folder
    assert not any(v.get("hostPath") for v in pod["volumes"])


def test_the_vllm_pod_meets_the_restricted_pod_security_profile():
    """Session 33. Before: the vLLM Deployment had no securityContext: root, privilege escalation allowed,
    the runtime's default capabilities, no seccomp profile (refused by a namespace enforcing `restricted`)."""
    pod = next(d for d in manifest() if d["kind"] == "Deployment" and d["metadata"]["name"] == "vllm")["spec"]["template"]["spec"]
    context = pod.get("securityContext", {})
    assert context.get("runAsNonRoot") is True and context.get("runAsUser", 0) != 0, context
    assert context.get("seccompProfile") == {"type": "RuntimeDefault"}, context
    for container in pod["containers"]:
        own = container.get("securityContext", {})
        assert own.get("allowPrivilegeEscalation") is False and own.get("capabilities") == {"drop": ["ALL"]}, own
        assert own.get("runAsUser", context["runAsUser"]) != 0 and own.get("privileged") is not True
        # a non-root HOME it can write (the image's is root's): an emptyDir mounted there
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts[env["HOME"]]], (env, mounts)
    assert not any(v.get("hostPath") for v in pod["volumes"])


def test_probes_match_what_health_says():
    """/health answers once the models are loaded, 200 also when `degraded` (a restart would not mend a
    full disk): a startup probe long enough for a first start's PAL bootstrap, readiness on it, and liveness on
    /health too, through an exec probe that counts the over-limit 503 as alive (tests/e2e/test_live37_liveness.py)."""
    container = api_pod()["containers"][0]
    probes = {name: container[name] for name in ("startupProbe", "readinessProbe")}
    assert all(p["httpGet"] == {"path": "/health", "port": "http"} for p in probes.values())  # the container port named `http`
    assert "'/health'" in container["livenessProbe"]["exec"]["command"][-1]
    startup = probes["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 180
    assert api_pod()["terminationGracePeriodSeconds"] >= 15  # the 5 s graceful wait and the tables closing


def test_the_image_runs_as_a_non_root_user():
    users = re.findall(r"^USER\s+(\S+)", (DEPLOY / "Dockerfile").read_text(), flags=re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_a_key_revoked_in_the_secret_stops_working_in_running_pods(tmp_path):
    """The API keys are a Secret. Mounted with `subPath` (as before), kubelet never updates the file: a key
    revoked in the Secret stayed valid until the pod restarted, though deploy/README.md promised the next
    request. Now the data folder's key file is a link to the Secret's mounted folder (an init container makes
    it); here kubelet's update of such a folder (a new `..data` swapped in) is played against the real KeyRing."""
    import shlex

    from service.auth import KeyRing

    pod = api_pod()
    secrets = {v["name"] for v in pod["volumes"] if "secret" in v}
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        assert not [m for m in container.get("volumeMounts", []) if m["name"] in secrets and "subPath" in m], container["name"]
    (keys_mount,) = [m["mountPath"] for m in pod["containers"][0]["volumeMounts"] if m["name"] in secrets]
    (link,) = [c for c in pod.get("initContainers", []) if "ln -sfn" in " ".join(c["command"])]
    assert link["securityContext"] == pod["containers"][0]["securityContext"]  # restricted as the API container
    target, name = shlex.split(link["command"][-1])[-2:]
    assert target == f"{keys_mount}/api_keys.json" and name == "/var/lib/pluralign/api_keys.json"

    # kubelet's layout of a Secret volume: api_keys.json -> ..data/api_keys.json, ..data -> a timestamped folder
    secret, data = tmp_path / keys_mount.strip("/"), tmp_path / "var/lib/pluralign"
    data.mkdir(parents=True)
    writer = KeyRing(tmp_path / "admin" / "api_keys.json")  # where the operator makes the Secret's file
    key, other = writer.issue("acme", name="old"), writer.issue("acme", name="new")

    def kubelet_writes(version: str) -> None:
        folder = secret / f"..{version}"
        folder.mkdir(parents=True)
        (folder / "api_keys.json").write_bytes(writer.path.read_bytes())
        (secret / "..data_tmp").symlink_to(folder.name)
        (secret / "..data_tmp").replace(secret / "..data")
        if not (secret / "api_keys.json").is_symlink():
            (secret / "api_keys.json").symlink_to("..data/api_keys.json")

    kubelet_writes("2026_12_04_03_00_00.1")
    (tmp_path / name.strip("/")).symlink_to(tmp_path / target.strip("/"))  # what link-keys makes
    served = KeyRing(data / "api_keys.json")
    assert served.lookup(key) is not None and served.lookup(other) is not None
    writer.revoke("old")  # kubectl edits the Secret; kubelet swaps its folder in
    kubelet_writes("2026_12_04_03_01_00.2")
    assert served.lookup(key) is None and served.lookup(other) is not None  # at the next request
