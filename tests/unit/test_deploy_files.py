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


def test_the_manifests_embeddings_server_reads_what_the_local_encoder_reads():
    """Session remote53: the manifest suggested TEI (`PLURALIGN_ENCODER=openai:http://embeddings:80/v1`) with no server
    to run, and the docs TEI without `--auto-truncate`: a text past its max input length was a 413, where the local
    encoder embeds its first 256 word pieces. TEI takes its max input length from the model's
    `sentence_bert_config.json` (`max_seq_length`; else `max_position_embeddings`, 512 for MiniLM): the local MiniLM
    folder's says what the local encoder reads, and the `embeddings` Deployment serves that model with `--auto-truncate`,
    behind the Service the ConfigMap names."""
    import json

    from pluralign.embed.models import MINILM_ID, minilm_path
    from pluralign.embed.named import IDENTITIES

    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "pluralign.yaml").read_text()) if d]
    tei = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "embeddings")
    container = tei["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert "--auto-truncate" in args and args[args.index("--model-id") + 1] == MINILM_ID, args
    port = int(args[args.index("--port") + 1])
    assert container["ports"] == [{"containerPort": port}]
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "embeddings")
    assert service["spec"]["ports"] == [{"port": 80, "targetPort": port}]  # the ConfigMap's openai:http://embeddings:80/v1
    assert "openai:http://embeddings:80/v1" in (DEPLOY / "k8s" / "pluralign.yaml").read_text()
    st_config = json.loads((Path(minilm_path()) / "sentence_bert_config.json").read_text())
    assert st_config["max_seq_length"] == IDENTITIES[MINILM_ID].max_length == 256


def test_the_embeddings_server_runs_only_where_the_settings_send_texts_to_it():
    """Review remote53: the `embeddings` Deployment (TEI, a GPU) ran with one replica while the ConfigMap's
    PLURALIGN_ENCODER embeds in the API pods (`minilm`): `kubectl apply` took a GPU nothing sent a text to (or, on a
    cluster without a free one, left a pod Pending for ever). Now it runs (replicas > 0) exactly when PLURALIGN_ENCODER
    names its Service."""
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "pluralign.yaml").read_text()) if d]
    settings = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "pluralign-settings")["data"]
    tei = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "embeddings")
    used = settings["PLURALIGN_ENCODER"] == "openai:http://embeddings:80/v1"
    assert (tei["spec"]["replicas"] > 0) == used, (settings["PLURALIGN_ENCODER"], tei["spec"]["replicas"])
