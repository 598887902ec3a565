"""Review session 37: a user's preference export, loaded with `datasets` and written back with `to_json` (to
filter or edit it), imports again. Since the service keeps each row's TRL form, a user's export can hold an
implicit-prompt row (no `prompt` column) beside an explicit one (feedback, or another import): `datasets`
gives the implicit row `"prompt": null`, and that was refused (`line 1.prompt`: expected a string or a
non-empty list of messages) by the service and the `pluralign` commands, though the same dataset written with
`to_parquet` read (a null there is an absent value). Now a null `prompt` is the implicit-prompt form in JSON
lines too."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.hf_datasets import DatasetsProcess
from tests.service.tiny import start_service

IMPLICIT = {"chosen": "Q: Red or blue? A: Red.", "rejected": "Q: Red or blue? A: Blue."}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("r37-null-prompt"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


def test_an_export_rewritten_by_datasets_imports_again(svc, tmp_path):
    with svc.client("acme") as c:
        assert c.post("/v1/users/np/import", content=json.dumps(IMPLICIT)).status_code == 201
        assert c.post("/v1/feedback", json={"type": "comparison", "user": "np", "prompt": "Milk?", "chosen": "Yes.", "rejected": "No."}).status_code == 201
        export = c.get("/v1/users/np/export", params={"format": "preferences"}).content
    (tmp_path / "export.jsonl").write_bytes(export)
    rewritten = tmp_path / "rewritten.jsonl"
    with DatasetsProcess() as hf:  # a user's own script, not this worker, which hosts the service's threads
        hf.run("datasets.load_dataset('json', data_files=src, split='train').to_json(out)",
               src=str(tmp_path / "export.jsonl"), out=str(rewritten))
    assert b'"prompt":null' in rewritten.read_bytes()  # what `datasets` writes for the implicit row
    body = rewritten.read_bytes().replace(b'"np"', b'"np2"')
    with svc.client("acme") as c:
        r = c.post("/v1/users/np2/import", content=body)
        assert r.status_code == 201, r.text  # before: 400 `line 1.prompt`
        again = c.get("/v1/users/np2/export", params={"format": "preferences"}).content
    assert again == export.replace(b'"np"', b'"np2"')  # the implicit row is implicit again, its text the same
    cli = subprocess.run([sys.executable, "-m", "training.cli", "data", "export", "--source", "jsonl", "--path", str(rewritten),
                          "--out", str(tmp_path / "cli.jsonl")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr  # before: exit 2, `line 1, field `prompt``
    assert "prompt" not in json.loads((tmp_path / "cli.jsonl").read_text().splitlines()[0])


def test_a_null_prompt_without_a_shared_one_still_names_the_prompt(svc):
    with svc.client("acme") as c:
        r = c.post("/v1/users/np3/import", content=json.dumps({"prompt": None, "chosen": "Red.", "rejected": "Blue."}))
    assert r.status_code == 400 and r.json()["error"]["param"] == "line 1.prompt", r.text
    assert "share no prompt" in r.text, r.text
