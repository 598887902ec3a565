"""Shared fixtures: offline hubs, the real data folder, a small cached encoder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

# set-up that test files shared moved into these modules (dedupe45): their asserts say what they found, as a test's do
pytest.register_assert_rewrite("tests.stores", "tests.serving")


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


def _one_default_ssl_context() -> None:
    """Every httpx client (a test's `Service.client()`, `httpx.get`, the openai SDK's) built its own SSL
    context with the default `verify=True`, loading every CA certificate (certifi's, or SSL_CERT_FILE's:
    this machine sets it) each time: 34 ms of CPU on the shared machine, for a client that only ever
    speaks plain HTTP to 127.0.0.1; two files' 120 tests built 247. httpx's advice is to share one
    context: the default one is made once per process (and per SSL_CERT_FILE / SSL_CERT_DIR, read as
    httpx reads them). Anything else (`verify=False`, a context or a `cert` of the test's own) goes the
    usual way. `create_ssl_context` is public, its import into the transport module is not: a later
    httpx without it only makes the tests slower again."""
    import httpx._transports.default as transport

    made = getattr(transport, "create_ssl_context", None)
    if made is None:
        return
    shared: dict[tuple, object] = {}

    def create_ssl_context(verify=True, cert=None, trust_env=True):
        if verify is not True or cert is not None:
            return made(verify=verify, cert=cert, trust_env=trust_env)
        key = (trust_env, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")) if trust_env else (False,)
        if key not in shared:
            shared[key] = made(verify=True, cert=None, trust_env=trust_env)
        return shared[key]

    transport.create_ssl_context = create_ssl_context


_one_default_ssl_context()


def _a_home_of_the_suites_own() -> Path:
    """HOME, for this process and every process it starts (`pluralign serve`, job workers, the CLI), is an empty
    folder of its own, removed at exit: the embedding cache the CLI and the jobs default to
    (~/.cache/pluralign/embeddings.sqlite, `pluralign.embed.cache.default_cache_path`) and the one every DELETE
    cleans (`home_cache_path`) were the developer's real one, shared by both xdist workers and the developer's
    own runs. A job worker a test stopped there (tests/service/test_break20_delete.py) held its lock, and another
    worker's DELETE waited a minute on it (full run of session 45). What the suite only reads from the real home
    stays there, named before HOME moves: the converted models (PLURALIGN_MODEL_CACHE, 1.2 GB, minutes to
    make) and matplotlib's font list. A variable already set is kept."""
    import atexit
    import shutil
    import tempfile

    real = Path.home()
    os.environ.setdefault("PLURALIGN_MODEL_CACHE", str(real / ".cache" / "pluralign" / "models"))
    os.environ.setdefault("MPLCONFIGDIR", str(real / ".cache" / "matplotlib"))
    home = Path(tempfile.mkdtemp(prefix="pluralign-tests-home-"))
    os.environ["HOME"] = str(home)
    atexit.register(shutil.rmtree, home, True)
    return home


def _fewer_garbage_collections() -> None:
    """Python collects its youngest objects every 700 allocations net (`gc.get_threshold()`), and walks every object
    the collector tracks (a full collection) at one in 100 of those, when enough had grown old: 0.25-0.4 s of CPU each
    over a test process's heap (torch, transformers, LanceDB, the models: 600,000 objects and more), walked again and
    again for the same objects, which a test frees by reference count (cycles are rare). 12 full collections took
    3.0 of 21 CPU-s of five service test files (the service freezes its started heap, `service.heap`, but thaws it
    at each stop), and collecting the suite took 46 CPU-s a process. A young generation of 20,000 objects (not 700)
    makes every generation's collections 28 times rarer: 1 full collection in those files, the collection 31 CPU-s.
    Cycles are still collected, later; a test that needs its garbage gone calls `gc.collect()`."""
    import gc

    gc.set_threshold(20_000, *gc.get_threshold()[1:])


_fewer_garbage_collections()

SUITE_HOME = _a_home_of_the_suites_own()

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
    (this one's cached on disk, tests/service/tiny.py's remembering in memory) share it."""
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
