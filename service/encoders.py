"""The encoder a setting names (`PLURALIGN_ENCODER`, `serve-embeddings --encoder`).

Apart from `service.runtime` (which re-exports it) so that `pluralign serve-embeddings`, which needs
an encoder and nothing of the service's store or generators, imports neither lancedb nor peft.
"""

from __future__ import annotations

from pathlib import Path

from pluralign.embed.base import Encoder


def is_model_folder(name: str) -> bool:
    """Whether the encoder (or generator) `name` is a folder (of a sentence-transformers model, a causal LM): never "",
    which pathlib reads as the working folder (an emptied PLURALIGN_ENCODER loaded MiniLM under the encoder id "", which
    `Store` refuses since session small47b: an unknown encoder, named, since review reviewsmall47b; an emptied
    PLURALIGN_GENERATOR loaded the working folder as a model until session small48)."""
    return name != "" and Path(name).is_dir()


def folder_encoder_id(name: str) -> str:
    """The encoder id of the model in folder `name`: the folder's name ("models/minilm/" -> "minilm"), and for a path
    that ends in none ("." in the model's folder) the name of the folder it is (until review reviewsmall47b "", which
    `Store` refuses since session small47b)."""
    path = Path(name)
    return path.name or path.resolve().name or str(path.resolve())


def make_encoder(name: str, model_id: str | None = None, api_key: str | None = None) -> Encoder:
    """`minilm`, `minilm-onnx`, `minilm-onnx-int8`, `smollm2`, a sentence-transformers folder, or
    `openai:URL` for a server speaking OpenAI's /v1/embeddings (`model_id` names its model; default
    MiniLM's id, which the tables and the PAL checkpoint must have been made with). Raises
    ValueError for an unknown name or a folder that holds no sentence-transformers model."""
    from pluralign.embed.encoders import SentenceEncoder, make_encoder

    if name.startswith("openai:"):
        from pluralign.embed.models import MINILM_ID
        from pluralign.embed.remote import RemoteEncoder
        from service.requestid import outgoing_headers

        return RemoteEncoder(name.removeprefix("openai:"), model_id or MINILM_ID, api_key=api_key, request_headers=outgoing_headers)
    if is_model_folder(name):
        try:
            return SentenceEncoder(path=name, encoder_id=folder_encoder_id(name))
        except (OSError, ValueError) as exc:  # transformers' words for a folder of something else: "Unrecognized model in ..."
            raise ValueError(f"{name}: not a sentence-transformers model folder ({exc})") from None
    return make_encoder(name)
