"""What the admin routes show of a job record written before session remote50, whose adapter job kept the service's
`openai:` generator URL whole as its `base` (and its worker's error and log lines repeated it)."""

from __future__ import annotations

from service.admin.paths import PublicPaths
from training.jobs.record import Job

URL = "openai:http://pluralign:hunter2-pw@vllm:8000/v1?api_key=sk-secret-1"


def test_an_earlier_records_generator_url_is_shown_without_its_credentials(tmp_path):
    """Before (remote50) `PublicPaths` showed a URL as it is: the password and the key in the admin routes' answers."""
    job = Job(id="19c0ffee000-aaaaaaaa", kind="adapter", state="failed", created_at=0.0,
              params={"user": "rae", "tenant": "acme", "base": URL, "data": f"{tmp_path}/jobs/data/acme/rae-1.jsonl"},
              error=f"exit code 2: --base must be `smollm2` or a transformers model folder, got {URL}",
              log_tail=[f"$ -m training.cli train adapter --base={URL} --registry={tmp_path}/jobs/artifacts/x"])
    shown = PublicPaths(tmp_path).job(job)
    assert shown.params["base"] == "openai:http://pluralign:***@vllm:8000/v1?api_key=***"
    assert shown.params["data"] == "jobs/data/acme/rae-1.jsonl"
    assert shown.error.endswith("got openai:http://pluralign:***@vllm:8000/v1?api_key=***")
    assert shown.log_tail == ["$ -m training.cli train adapter --base=openai:http://pluralign:***@vllm:8000/v1?api_key=*** "
                              "--registry=jobs/artifacts/x"]
    assert "hunter2" not in repr(shown) and "sk-secret" not in repr(shown)
