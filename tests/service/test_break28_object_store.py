"""Session 28: the service on an object store (moto's S3 on loopback, `tests/s3.py`) that goes away,
refuses the keys, throttles or hangs while the service runs, with the real app over HTTP.

Before: every request that needed the store was answered 503 saying "a file of it is damaged or
unreadable" (the operator restores a backup for a bucket that only needed its endpoint back); a hung
store held a chat for minutes (object_store's 30 s a request, retried for up to 180 s, several requests
a read); the ingest worker logged its failure every few seconds (its words named a new file each try,
so "once a minute" never held); a 403's S3 body, naming the access key id, went to the log as it was;
and /health stayed "degraded" for 10 minutes after the store answered again."""

from __future__ import annotations

import logging

import pytest

from tests.s3 import FaultyProxy, S3Server
from tests.service.test_break20_delete import give_comparisons
from tests.service.test_break27_storage import chat, comparison
from tests.service.test_delete_journal import wait_until

ACCESS_KEY, SECRET_KEY = "AKIAPLURALIGNTEST28", "pluralign-secret-not-to-be-shown-28"
UNREACHABLE = "the object store did not answer in time or answered with a server error"
DENIED = "the object store refused the credentials"


@pytest.fixture
def s3():
    with S3Server("pluralign-break28", access_key=ACCESS_KEY, secret_key=SECRET_KEY) as server:
        yield server


@pytest.fixture
def prefix(tmp_path) -> str:
    """A prefix of the bucket for this test alone: moto keeps a bucket's objects for the whole process."""
    return tmp_path.name


@pytest.fixture
def service_log(monkeypatch, caplog):
    for name in ("pluralign.service", "pluralign.store"):
        monkeypatch.setattr(logging.getLogger(name), "handlers", [caplog.handler])
    caplog.set_level(logging.INFO)
    return caplog


def unavailable(r, says: str) -> str:
    assert r.status_code == 503, (r.status_code, r.text)
    error = r.json()["error"]
    assert error["code"] == "storage_unavailable" and says in error["message"], error
    assert "damaged" not in error["message"] and r.headers["Retry-After"] == "60"
    return error["message"]


def no_secrets(*texts: str) -> None:
    for text in texts:
        assert ACCESS_KEY not in text and SECRET_KEY not in text, text[-2000:]


@pytest.mark.slow  # ~16 s on two busy cores (retries, the ingest worker's turns); fast: test_a_store_that_..._naming_the_table[wrong keys]
def test_an_object_store_that_goes_away_is_a_503_saying_so_and_the_service_recovers_by_itself(service_log, serve, s3, prefix):
    """The endpoint stops while the service runs (connections refused), then comes back on the same
    address. Feedback is acknowledged meanwhile (the local log keeps it) and moved in once the store
    answers, without a restart; /health names the tables while it is down and is "ok" once they answer."""
    data, server, svc = serve(**s3.settings(prefix), store_retries=1)
    rt = svc.runtime
    with server, svc.client("acme") as acme, svc.client("globex") as globex:
        give_comparisons(acme, "ann", "tea", n=2)
        rt.wait_for_background()
        assert chat(acme, "ann").status_code == 200
        s3.stop()
        bodies = [unavailable(chat(acme, "ann"), UNREACHABLE), unavailable(globex.get("/v1/users/bea"), UNREACHABLE),
                  unavailable(chat(globex, "bea"), "not tried")]  # at once: the store failed within store_timeout_s
        assert "nothing this request sent was acknowledged" in bodies[0]
        for i in range(2):
            assert acme.post("/v1/feedback", json=comparison("bob", i)).status_code == 201  # durable in the local log
        assert wait_until(lambda: sum(p["failures"] for p in rt.store.problems.recent()
                                      if p["what"] == "table `preferences`" and p["action"] == "written") >= 3)
        health = acme.get("/health").json()
        assert health["status"] == "degraded" and health["feedback_pending"] == 2, health
        assert {p["problem"] for p in health["storage"]} == {"unreachable"}, health
        assert "table `preferences`" in {p["what"] for p in health["storage"]}, health
        moving = [r.getMessage() for r in service_log.records if r.getMessage().startswith("moving feedback")]
        assert len(moving) == 1 and UNREACHABLE in moving[0], moving  # said once, not at every try
        metrics = acme.get("/metrics").text
        no_secrets(*bodies, str(health), metrics, *(r.getMessage() for r in service_log.records))

        s3.start()
        assert wait_until(lambda: acme.get("/health").json()["feedback_pending"] == 0, timeout=60)
        assert [p["chosen"] for p in acme.get("/v1/users/bob/preferences").json()["data"]] == ["Tea 0.", "Tea 1."]
        assert wait_until(lambda: chat(acme, "ann").status_code == 200, timeout=30)
        assert globex.get("/v1/users/bea").status_code == 404
        assert acme.get("/health").json()["status"] == "ok"


SLOW = pytest.mark.slow  # 4-8 s each (the store's retries and timeouts); their words are checked fast by test_object_store_words_*
FAULTS = {  # what the store answers -> what the client is told
    "throttling (503 SlowDown)": ((503, "SlowDown"), UNREACHABLE, SLOW),
    "failing (500 InternalError)": ((500, "InternalError"), UNREACHABLE, SLOW),
    "dropping connections": ("drop", UNREACHABLE, SLOW),
    "hanging (no answer)": ("hang", UNREACHABLE, SLOW),
    "expired keys (403 ExpiredToken)": ((403, "ExpiredToken"), DENIED, SLOW),
    "wrong keys (403 InvalidAccessKeyId)": ((403, "InvalidAccessKeyId"), DENIED, ()),
}


@pytest.mark.parametrize("fault", [pytest.param(name, marks=marks) for name, (_, _, marks) in FAULTS.items()])
def test_a_store_that_throttles_fails_hangs_or_refuses_the_keys_is_a_503_naming_the_table(service_log, serve, s3, prefix, fault):
    """A proxy in front of moto answers every request itself. A hung store is answered within the
    store's timeout (`store_timeout_s`, 1 s here: four reads of 1 s each, not the minutes of object_store's
    own 30 s a request retried for 180 s); a 403's body names the access key id, as S3's does: it is in no
    log line, error or health output."""
    answer, says, _ = FAULTS[fault]
    with FaultyProxy(s3.endpoint) as proxy:
        data, server, svc = serve(**s3.settings(prefix, proxy.endpoint), store_timeout_s=1.0, store_retries=1)
        rt = svc.runtime
        with server, svc.client("acme") as acme:
            give_comparisons(acme, "ann", "tea", n=2)
            rt.wait_for_background()
            rt.store.histories.invalidate([("acme", "ann")])  # as a restart would: the next read goes to the store
            proxy.fault = lambda method, path, headers: answer
            with svc.client("acme") as bounded:
                bounded.timeout = 60  # object_store's own timeouts took minutes here
                message = unavailable(chat(bounded, "ann"), says)
            assert proxy.requests > 0
            with svc.client("globex") as globex:  # another tenant's chat is not queued behind the store's timeouts again
                assert "not tried: it failed within the last PLURALIGN_STORE_TIMEOUT_S seconds" in unavailable(chat(globex, "bea"), says)
                # a chat naming no user reads and stores nothing: answered as ever (it was refused 'not tried' too)
                asked, anonymous = proxy.requests, {"model": "pluralign", "max_tokens": 3, "messages": [{"role": "user", "content": "Hi?"}]}
                assert globex.post("/v1/chat/completions", json=anonymous).status_code == 200
                streamed = globex.post("/v1/chat/completions", json={**anonymous, "stream": True})
                assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]"), streamed.text
                # they asked nothing of the store. What Lance still had under way for ann's failed read (more
                # GETs of the data files of the tables it was reading, sent late on a busy machine) is not theirs
                read = {p.split(".lance/data/")[0] for m, p in proxy.asked[:asked] if m == "GET" and ".lance/data/" in p}
                late = [(m, p) for m, p in proxy.asked[asked:] if not (m == "GET" and p.split(".lance/data/")[0] in read)]
                assert late == [], proxy.asked[asked:]
            assert acme.post("/v1/feedback", json=comparison("bob")).status_code == 201  # the local log takes it
            health = acme.get("/health").json()
            assert health["status"] == "degraded" and health["storage"][0]["problem"] == ("denied" if says == DENIED else "unreachable")
            logged = [r.getMessage() for r in service_log.records if "answered 503" in r.getMessage()]
            assert logged and "table `" in logged[0], logged
            no_secrets(message, str(health), acme.get("/metrics").text, *(r.getMessage() for r in service_log.records))
            proxy.fault = lambda method, path, headers: None
            proxy.release.set()
            assert wait_until(lambda: chat(acme, "ann").status_code == 200)  # once `store_timeout_s` has passed, or a write got through
            assert wait_until(lambda: acme.get("/health").json()["feedback_pending"] == 0)  # moved in, no restart
            page = acme.get("/v1/users/bob/preferences").json()
            assert page["total"] == 1, page
            assert acme.get("/health").json()["status"] == "ok"


def test_a_deleted_bucket_is_named_and_feedback_is_kept(service_log, serve, s3, prefix):
    """The bucket removed under the running service: reads meet its tables' files gone, writes S3's
    NoSuchBucket. The feedback sent meanwhile stays in the local log (acknowledged), and the ingest
    worker says the bucket does not exist. A read says so too (it said "a file of it is damaged or
    unreadable": an operator would restore a backup rather than the bucket)."""
    data, server, svc = serve(**s3.settings(prefix), store_retries=1)
    rt = svc.runtime
    with server, svc.client("acme") as acme:
        give_comparisons(acme, "ann", "tea", n=1)
        rt.wait_for_background()
        bucket = s3.client()
        for item in bucket.list_objects_v2(Bucket=s3.bucket).get("Contents", []):
            bucket.delete_object(Bucket=s3.bucket, Key=item["Key"])
        bucket.delete_bucket(Bucket=s3.bucket)
        # a read meets its table's files gone (Lance: "Not found"): the bucket is looked for then, and named
        said = unavailable(acme.get("/v1/users/ann"), "its bucket does not exist")
        assert said.startswith("table `users` cannot be read")
        assert acme.post("/v1/feedback", json=comparison("bob")).status_code == 201
        assert wait_until(lambda: any("its bucket does not exist" in r.getMessage() for r in service_log.records
                                      if r.getMessage().startswith("moving feedback")))
        assert acme.get("/health").json()["feedback_pending"] == 1
        r = acme.get("/v1/users/bob/preferences")  # first moves bob's feedback in: the write fails
        assert r.status_code == 503 and "its bucket does not exist" in r.json()["error"]["message"], r.text


# object_store's words inside Lance's, as lancedb 0.40 raised them here against moto (through the proxy),
# the endpoint and file names shortened; before this session each was "unreadable" (a damaged file) or,
# at open, no storage problem at all (a ValueError, or a traceback)
OBJECT_STORE_SAYS = {
    "lance error: LanceError(IO): Generic N/A error: LanceError(IO): Generic S3 error: Error performing GET http://127.0.0.1:1/b/p/"
    "users.lance/data/1.lance in 395.98ms, after 3 retries, max_retries: 3, retry_timeout: 180s  - HTTP error: error sending request": "unreachable",
    "lance error: LanceError(IO): single PUT of p/preferences.lance/data/1.lance failed after 1.07s (3635 bytes): Generic S3 error: Error "
    "performing PUT http://127.0.0.1:1/b/p/preferences.lance/data/1.lance in 107.47ms, after 1 retries, max_retries: 1, retry_timeout: "
    "180s  - Server returned non-2xx status code: 503 Service Unavailable: <Error><Code>SlowDown</Code></Error>": "unreachable",
    "lance error: LanceError(IO): Generic N/A error: LanceError(IO): The operation lacked the necessary privileges to complete for path "
    "p/x.lance: Error performing GET http://127.0.0.1:1/b/p/x.lance in 42.71ms - Server returned non-2xx status code: 403 Forbidden: "
    "<Error><Code>InvalidAccessKeyId</Code></Error>": "denied",
    "lance error: LanceError(IO): single PUT of p/x.lance failed after 48.55ms: Object at location p/x.lance not found: Error performing "
    "PUT http://127.0.0.1:1/b/p/x.lance in 48.42ms - Server returned non-2xx status code: 404 Not Found: <Error><Code>NoSuchBucket</Code>"
    "<Message>The specified bucket does not exist</Message></Error>": "no-bucket",
    'Invalid input, Failed to connect to namespace: IO { source: Generic { store: "S3", source: ListRequest { source: RetryError('
    'RetryErrorImpl { method: GET, uri: Some(http://127.0.0.1:1/b?list-type=2), retries: 1, inner: Http(HttpError { kind: Connect, '
    'source: reqwest::Error { kind: Request, source: hyper_util::client::legacy::Error(Connect, ConnectError("tcp connect error", '
    '127.0.0.1:1, Os { code: 111, kind: ConnectionRefused, message: "Connection refused" })) } }) }) } }': "unreachable",
    'Invalid input, Failed to connect to namespace: IO { source: Generic { store: "S3", source: ListRequest { source: RetryError('
    'RetryErrorImpl { method: GET, retries: 0, inner: Status { status: 403, body: Some("<Error><Code>InvalidAccessKeyId</Code>'
    '</Error>") } }) } }': "denied",
    # a request signed for another region (before: "unreadable" on reads and writes, a raw ValueError at open)
    "lance error: LanceError(IO): single PUT of p/x.lance failed after 41.1ms: Generic S3 error: Error performing PUT "
    "http://127.0.0.1:1/b/p/x.lance in 41.1ms - Server returned non-2xx status code: 400 Bad Request: <?xml version='1.0' "
    "encoding='UTF-8'?><Error><Code>AuthorizationHeaderMalformed</Code><Message>AuthorizationHeaderMalformed</Message></Error>": "wrong-region",
    "lance error: LanceError(IO): single PUT of p/x.lance failed after 448.7µs: Generic S3 error: Error performing PUT "
    "http://127.0.0.1:1/b/p/x.lance in 448.7µs - Received redirect without LOCATION, this normally indicates an incorrectly configured region": "wrong-region",
    'Invalid input, Failed to connect to namespace: IO { source: Generic { store: "S3", source: ListRequest { source: RetryError('
    'RetryErrorImpl { method: GET, uri: Some(http://127.0.0.1:1/b?list-type=2), retries: 0, max_retries: 0, inner: BareRedirect }) } }': "wrong-region",
    'Invalid input, Failed to connect to namespace: IO { source: Generic { store: "S3", source: ListRequest { source: RetryError('
    'RetryErrorImpl { method: GET, retries: 0, inner: Status { status: 400, body: Some("<Error><Code>AuthorizationHeaderMalformed'
    '</Code></Error>") } }) } }': "wrong-region",
    # no credentials anywhere (no key set, no AWS_* variables, no instance role): before, a raw ValueError at open
    'Invalid input, Failed to connect to namespace: IO { source: Generic { store: "N/A", source: IO { source: "Failed to get AWS '
    'credentials: CredentialsNotLoaded(CredentialsNotLoaded { source: Some(\\"no providers in chain provided credentials\\") })", '
    'location: Location { file: "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/lance-io-13.0.0/src/object_store/providers/'
    'aws.rs", line: 607, column: 30 }, backtrace: MaybeBacktrace } }': "no-credentials",
}


@pytest.mark.parametrize("words", OBJECT_STORE_SAYS, ids=range(len(OBJECT_STORE_SAYS)))
def test_object_store_words_are_sorted_by_what_an_operator_checks(words):
    """The endpoint (down, slow, throttling), the keys, or the bucket; a local disk's words keep their kinds."""
    from pluralign.store.failures import storage_problem

    assert storage_problem(ValueError(words) if words.startswith("Invalid") else RuntimeError(words)) == (OBJECT_STORE_SAYS[words], None)
    assert storage_problem(RuntimeError("lance error: LanceError(IO): No space left on device (os error 28), /x.rs:1:1")) == ("full", 28)
    assert storage_problem(RuntimeError("lance error: Retryable commit conflict for version 3")) is None


# a local disk's words from Lance name where in Lance's source they were raised, and that file may be its
# object_store.rs (`object.?store`), so a local "Connection reset" read as an object store's (session 28b)
LANCE_SOURCE = ", /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/lance-io-13.0.0/src/object_store.rs:512:23"


def test_a_local_disk_s_words_are_no_object_store_s_where_lance_names_its_object_store_source():
    """Before: ("unreachable", None): 'the object store did not answer' for a folder on a local disk."""
    from pluralign.store.failures import storage_problem, unavailable

    local = "lance error: LanceError(IO): Generic LocalFileSystem error: Unable to read /data/p/x.lance: {} (os error {}){}"
    assert storage_problem(RuntimeError(local.format("Connection reset by peer", 104, LANCE_SOURCE))) is None
    assert storage_problem(RuntimeError(local.format("Connection refused", 111, ", lance-io/src/object_store.rs:1:1"))) is None
    eio = RuntimeError(local.format("Input/output error; connection reset", 5, LANCE_SOURCE))
    assert storage_problem(eio) == ("unreadable", 5)
    assert ".rs:" not in unavailable(eio, "table `users`", "/data/p", "read").detail
    # an object store's words keep their kind with the same source named
    assert storage_problem(RuntimeError(next(iter(OBJECT_STORE_SAYS)) + LANCE_SOURCE)) == ("unreachable", None)


@pytest.mark.slow  # ~4 s; the service's log and answers are checked in the default suite by the [wrong keys] case above
def test_what_s3_repeats_of_the_request_and_the_store_s_keys_are_in_no_error(s3, prefix):
    """A Store on a bucket behind a proxy answering 403 (its body names the access key id, as S3's
    does), opened and then read: its errors name the table and the problem, not the key."""
    from pluralign.store import Store
    from pluralign.store.failures import StoreUnavailable
    from tests.service.test_store import prefs

    with FaultyProxy(s3.endpoint) as proxy:
        options = {**s3.options, "aws_endpoint": proxy.endpoint, "client_max_retries": "0"}
        store = Store(s3.uri(f"{prefix}/keys"), "enc", 8, storage_options=options)
        store.add_preferences(*prefs("t", "u", 1))
        proxy.fault = lambda method, path, headers: (403, "SignatureDoesNotMatch")
        with pytest.raises(StoreUnavailable) as caught:
            store.add_preferences(*prefs("t", "u", 1))
        assert (caught.value.name, caught.value.problem) == ("table `preferences`", "denied")
        assert "<AWSAccessKeyId>(hidden)</AWSAccessKeyId>" in str(caught.value)
        with pytest.raises(StoreUnavailable) as opening:
            Store(s3.uri(f"{prefix}/other"), "enc", 8, storage_options=options)
        assert (opening.value.name, opening.value.action, opening.value.problem) == ("the store", "opened", "denied")
        no_secrets(str(caught.value), str(opening.value))


START_FAULTS = {  # what is wrong -> the setting the one line names first, and what it says
    "endpoint down": ("PLURALIGN_STORE_ENDPOINT (setting store_endpoint) = http://127.0.0.1:", UNREACHABLE),
    "no such bucket": ("PLURALIGN_STORE_URI (setting store_uri)", "its bucket does not exist"),
    "wrong keys": ("PLURALIGN_STORE_ACCESS_KEY_ID and PLURALIGN_STORE_SECRET_ACCESS_KEY", DENIED),
}


@pytest.mark.slow  # three real starts (the encoder and a tiny generator load before the store opens), 10-20 s each
@pytest.mark.parametrize("wrong", START_FAULTS)
def test_serve_on_a_store_it_cannot_reach_says_which_setting_in_one_line_and_exits_3(tmp_path, s3, prefix, tiny_generator_dir, wrong):
    """Before: `pluralign: error: Invalid input, Failed to connect to namespace: IO { source: Generic { store:
    "S3", source: ListRequest ...` (some 900 characters of object_store's debug output, naming no setting),
    exit status 2 (a bad setting's), whether the endpoint was down, the bucket missing or the keys wrong."""
    from tests.service.test_break25b_failed_start import last_line, serve, snapshot

    env = {f"PLURALIGN_{k.upper()}": str(v).lower() if isinstance(v, bool) else v for k, v in s3.settings(prefix).items()}
    with FaultyProxy(s3.endpoint) as proxy:
        if wrong == "endpoint down":
            env["PLURALIGN_STORE_ENDPOINT"] = f"http://127.0.0.1:{proxy.endpoint.rsplit(':', 1)[1]}"
            proxy.__exit__()  # its port now refuses connections
        elif wrong == "no such bucket":
            env["PLURALIGN_STORE_URI"] = "s3://no-such-bucket-28/start"
        else:
            env["PLURALIGN_STORE_ENDPOINT"] = proxy.endpoint
            proxy.fault = lambda method, path, headers: (403, "InvalidAccessKeyId")
        data = tmp_path / "data"
        result = serve(tmp_path, data, PLURALIGN_GENERATOR=str(tiny_generator_dir), PLURALIGN_GENERATION_PROCESS="false",
                       PLURALIGN_STORE_RETRIES="1", **env)
    setting, says = START_FAULTS[wrong]
    assert result.returncode == 3, result.stderr[-3000:]
    line = last_line(result)
    assert line.startswith(f"pluralign: error: {setting}") and says in line and "s3://" in line, line
    assert "Traceback" not in result.stderr and "development API key" not in result.stderr
    no_secrets(result.stdout, result.stderr)
    assert snapshot(data) is None  # the data folder it made is removed again


def test_metrics_answers_while_the_store_hangs(serve, s3, prefix):
    """Replicas read the store at every count (`store_sync_ms`; 0 here): /metrics counted every table's
    rows in the scrape, so a hung store held the scrape for its timeouts (33 s with `store_timeout_s` 1 s;
    60 s a request here, past this client's 30 s and a Prometheus scrape's 10 s) and the storage-failure
    gauge was never read. Now the scrape reports the last counts it got and the gauge."""
    with FaultyProxy(s3.endpoint) as proxy:
        data, server, svc = serve(**s3.settings(prefix, proxy.endpoint), store_timeout_s=60.0, store_retries=0, store_sync_ms=0)
        with server, svc.client("acme") as acme:
            assert 'pluralign_table_rows{table="preferences"} 0' in acme.get("/metrics").text
            proxy.fault = lambda method, path, headers: "hang"
            acme.timeout = 30
            metrics = acme.get("/metrics")
            assert metrics.status_code == 200 and 'pluralign_table_rows{table="preferences"} 0' in metrics.text
            assert "pluralign_storage_failures" in metrics.text
            proxy.release.set()  # the count waiting on the store ends (the connection dropped)


@pytest.mark.slow  # ~2 s; fast: test_what_s3_repeats_and_an_endpoint_password_are_hidden
def test_a_session_token_s3_repeats_as_it_refuses_it_is_in_no_error(s3, prefix, monkeypatch):
    """An expired session token (an instance role's, Kubernetes' IRSA: `AWS_SESSION_TOKEN`, no setting of
    ours) is refused by S3 with a 400 ExpiredToken whose body repeats the token (`<Token-0>`). Before: the
    token went into the error and the log line as S3 sent it; now it is hidden, and the kind is "denied"."""
    from pluralign.store import Store
    from pluralign.store.failures import StoreUnavailable
    from tests.service.test_store import prefs

    token = "IQoJb3JpZ2luX2VjEPLURALIGNSESSIONTOKEN28"
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    with FaultyProxy(s3.endpoint) as proxy:
        store = Store(s3.uri(f"{prefix}/token"), "enc", 8, storage_options={**s3.options, "aws_endpoint": proxy.endpoint, "client_max_retries": "0"})
        proxy.fault = lambda method, path, headers: (400, "ExpiredToken")
        with pytest.raises(StoreUnavailable) as caught:
            store.add_preferences(*prefs("t", "u", 1))
    assert caught.value.problem == "denied" and "<Token-0>(hidden)</Token-0>" in str(caught.value), str(caught.value)
    assert token not in str(caught.value) and token not in caught.value.detail


@pytest.mark.slow  # ~2.5 s; fast: test_what_s3_repeats_and_an_endpoint_password_are_hidden
def test_a_password_in_the_endpoint_url_is_in_no_error_nor_the_failed_start_line():
    """PLURALIGN_STORE_ENDPOINT=http://user:password@host (a gateway wanting basic auth): object_store's words
    repeat the URL whole. Before: the password was in the StoreUnavailable, its log lines, and `pluralign
    serve`'s one line (which names the endpoint)."""
    from pluralign.store import Store
    from pluralign.store.failures import StoreUnavailable
    from service.settings import Settings
    from tests.s3 import _free_port
    from training.commands.serve import store_problem

    password = "endpoint-password-28"
    settings = Settings.load({}, store_uri="s3://no-bucket/p", store_endpoint=f"http://gateway:{password}@127.0.0.1:{_free_port()}",
                             store_allow_http=True, store_region="us-east-1", store_access_key_id=ACCESS_KEY,
                             store_secret_access_key=SECRET_KEY, store_retries=0, store_timeout_s=1.0)
    with pytest.raises(StoreUnavailable) as caught:  # nothing listens there: refused at once
        Store(settings.lancedb_uri, "enc", 8, storage_options=settings.storage_options)
    line = store_problem(settings, caught.value)
    assert caught.value.problem == "unreachable" and "http://gateway:(hidden)@127.0.0.1" in line, line
    for text in (str(caught.value), caught.value.detail, line):
        assert password not in text, text
    no_secrets(str(caught.value), line)


@pytest.mark.slow  # ~3.5 s (the audit's imports); fast: store_source.reading is failures.unavailable, checked by test_object_store_words_*
def test_an_audit_of_a_store_that_refuses_the_keys_says_so_without_them(s3, prefix, monkeypatch, capsys):
    """`pluralign audit --store s3://...` (what the service's audit jobs run, the store's PLURALIGN_STORE_*
    variables in their environment): a store refusing the keys is one line saying so, exit 2. Before: the
    audit read the store around the service's handling, so S3's 403 body, naming the access key id, went
    to stderr (the job's log, shown by GET /admin/jobs/{id}) as it was."""
    from tests.unit.clitools import cli

    with FaultyProxy(s3.endpoint) as proxy:
        for name, value in {**s3.env(prefix), "PLURALIGN_STORE_ENDPOINT": proxy.endpoint}.items():
            monkeypatch.setenv(name, value)
        proxy.fault = lambda method, path, headers: (403, "InvalidAccessKeyId")
        code, out, err = cli(capsys, "audit", "--store", s3.uri(prefix), "--group-by", "segment", "--json")
    assert proxy.requests > 0 and code == 2, (code, err[-3000:])
    assert err.startswith("pluralign: error: ") and DENIED in err and err.count("\n") == 1, err[-3000:]
    no_secrets(out, err)


@pytest.mark.slow  # ~7 s; fast: test_object_store_words_* (the 400 and 301 words) and test_what_s3_repeats_...
def test_a_wrong_region_is_named_not_called_a_damaged_file(s3, prefix):
    """S3 answers a request signed for another region 400 AuthorizationHeaderMalformed (or 301 without a
    Location). Before: a write was 'a file of it is damaged or unreadable' (an operator restores a backup),
    and a start printed object_store's debug output naming no setting, exit 2."""
    from pluralign.store import Store
    from pluralign.store.failures import StoreUnavailable
    from service.settings import Settings
    from tests.service.test_store import prefs
    from training.commands.serve import store_problem

    with FaultyProxy(s3.endpoint) as proxy:
        options = {**s3.options, "aws_endpoint": proxy.endpoint, "client_max_retries": "0"}
        store = Store(s3.uri(f"{prefix}/region"), "enc", 8, storage_options=options)
        for i, answer in enumerate([(400, "AuthorizationHeaderMalformed"), (301, "PermanentRedirect")]):
            proxy.fault = lambda method, path, headers, answer=answer: answer
            with pytest.raises(StoreUnavailable) as writing:
                store.add_preferences(*prefs("t", "u", 1))
            with pytest.raises(StoreUnavailable) as opening:
                Store(s3.uri(f"{prefix}/other{i}"), "enc", 8, storage_options=options)
            assert (writing.value.problem, opening.value.problem) == ("wrong-region", "wrong-region"), (answer, str(writing.value), str(opening.value))
            line = store_problem(Settings.load({}, **s3.settings(prefix, proxy.endpoint)), opening.value)
            assert line.startswith("PLURALIGN_STORE_REGION (setting store_region) = us-east-1: ") and "damaged" not in line, line


@pytest.mark.slow  # ~4 s; fast: test_a_write_that_succeeds_ends_the_chats_fast_503
def test_a_chat_is_tried_again_once_the_store_answered_since_it_failed(serve, s3, prefix):
    """A write the store did not answer (503 SlowDown on the interactions table's PUTs, then no more),
    then a write of another table that succeeded (feedback moved in): the store answers, and chats are tried again, as docs/operations.md
    says ('until a read or write of it succeeds'). Before: only a success of that same table's write
    ended it, so every tenant's chat was refused 'not tried' for `store_timeout_s` after it, whatever
    the store answered meanwhile."""
    with FaultyProxy(s3.endpoint) as proxy:
        data, server, svc = serve(**s3.settings(prefix, proxy.endpoint), store_timeout_s=60.0, store_retries=0)
        with server, svc.client("acme") as acme, svc.client("globex") as globex:
            throttled = [True]
            proxy.fault = lambda method, path, headers: (503, "SlowDown") if throttled[0] and method == "PUT" and "interactions.lance" in path else None
            unavailable(chat(acme, "ann"), UNREACHABLE)  # its interaction's write
            throttled[0] = False
            assert globex.post("/v1/feedback", json=comparison("bea")).status_code == 201
            assert wait_until(lambda: globex.get("/health").json()["feedback_pending"] == 0)  # a write the store answered
            r = chat(globex, "bea")
            assert r.status_code == 200, r.text



def test_what_s3_repeats_and_an_endpoint_password_are_hidden():
    """The words of the slow tests above, without a store: S3's `<Token-0>` (a refused session token) and
    a password in the endpoint's URL are '(hidden)' in the error and in `pluralign serve`'s one line, which
    names PLURALIGN_STORE_REGION for a wrong region."""
    from pluralign.store.failures import secrets_of, unavailable
    from service.settings import Settings
    from training.commands.serve import store_problem

    token, password = "IQoJb3JpZ2luX2VjEPLURALIGNSESSIONTOKEN28", "endpoint-password-28"
    settings = Settings.load({}, store_uri="s3://b/p", store_endpoint=f"http://gateway:{password}@127.0.0.1:1", store_region="eu-west-1", store_allow_http=True,
                             store_access_key_id=ACCESS_KEY, store_secret_access_key=SECRET_KEY)
    words = {"denied": f"lance error: LanceError(IO): Generic S3 error: Error performing PUT http://gateway:{password}@127.0.0.1:1/b/p/x.lance "
                       f"- Server returned non-2xx status code: 400 Bad Request: <Error><Code>ExpiredToken</Code><Token-0>{token}</Token-0></Error>",
             "unreachable": f"lance error: LanceError(IO): Generic S3 error: Error performing GET http://gateway:{password}@127.0.0.1:1/b/p/x.lance "
                            "- HTTP error: error sending request",
             "wrong-region": "lance error: LanceError(IO): Generic S3 error: Error performing GET http://127.0.0.1:1/b/p/x.lance - Server returned "
                             "non-2xx status code: 400 Bad Request: <Error><Code>AuthorizationHeaderMalformed</Code></Error>"}
    for kind, text in words.items():
        found = unavailable(RuntimeError(text), "the store", settings.lancedb_uri, "opened", secrets_of(settings.storage_options))
        line = store_problem(settings, found)
        assert found.problem == kind and "damaged" not in line, line
        for shown in (str(found), line):
            assert token not in shown and password not in shown, shown
            no_secrets(shown)
    assert "<Token-0>(hidden)</Token-0>" in str(unavailable(RuntimeError(words["denied"]), "t", "s3://b/p", "read"))
    assert store_problem(settings, unavailable(RuntimeError(words["unreachable"]), "t", "s3://b/p", "read")).startswith(
        "PLURALIGN_STORE_ENDPOINT (setting store_endpoint) = http://gateway:(hidden)@127.0.0.1:1")
    assert store_problem(settings, unavailable(RuntimeError(words["wrong-region"]), "t", "s3://b/p", "read")).startswith(
        "PLURALIGN_STORE_REGION (setting store_region) = eu-west-1: ")


def test_a_write_that_succeeds_ends_the_chats_fast_503():
    """`Problems.object_store_down` (what a chat's fast 503 asks): a failed write of one table is ended by
    any write the store takes, not by a read (Lance may answer one from memory) nor by the local feedback log."""
    from pluralign.store.failures import Problems, StoreUnavailable

    problems = Problems()
    problems.failed(StoreUnavailable("table `interactions`", "s3://b/p", "written", "unreachable", "503 SlowDown"))
    problems.succeeded("table `users`", "read")
    problems.succeeded("the feedback log", "written")
    assert problems.object_store_down(60)["what"] == "table `interactions`"
    problems.succeeded("table `preferences`", "written")
    problems.written()  # as Store._on says of a write
    assert problems.object_store_down(60) is None
    assert problems.recent()[0]["what"] == "table `interactions`"  # /health lists it until that write succeeds


def test_chats_answered_not_tried_log_it_once_a_minute(service_log, serve):
    """While the store is known down every chat naming a user is answered 503 'not tried' at once. Before:
    each logged an ERROR line, so a flood of chats flooded the log. Now the first is logged and the rest
    within NOT_TRIED_LOG_S are not; the failure that started it (the first real one) keeps its own line."""
    from pluralign.store.failures import StoreUnavailable
    from service.runtime import NOT_TRIED_LOG_S

    data, server, svc = serve()
    with server, svc.client("acme") as acme:
        failure = StoreUnavailable("table `preferences`", "s3://b/p", "read", "unreachable", "HTTP error: error sending request")
        svc.runtime.store.problems.failed(failure)  # as a chat whose read of the store failed notes it
        for user in ("ann", "bea", "cid"):
            unavailable(chat(acme, user), "not tried")
    said = [r for r in service_log.records if "not tried" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "ERROR" and NOT_TRIED_LOG_S >= 60, [r.getMessage() for r in said]


@pytest.mark.slow  # ~2.4 s (Lance's credential chain); fast: test_object_store_words_* (the CredentialsNotLoaded words)
def test_a_store_without_any_credentials_is_one_line_naming_the_key_settings(monkeypatch, tmp_path):
    """No key set and none in AWS_* variables: Lance's credential chain finds none. Before: its debug text
    (`CredentialsNotLoaded`), no storage problem, so `pluralign serve` printed it whole, exit 2. The
    instance-metadata endpoint is kept out (AWS_EC2_METADATA_DISABLED), the endpoint is a closed port."""
    import os

    from pluralign.store import Store
    from pluralign.store.failures import StoreUnavailable
    from service.settings import Settings
    from training.commands.serve import STORE_SETTINGS, store_problem

    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws
    settings = Settings.load({}, store_uri="s3://pluralign-none/p", store_endpoint="http://127.0.0.1:1", store_allow_http=True,
                             store_region="us-east-1", store_retries=0, store_timeout_s=1.0)
    with pytest.raises(StoreUnavailable) as opening:
        Store(settings.lancedb_uri, "enc", 8, storage_options=settings.storage_options)
    assert (opening.value.action, opening.value.problem) == ("opened", "no-credentials"), str(opening.value)
    line = store_problem(settings, opening.value)
    assert line.startswith(STORE_SETTINGS["denied"] + ": the store s3://pluralign-none/p cannot be opened: no credentials"), line
    assert "\n" not in line and "Location {" not in line, line
