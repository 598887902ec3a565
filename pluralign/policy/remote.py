"""Generation on an OpenAI-compatible server, e.g. vLLM with multi-LoRA on a GPU machine.

Past one machine, the API replicas keep retrieval, context building and reranking, and send
generation to a GPU server. A user's LoRA adapter is addressed as the request's `model` (vLLM serves
each `--lora-modules name=path` under its name, and loads more at run time through
`/v1/load_lora_adapter` when `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`). The interface matches the
local `Generator`: `generate`, `stream`, `load_adapter`, `drop_adapter`, `adapters`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from pluralign.policy.generator import Candidate, Sampling


class RemoteGeneratorError(RuntimeError):
    """The generation server failed or answered something that is not a chat completion."""


class RemoteGenerator:
    def __init__(self, base_url: str, model_id: str, api_key: str | None = None, timeout: float = 120.0):
        self.base_url = base_url.rstrip("/")
        self.model_id = model_id
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self._adapters: dict[str, str] = {}  # adapter name -> path the server loaded it from

    @property
    def adapters(self) -> set[str]:
        return set(self._adapters)

    def load_adapter(self, name: str, folder: str | Path) -> None:
        """Ask the server to load a peft adapter folder (a path the server can read) under `name`."""
        self._post("/load_lora_adapter", {"lora_name": name, "lora_path": str(folder)})
        self._adapters[name] = str(folder)

    def drop_adapter(self, name: str) -> None:
        if name in self._adapters:
            self._post("/unload_lora_adapter", {"lora_name": name})
            del self._adapters[name]

    def _post(self, path: str, body: dict) -> httpx.Response:
        try:
            response = self._client.post(path, json=body)
        except httpx.HTTPError as exc:
            raise RemoteGeneratorError(f"generation server at {self.base_url} unreachable: {exc}") from exc
        if response.status_code >= 400:
            raise RemoteGeneratorError(f"generation server answered {response.status_code} on {path}: {response.text[:300]}")
        return response

    def _body(self, messages: Sequence[dict[str, str]], n: int, sampling: Sampling, adapter: str | None, stream: bool) -> dict:
        if adapter is not None and adapter not in self._adapters:
            raise ValueError(f"adapter {adapter!r} is not loaded")
        body = {
            "model": adapter or self.model_id,
            "messages": list(messages),
            "n": n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "stream": stream,
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        return body

    def generate(
        self, messages: Sequence[dict[str, str]], n: int = 1, sampling: Sampling = Sampling(), adapter: str | None = None
    ) -> tuple[list[Candidate], int]:
        if n < 1:
            raise ValueError(f"`n` must be at least 1, got {n}")
        data = self._post("/chat/completions", self._body(messages, n, sampling, adapter, stream=False)).json()
        try:
            choices = sorted(data["choices"], key=lambda c: c["index"])
            usage = data.get("usage") or {}
            per_choice = usage.get("completion_tokens", 0) // max(1, len(choices))
            candidates = [
                Candidate(
                    text=(c["message"]["content"] or "").strip(),
                    finish_reason=c.get("finish_reason") or "stop",
                    tokens=per_choice,
                )
                for c in choices
            ]
            return candidates, int(usage.get("prompt_tokens", 0))
        except (KeyError, TypeError) as exc:
            raise RemoteGeneratorError(f"not a chat completion: {str(data)[:300]}") from exc

    def stream(
        self, messages: Sequence[dict[str, str]], sampling: Sampling = Sampling(), adapter: str | None = None
    ) -> Iterator[str | Candidate]:
        """Text pieces from the server's server-sent events, then the final Candidate."""
        body = self._body(messages, 1, sampling, adapter, stream=True)
        text, finish, tokens = "", "stop", 0
        with self._client.stream("POST", "/chat/completions", json=body) as response:
            if response.status_code >= 400:
                response.read()
                raise RemoteGeneratorError(f"generation server answered {response.status_code}: {response.text[:300]}")
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[len("data:") :].strip()
                if payload == "[DONE]":
                    break
                chunk = json.loads(payload)
                for choice in chunk.get("choices", []):
                    piece = (choice.get("delta") or {}).get("content") or ""
                    if piece:
                        text += piece
                        tokens += 1
                        yield piece
                    finish = choice.get("finish_reason") or finish
        yield Candidate(text=text.strip(), finish_reason=finish, tokens=tokens)

    def prompt_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        """The server counts prompt tokens; a streamed answer reports none, so estimate by words."""
        return sum(len(m.get("content", "").split()) for m in messages)
