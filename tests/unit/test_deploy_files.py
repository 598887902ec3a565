"""deploy/'s compose file and Kubernetes manifests, checked offline (no Docker or cluster here): they
parse, name only settings that exist, and the replica count agrees with the StatefulSet's."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from service.settings import ENV_PREFIX, Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SETTING = re.compile(r"\bPLURALIGN_[A-Z_]+\b")


def test_every_pluralign_variable_in_deploy_is_a_setting():
    known = {ENV_PREFIX + name.upper() for name in Settings.__struct_fields__} | {"PLURALIGN_CONFIG", "PLURALIGN_MODEL_CACHE"}
    for path in [*DEPLOY.rglob("*.yaml"), DEPLOY / "Dockerfile", DEPLOY / "README.md"]:
        unknown = set(SETTING.findall(path.read_text())) - known
        assert not unknown, f"{path.name} names settings that do not exist: {sorted(unknown)}"


def test_manifests_parse_and_agree():
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "pluralign.yaml").read_text()) if d]
    assert all({"apiVersion", "kind", "metadata"} <= d.keys() for d in docs)
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    api = next(d for d in docs if d["kind"] == "StatefulSet")
    assert int(config["PLURALIGN_REPLICAS"]) == api["spec"]["replicas"]
    Settings.load({k: str(v) for k, v in config.items()}, replica_index=api["spec"]["replicas"] - 1)  # a valid set of settings
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    env = compose["services"]["api"]["environment"]
    settings = Settings.load({k: str(v) for k, v in env.items()})
    assert settings.storage_options["aws_endpoint"] == "http://minio:9000"
