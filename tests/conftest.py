"""Shared fixtures: offline hubs, the real data folder, a small cached encoder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def _no_current_test_var() -> None:
    """pytest sets, then deletes, PYTEST_CURRENT_TEST at each phase of each test: two environment writes
    (setenv, unsetenv: glibc may reallocate the environment array) while LanceDB's threads, still at work
    for a module's service, read the environment with getenv. glibc (2.36 here) does not make getenv safe
    against that; the same race, 83 writes a call, crashed xdist workers in `datasets` tests (crash
    session 38, tests/unit/test_crash38_datasets_apart.py). The variable is only a debugging aid: unset."""
    import _pytest.runner

    if hasattr(_pytest.runner, "_update_current_test_var"):  # a private name: a later pytest may not have it
        _pytest.runner._update_current_test_var = lambda item, when: None


_no_current_test_var()

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PLURALIGN_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def one_torch_thread():
    """Tiny matrices: one torch thread avoids oversubscribing a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def hf():
    """Hugging Face `datasets` in a process of its own (tests/hf_datasets.py), one per pytest worker: a test
    runs its `datasets` steps there, never in the worker (tests/unit/test_crash38_datasets_apart.py)."""
    from tests.hf_datasets import DatasetsProcess

    with DatasetsProcess() as process:
        yield process


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "ukp_convarg1").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sentence_encoder():
    """The real MiniLM sentence encoder, loaded once per process (seconds): both `minilm` fixtures
    (this one's cached, tests/service/tiny.py's plain) share it."""
    from pluralign.embed.encoders import SentenceEncoder

    return SentenceEncoder()


@pytest.fixture(scope="session")
def minilm(sentence_encoder):
    """The real MiniLM sentence encoder, cached on disk for the whole session: in the file the CLI
    tests pass as `--cache` (tests/unit/test_cli.py), which every xdist worker shares too (SQLite in WAL
    mode; a writer waits for another's transaction). On a fresh checkout the ~900 persona texts that
    tests/models and the CLI's eval embed are then embedded once, not once per worker and again by the CLI."""
    from pluralign.embed.cache import CachedEncoder, EmbeddingCache

    cache_dir = Path(os.environ.get("PLURALIGN_CACHE_DIR", REPO / ".cache" / "pluralign"))
    return CachedEncoder(sentence_encoder, EmbeddingCache(cache_dir / "test-embeddings.sqlite"))


@pytest.fixture(scope="session")
def embeddings_server(tmp_path_factory):
    """`pluralign serve-embeddings` (MiniLM) in a process of its own, started once per session (seconds)
    for every module that embeds through it: (URL, its log file)."""
    from tests.processes import serve_embeddings

    with serve_embeddings(tmp_path_factory.mktemp("embeddings")) as (url, log):
        yield url, log
