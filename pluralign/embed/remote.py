"""Embeddings from a server speaking OpenAI's `/v1/embeddings` (Text Embeddings Inference, vLLM,
`pluralign serve-embeddings`), so embedding can move off the API replicas onto a GPU.

The vectors must come from the same model as the tables' (the tables record `encoder_id` and refuse
another): name the server's model as the `encoder_id`, e.g. `sentence-transformers/all-MiniLM-L6-v2`. And the server
must read as many word pieces of a text as the local encoder (MiniLM: 256, its `sentence_bert_config.json`'s
`max_seq_length`), and cut the rest as it does: Text Embeddings Inference takes that file's `max_seq_length` as its max
input length (its `router/src/lib.rs`; 512, the model's `max_position_embeddings`, for a folder without the file), and
cuts a longer text on the right only when started with `--auto-truncate` (without it: 413 for the request). Where the
server says so (TEI's `GET /info`: `model_id`, `max_input_length`, `auto_truncate`; vLLM's `GET /v1/models`: the model's
`max_model_len`), another model or another length is refused at construction (`ServedOtherwise`), and a model whose
length the caller does not know (one other than MiniLM) takes the server's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from pluralign.data.text import shorten
from pluralign.embed.base import text_list, window_starts
from pluralign.urls import check_base_url, redacted

log = logging.getLogger(__name__)


class RemoteEncoderError(RuntimeError):
    """The embeddings server is unreachable or answered something that is not an embeddings list (an error status, a
    body that is not JSON, JSON of another shape): the server's failure, never the texts' (a ValueError or TypeError of
    `encode` is a text it cannot send, a lone surrogate's UnicodeEncodeError, or one it refuses: `RemoteTextsRefused`)."""


class RemoteTextsRefused(RemoteEncoderError, ValueError):
    """The embeddings server refused the request for its texts (400, 413 or 422: Text Embeddings Inference without
    `--auto-truncate` answers 413 `inputs must have less than 512 tokens` for a request holding a longer text, vLLM 400 for
    one past its model's context), which no retry changes. A ValueError, as a local encoder's refusal of a text, so the
    feedback worker finds the text at fault by embedding the texts alone while the server embeds its probe, and sets its
    record aside (`pluralign.store.ingest.Ingestor._refusal`, docs/admin.md "Dead letters"); a RemoteEncoderError, so a
    request that waited on it is the 503 of the server's failure (`service.errors.encoder_unavailable`). A server that
    refuses every request so (`pluralign serve-embeddings` answers 400 for a model it does not serve) refuses the probe
    too: its failure, retried, nothing set aside. Not a plain RemoteEncoderError, with which the record would stay in
    the log, retried for ever, and such records would fill their tenant's backlog bound.

    `words`: the server's own message, without its address (TEI's `Input validation error: `inputs` must have less
    than 256 tokens. Given: 300`, its limit with it), for a caller to tell the client which text and why."""

    def __init__(self, message: str, words: str = "") -> None:
        super().__init__(message)
        self.words = words


class VectorsNotFinite(RemoteEncoderError, ValueError):
    """The embeddings server answered a vector holding NaN or inf (JSON's `NaN`, which the client reads; a number past
    float32's range). A RemoteEncoderError, so a request that waited on it is the 503 of the server's failure
    (`service.errors.encoder_unavailable`), not a 500: the cache's `checked_vectors` and the store's checks raise plain
    ValueError and StoreError for it. A ValueError, as a local encoder's vector not finite is found by the feedback
    worker: the texts embedded alone while the server embeds its probe finite, a text it fails on alone twice sets its
    record aside (`pluralign.store.ingest.Ingestor._texts_at_fault`); a server failing every text, the probe's too, is
    retried, nothing set aside."""


def server_words(exc) -> str:
    """The message an error answer of an embeddings server holds (an `openai.APIStatusError`'s body): OpenAI's and vLLM's
    `{"error": {"message": ...}}`, TEI's OpenAI route `{"message": ...}` and its own routes' `{"error": "..."}`,
    Litestar's `{"detail": ...}` (`pluralign serve-embeddings`); else the client's "Error code: 413 - ..." line. (The
    `openai` client keeps a body's `error` as its `body`: TEI's string there.)"""
    body = exc.body
    if isinstance(body, str) and body:
        return body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if isinstance(body, dict):
        for key in ("message", "error", "detail"):
            if isinstance(body.get(key), str):
                return body[key]
    return str(exc.message)


class EncoderTimedOut(RemoteEncoderError):
    """The embeddings server did not send a whole answer within the bound of each try (`RemoteEncoder`'s `timeout`,
    connecting included, to its last byte: a server answering a byte at a time is given up there), `tries` of them.
    `bound_s`: that bound, in seconds. The service answers it 503 with Retry-After, naming the embeddings server and
    the bound (`service.errors.encoder_unavailable`)."""

    def __init__(self, message: str, bound_s: float, tries: int) -> None:
        super().__init__(message)
        self.bound_s, self.tries = bound_s, tries

    def __reduce__(self):  # pickle makes an exception again from its `args` (the message alone): a worker process's
        return type(self), (self.args[0], self.bound_s, self.tries)  # else a TypeError there


class ServedOtherwise(RemoteEncoderError):
    """The embeddings server says (its metadata: TEI's `GET /info`, vLLM's `GET /v1/models`) that it serves another model
    than the encoder was made for, or reads another number of word pieces of a text: its vectors would not be those
    of the tables and the PAL model (another model's, or a long text's cut elsewhere), so it is refused at construction.
    `what`: the argument of `RemoteEncoder` it contradicts, "model" or "max_length", for a caller to name its own
    setting."""

    def __init__(self, message: str, what: str) -> None:
        super().__init__(message)
        self.what = what

    def __reduce__(self):
        return type(self), (self.args[0], self.what)


def is_folder(served: str) -> bool:
    """Whether TEI's `model_id` (its `--model-id`) is a folder, a path from "/" or ".", rather than a hub name."""
    return served.startswith(("/", "."))


def same_model(served: str, model: str) -> bool:
    """Whether a server saying it serves `served` (TEI's `model_id`: its `--model-id`, a hub name or a folder) serves
    `model`: the same name, or a folder (`is_folder`) whose last name is `model`'s last
    ("/data/all-MiniLM-L6-v2" for "sentence-transformers/all-MiniLM-L6-v2": TEI started on a downloaded copy)."""
    if served == model:
        return True
    return is_folder(served) and served.rstrip("/").rsplit("/", 1)[-1] == model.rsplit("/", 1)[-1]


REFUSED_STATUSES = (400, 413, 422)  # the server's answers of a request it will not take as sent: its texts' (`RemoteTextsRefused`)


class RemoteEncoder:
    """`encode(texts)` -> (N, dim) float32, L2-normalized, in `batch_size` texts per request.

    Ready once constructed: one request at construction learns `dim` (and fails early, with
    `RemoteEncoderError`, when the server is down or serves no such model; a ValueError naming `base_url`, before it,
    for one that is no http(s) URL of a host: `pluralign.urls.check_base_url`). `request_headers()` is
    asked at each request for headers to send with it (the service passes the `X-Request-Id` of the
    request the texts are embedded for, so the embeddings server's log names it). An empty text is sent as one
    space (OpenAI's API, TEI and `pluralign serve-embeddings` refuse an empty input; MiniLM's tokenizer reads both as
    nothing, so its vector is the local encoder's for "").

    `timeout`: the most each try of a request may take (seconds), whole: connecting, sending and every byte of its answer
    (`pluralign.bounded_http`; not each read of it only, so a server sending a byte a second cannot hold a
    request, and the chat or feedback batch waiting on it, as long as it likes); `max_retries` tries more after a
    timeout, a connection error, 408/409/429 or 5xx (the `openai` client's backoff). EncoderTimedOut when none ended in
    time. ValueError for a `timeout` not above 0 and at most a day (`pluralign.bounded_http.MAX_BOUND_S`) or negative
    `max_retries`.

    `max_length`: the word pieces the local encoder of `model` reads of a text, the rest cut on the right (MiniLM: 256;
    None: not known, the server's own is taken). What the server says it serves (`_check_served`: Text Embeddings
    Inference's `GET /info`, beside `/v1`; vLLM's `GET /v1/models`) is checked at construction: another model than
    `model` (TEI's `model_id`), or another length than `max_length` (TEI's `max_input_length`, vLLM's `max_model_len`), is
    refused (`ServedOtherwise`: its vectors would not be the local encoder's, which the tables' and the PAL model's are;
    TEI serving a folder without MiniLM's `sentence_bert_config.json` reads 512). With `max_length` None, the length the
    server says becomes `max_length` (None where it says none), so the embedding caches, keyed by it
    (`pluralign.embed.cache.encoder_cache_id`), never give a vector of one length for another. A server that says it
    refuses longer texts (`auto_truncate` false: TEI without `--auto-truncate`) is logged as a warning (such texts are
    then refused: `RemoteTextsRefused`, a chat's a 400).

    `counter`: the model's own tokenizer (a fast one; `pluralign.embed.models.minilm_tokenizer` for MiniLM), called with no
    truncation only (its settings are not changed, so threads share it). With it and `max_length`, a text longer than
    the server reads is sent cut to the start the server reads of it (`window_starts`: the same word pieces, so the same
    vector): a 1 MB text is sent as its first few KB, not whole over the network to a server that tokenizes it whole
    to keep 256 pieces. Without it, texts are sent whole."""

    def __init__(
        self, base_url: str, model: str, api_key: str | None = None, batch_size: int = 32, timeout: float = 60.0,
        max_retries: int = 2, request_headers: Callable[[], Mapping[str, str]] = dict, max_length: int | None = None,
        counter=None,
    ):
        from openai import DefaultHttpxClient, OpenAI

        from pluralign.bounded_http import MAX_BOUND_S, bounded_client

        if not 0 < timeout <= MAX_BOUND_S:  # nan too: no socket takes it (as `RemotePolicy`'s)
            raise ValueError(f"`timeout` must be above 0 and at most {MAX_BOUND_S:g} seconds, got {timeout}")
        if max_retries < 0:
            raise ValueError(f"`max_retries` must be at least 0, got {max_retries}")
        check_base_url(base_url)
        self.base_url = base_url.rstrip("/")
        self.shown_url = redacted(self.base_url)  # in errors and logs: no password of the URL's
        self.encoder_id = model
        self.batch_size = batch_size  # TEI's default --max-client-batch-size is 32
        self.request_headers = request_headers
        self.timeout, self.max_retries = timeout, max_retries
        self.max_length, self.counter = max_length, counter
        self._closed = False  # `close`
        self._client = OpenAI(base_url=self.base_url, api_key=api_key or "unused", timeout=timeout, max_retries=max_retries,
                              http_client=bounded_client(DefaultHttpxClient, timeout))
        try:
            self.dim = int(self._request(["dimension probe"]).shape[1])
            self._check_served(max_length)
        except BaseException:  # refused: its connection closed now, not when the object is collected
            self.close()
            raise

    def close(self) -> None:
        """Closes the connections to the server (its owner stops); every `encode` after it raises RemoteEncoderError at
        once, nothing sent. Once more does nothing more. Unclosed, they would stay open to the process's exit."""
        self._closed = True
        self._client.close()

    def _check_served(self, max_length: int | None) -> None:
        """What the server says it serves, checked: TEI's `GET /info` (`model_id`, `max_input_length`, `auto_truncate`),
        else vLLM's `GET /v1/models` (the entry of `encoder_id`: its `max_model_len`). A `model_id` other than
        `encoder_id` (`same_model`) is ServedOtherwise("model"): TEI's OpenAI route embeds with its one model whatever
        a request names; a folder of another name is a warning (`_check_model`). A length other than `max_length` is
        ServedOtherwise("max_length"); with `max_length` None (a model whose local encoder is not known here) the
        server's length becomes `self.max_length`, which the embedding caches key vectors by (`pluralign.embed.cache.encoder_cache_id`). `auto_truncate` false (TEI without
        `--auto-truncate`) is logged as a warning. A server without either route (a 4xx or 501: OpenAI,
        `pluralign serve-embeddings`), or one whose answer is not JSON or says none of these, is taken as it is. One whose
        metadata is not given (tried as any request is: a timeout, EncoderTimedOut; a connection error, a 408, 429 or
        another 5xx, RemoteEncoderError) is refused: what it reads is not known (not taken unchecked, as one without the
        route)."""
        info = self._metadata(f"{self.base_url.removesuffix('/v1')}/info", "its GET /info")
        if info is not None:
            served, length, truncates = info.get("model_id"), info.get("max_input_length"), info.get("auto_truncate")
            said = "its /info's max_input_length"
        else:
            listing = self._metadata(f"{self.base_url}/models", "its GET /v1/models")
            entries = listing.get("data") if listing is not None else None
            entry = next((e for e in entries if isinstance(e, dict) and e.get("id") == self.encoder_id), None) \
                if isinstance(entries, list) else None
            if entry is None:
                return
            served, length, truncates, said = None, entry.get("max_model_len"), None, "its /v1/models' max_model_len"
        self._check_model(served)
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            length = None
        if max_length is None:
            self.max_length = length
        elif length is not None and length != max_length:
            raise ServedOtherwise(
                f"embeddings server at {self.shown_url} reads at most {length} word pieces of a text ({said}), the local "
                f"encoder of {self.encoder_id} {max_length}: a long text's vector would not be the tables'. Serve the model's "
                f"folder with its sentence_bert_config.json (max_seq_length {max_length}; Text Embeddings Inference reads it) and --auto-truncate; vLLM: --max-model-len {max_length}", "max_length")
        if truncates is False:
            log.warning("the embeddings server at %s refuses texts past %s word pieces (no --auto-truncate): such texts "
                        "are refused (a chat's a 400), where the local encoder embeds their start", self.shown_url, length)

    def _check_model(self, served: object) -> None:
        """Refuses a server whose TEI `model_id` names another model than `encoder_id` (ServedOtherwise("model")). A
        folder of another name (`is_folder`: Hugging Face Inference Endpoints start TEI on `/repository`) says nothing
        of the model it holds, so it is only warned of: refused, no setting would get past it (naming the folder makes
        another model than the tables')."""
        if not isinstance(served, str) or not served or same_model(served, self.encoder_id):
            return
        shown = shorten(served, 200, "...")
        if is_folder(served):
            log.warning("the embeddings server at %s serves the folder %r (its /info's model_id), whose name is not %r's: "
                        "not checked to hold that model", self.shown_url, shown, self.encoder_id)
            return
        raise ServedOtherwise(
            f"embeddings server at {self.shown_url} serves {shown!r} (its /info's model_id), not "
            f"{self.encoder_id!r}: its vectors would be another model's than the tables' and the PAL model's. Name the "
            f"model it serves, or serve {self.encoder_id!r} there", "model")

    def _metadata(self, url: str, what: str) -> dict | None:
        """The JSON object the server answers to GET `url`, or None where it has no such route (a 4xx but 408 and 429, or
        501: http.server's for no GET at all) or answers no JSON object. Not answered (a timeout: EncoderTimedOut; a
        connection error, 408, 429 or another 5xx: RemoteEncoderError) it is the server's failure."""
        import httpx2  # the HTTP library the `openai` client runs on: its Response, returned as it is
        import openai

        said = f"embeddings server at {self.shown_url}: {what} (the model and the word pieces it reads of a text, checked at start)"
        try:
            answer = self._client.get(url, cast_to=httpx2.Response)
        except openai.APIStatusError as exc:
            if (exc.status_code < 500 and exc.status_code not in (408, 429)) or exc.status_code == 501:
                return None
            raise RemoteEncoderError(f"{said} answered {exc.status_code}") from exc
        except openai.APITimeoutError as exc:
            from pluralign.bounded_http import connecting

            tries = 1 + self.max_retries
            raise EncoderTimedOut(f"{said} was not answered within {self.timeout:g} s (each of {tries} tries){connecting(exc)}",
                                  self.timeout, tries) from exc
        except openai.APIError as exc:
            raise RemoteEncoderError(f"{said} failed: {redacted(str(exc))}") from exc
        try:
            body = answer.json()
        except ValueError:  # not JSON: not TEI's nor vLLM's
            return None
        return body if isinstance(body, dict) else None

    def _request(self, texts: list[str]) -> np.ndarray:
        import json

        import openai

        if self._closed:  # (the closed client would be tried again with backoff, then "Connection error.")
            raise RemoteEncoderError(f"embeddings server at {self.shown_url}: not asked, the encoder is closed (its service stops)")
        try:
            # an empty text (a chat's candidate that ended at once) as one space: OpenAI's API, TEI and `pluralign
            # serve-embeddings` refuse an empty input, and a WordPiece tokenizer (MiniLM's) reads " " as it reads ""
            sent = [t or " " for t in texts]
            response = self._client.embeddings.create(model=self.encoder_id, input=sent, encoding_format="float",
                                                      extra_headers=dict(self.request_headers()))
        except openai.APIStatusError as exc:
            said = f"embeddings server at {self.shown_url}: {redacted(str(exc))}"
            if exc.status_code in REFUSED_STATUSES:
                raise RemoteTextsRefused(said, shorten(redacted(server_words(exc)), 300, "...")) from exc
            raise RemoteEncoderError(said) from exc
        except openai.APITimeoutError as exc:
            from pluralign.bounded_http import connecting

            tries = 1 + self.max_retries
            raise EncoderTimedOut(f"embeddings server at {self.shown_url} timed out: did not answer within {self.timeout:g} s (each of "
                                  f"{tries} tries){connecting(exc)}", self.timeout, tries) from exc
        except openai.APIError as exc:
            raise RemoteEncoderError(f"embeddings server at {self.shown_url}: {redacted(str(exc))}") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # a 200 labelled JSON that is not (a proxy's page, not UTF-8): the server's
            raise RemoteEncoderError(f"embeddings server at {self.shown_url} answered a body that is not JSON ({exc})") from exc
        return self._vectors(response, len(texts))

    def _vectors(self, response, n: int) -> np.ndarray:
        """The unit vectors of `response`, the server's answer for `n` texts, in their order: every check of what the
        answer holds, in one place. What it holds is the server's doing: any fault of it is a RemoteEncoderError, never
        a plain ValueError or TypeError, which the feedback worker reads as the texts' own (a refusal) and probes the
        encoder after it (`pluralign.store.ingest.Ingestor._refusal`): a proxy's page sent with a 200 would cost each try
        of a record two probe calls beside its own (labelled JSON: JSONDecodeError), or be an AttributeError (HTML). A
        vector that is not finite is VectorsNotFinite, a ValueError too (its docstring says why)."""
        try:
            items = sorted(response.data, key=lambda d: d.index)
            embeddings = [d.embedding for d in items]
            # "0.5" (which float32 parses), null: not a number, which OpenAI's answer holds (a JSON true the `openai`
            # client builds into 1.0 before this sees it)
            if (kinds := {type(v) for e in embeddings for v in e}) - {float, int}:
                raise TypeError(f"its embeddings hold {_not_a_number(embeddings, kinds - {float, int})}, not numbers")
            vectors = np.asarray(embeddings, np.float32)  # (n, dim)
        except (AttributeError, TypeError, ValueError) as exc:
            raise RemoteEncoderError(f"embeddings server at {self.shown_url} answered something that is not an embeddings list "
                                     f"({type(exc).__name__}: {shorten(str(exc), 200, '...')})") from exc
        if len(items) != n:
            raise RemoteEncoderError(f"embeddings server at {self.shown_url} returned {len(items)} vectors for {n} texts")
        if (indexes := [d.index for d in items]) != list(range(n)):  # one repeated, one missing: a text's vector
            # would be another's, taken by its place in the answer
            raise RemoteEncoderError(f"embeddings server at {self.shown_url} returned vectors of indexes "
                                     f"{shorten(str(indexes), 100, '...')} for {n} texts")
        if vectors.ndim != 2 or (hasattr(self, "dim") and vectors.shape[1] != self.dim):
            raise RemoteEncoderError(f"embeddings server at {self.shown_url} returned vectors of shape {vectors.shape}")
        if not (finite := np.isfinite(vectors).all(axis=1)).all():
            raise VectorsNotFinite(f"embeddings server at {self.shown_url} returned a vector that is not finite (NaN or inf) for "
                                   f"text {int(np.flatnonzero(~finite)[0])} of {n}")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1.0)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = text_list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if self.counter is not None and self.max_length is not None:
            texts = window_starts(self.counter, texts, self.max_length)[0]
        return np.concatenate([self._request(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)])


def _not_a_number(embeddings: list, kinds: set[type]) -> str:
    """The first value of `embeddings` (an answer's) of one of `kinds` (those that are not a number), shown short."""
    return next(shorten(repr(v), 60, "...") for e in embeddings for v in e if type(v) in kinds)
