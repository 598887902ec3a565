"""The encoder a setting names (`PLURALIGN_ENCODER`, `serve-embeddings --encoder`).

Apart from `service.runtime` (which re-exports it) so that `pluralign serve-embeddings`, which needs
an encoder and nothing of the service's store or generators, imports neither lancedb nor peft.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pluralign.embed.base import Encoder


def is_model_folder(name: str) -> bool:
    """Whether the encoder (or generator) `name` is a folder (of a sentence-transformers model, a causal LM): never "",
    which pathlib reads as the working folder (an emptied PLURALIGN_ENCODER would load MiniLM under the encoder id "", which
    `Store` refuses as an unknown encoder, named; an emptied
    PLURALIGN_GENERATOR would load the working folder as a model)."""
    return name != "" and Path(name).is_dir()


def folder_encoder_id(name: str) -> str:
    """The encoder id of the model in folder `name`: the folder's name ("models/minilm/" -> "minilm"), and for a path
    that ends in none ("." in the model's folder) the name of the folder it is (not "", which
    `Store` refuses)."""
    path = Path(name)
    return path.name or path.resolve().name or str(path.resolve())


def make_encoder(name: str, model_id: str | None = None, api_key: str | None = None, timeout_s: float = 60.0,
                 max_length: int | None = None) -> Encoder:
    """`minilm`, `minilm-onnx`, `minilm-onnx-int8`, `smollm2`, a sentence-transformers folder, or
    `openai:URL` for a server speaking OpenAI's /v1/embeddings (`model_id` names its model; default
    MiniLM's id, which the tables and the PAL checkpoint must have been made with; `timeout_s` bounds each try of a
    request to it whole: `RemoteEncoder`'s `timeout`, the setting `encoder_timeout_s`; `max_length`, the setting
    `encoder_max_length`: the word pieces its model reads of a text, default the known model's (MiniLM's 256), else the
    server's own). Raises ValueError for an unknown name or a folder that holds no sentence-transformers model;
    `pluralign.embed.remote.ServedOtherwise` for a server saying it serves another model or length
    (`served_setting` names the setting to change)."""
    from pluralign.embed.encoders import SentenceEncoder, make_encoder

    if name.startswith("openai:"):
        from pluralign.embed.models import MINILM_ID, minilm_tokenizer
        from pluralign.embed.named import IDENTITIES
        from pluralign.embed.remote import RemoteEncoder
        from service.requestid import outgoing_headers

        model = model_id or MINILM_ID
        known = IDENTITIES.get(model)  # MiniLM's: the word pieces the local encoder reads, which the server must read too
        if max_length is None and known is not None:
            max_length = known.max_length
        counter = minilm_tokenizer() if model == MINILM_ID else None  # a long text is sent cut to what the server reads
        return RemoteEncoder(name.removeprefix("openai:"), model, api_key=api_key, timeout=timeout_s, request_headers=outgoing_headers,
                             max_length=max_length, counter=counter)
    if is_model_folder(name):
        try:
            return SentenceEncoder(path=name, encoder_id=folder_encoder_id(name))
        except (OSError, ValueError) as exc:  # transformers' words for a folder of something else: "Unrecognized model in ..."
            raise ValueError(f"{name}: not a sentence-transformers model folder ({exc})") from None
    return make_encoder(name)


ENCODER_SETTING = "PLURALIGN_ENCODER (setting encoder)"
SERVED_SETTINGS = {"model": "PLURALIGN_ENCODER_MODEL (setting encoder_model)",
                   "max_length": "PLURALIGN_ENCODER_MAX_LENGTH (setting encoder_max_length)"}


def served_setting(served_otherwise, max_length: int | None, model_id: str | None) -> str:
    """The setting an embeddings server's `ServedOtherwise` asks to change: PLURALIGN_ENCODER_MODEL for another model,
    PLURALIGN_ENCODER_MAX_LENGTH for another length where that setting (`max_length`) gave the length of a model whose
    length is not known here, else PLURALIGN_ENCODER (the server itself: MiniLM's 256 is no setting's, and the
    settings refuse another there)."""
    from pluralign.embed.models import MINILM_ID
    from pluralign.embed.named import IDENTITIES

    if served_otherwise.what == "max_length" and (max_length is None or (model_id or MINILM_ID) in IDENTITIES):
        return ENCODER_SETTING
    return SERVED_SETTINGS.get(served_otherwise.what, ENCODER_SETTING)


def embedded(encoder: Encoder, fields: Mapping[str, str]) -> np.ndarray:
    """(N, d) the vectors of `fields`' texts ({the request's field: its text}, e.g. {"messages[2].content": ...}), in
    their order. A text the embeddings server refuses (`RemoteTextsRefused`) is the 400 naming its field, or the 503 to
    send again: `refused_text`."""
    # here: `pluralign serve-embeddings`, which imports this module, needs it not
    from pluralign.embed.remote import RemoteTextsRefused

    try:
        return encoder.encode(list(fields.values()))
    except RemoteTextsRefused as exc:
        raise refused_text(encoder, fields, exc) from None


def refused_text(encoder: Encoder, fields: Mapping[str, str], refused: Exception) -> Exception:
    """What to raise for `refused`, the embeddings server's `RemoteTextsRefused` of `fields`' texts ({the request's
    field: its text}, in the request's order) embedded together, or of some of them (TEI's 413 for a text past its max
    input length where it runs without `--auto-truncate`, vLLM's 400 past its model's): the 400 naming the first field
    whose text it refuses alone, with the server's words (TEI's and vLLM's name the limit), code `text_refused`, once the
    server is seen to embed another text (the feedback worker's probe, `pluralign.store.ingest.PROBE_TEXT`); else
    `refused` itself, the 503 to send again (`service.errors.encoder_unavailable`): a server that refuses the probe too is
    in trouble of its own, and one that embeds each text alone refused them together. Each text is asked alone only
    here, after a refusal, one request each (a pool's 128 texts at most); a RemoteEncoderError of the server meanwhile
    is raised (the 503). Were every refusal that 503, sending the request again would never get
    another answer."""
    from pluralign.embed.remote import RemoteEncoderError, RemoteTextsRefused
    from pluralign.store.ingest import PROBE_TEXT
    from service.errors import bad_request

    try:
        encoder.encode([PROBE_TEXT])
    except RemoteEncoderError:
        return refused
    for field, text in fields.items():
        if len(fields) > 1:
            try:
                encoder.encode([text])
                continue
            except RemoteTextsRefused as exc:
                refused_alone = exc
        else:
            refused_alone = refused
        return bad_request(field, f"the embeddings server (PLURALIGN_ENCODER) refused its text of {len(text)} characters: "
                                  f"{getattr(refused_alone, 'words', '') or 'no reason given'}", "text_refused")
    return refused  # each text embedded alone: the refusal was of them together
