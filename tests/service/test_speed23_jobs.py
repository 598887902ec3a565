"""Population jobs embed with the encoder the service embeds with (its `encoder` setting), as
adapter jobs train on the generator it serves (`base`)."""

from __future__ import annotations

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_break20_delete import give_comparisons
from tests.service.tiny import start_service


@pytest.mark.parametrize("kind", ["pal", "em"])
def test_a_population_job_embeds_with_the_services_encoder(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, kind):
    """Before: every PAL or EM job embedded with sentence-transformers' MiniLM whatever the service's
    `encoder` (default minilm-onnx): 6 to 9 s of loading per job here, and a service on
    `minilm-onnx-int8` or `smollm2` trained population models on vectors of another encoder than
    the one it scores with. The job's params name the encoder and its command line passes it; a
    request may not choose it."""
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    assert svc.runtime.settings.encoder == "minilm-onnx"  # the default setting (the tests' service embeds with `minilm` itself)
    with server, svc.client("acme") as acme, svc.client("admin") as admin:
        give_comparisons(acme, "ann", "tea", n=2)
        refused = admin.post("/admin/jobs", json={"kind": kind, "params": {"encoder": "smollm2"}})
        assert refused.status_code == 400 and "params.encoder" in refused.text, refused.text
        r = admin.post("/admin/jobs", json={"kind": kind, "params": {"k": 1}})
        assert r.status_code == 201, r.text
        assert r.json()["params"]["encoder"] == "minilm-onnx", r.json()["params"]
        assert admin.post(f"/admin/jobs/{r.json()['id']}/cancel").status_code == 200  # its run: every population job test
