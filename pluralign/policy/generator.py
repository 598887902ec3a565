"""Chat generation: n sampled candidates, or one streamed, from a causal LM with a chat template.

The default policy is SmolLM2-135M-Instruct. Per-user LoRA adapters are picked per request by name
(peft's mixed-batch `adapter_names`), so one base model serves every user and none of the users'
identities live in the model.

Generations take the model in turns, one token step at a time (`pluralign.turns.Turns`, one lane per caller:
`pluralign.turns.caller()`, read in the calling thread). A generation runs alone until another caller's
waits; then, after each token, it hands the model over (transformers calls the stopping criteria between two
steps of its loop, with the loop's state, KV cache included, kept) and resumes when its lane is served again.
So a short answer started while another caller's long one runs ends after its own steps and one step of each
other lane's per token of it (a step of many candidates over a long context costs more than its own), not after
the long one. A long prompt's prefill takes turns too: the prompt but its last token is forwarded
into the KV cache in slices of at most `prefill_slice_tokens` (64) tokens x rows, the model handed to another lane's
generation that waits between two, and `model.generate` goes on from that cache (one forward in one turn: 4
candidates of 1,600 prompt tokens would hold the model ~21 s on two cores). The n rows of one prompt (`n`
candidates) are forwarded once and the cache repeated per row, so a lone long prompt costs one row's prefill, not n;
the tokens are the ones a one-forward prefill gives. transformers' stop-string set-up (~1 s: it reads the tokenizer's
whole vocabulary) is done before the turn is taken, once per stop strings. Each generation in flight keeps its own KV cache
(2 x layers x kv-heads x head-dim x (prompt + new tokens) x candidates values: SmolLM2-135M in fp32, 46 KB a
token a candidate, 0.56 GB for 8 candidates of 500 + 1,024 tokens); the caller bounds how many run at once
(the service: `generation_workers`). A seeded generation gives the same text interleaved as alone: torch's
global RNG state is kept across the turns it hands over (and the next generation finds it freshly seeded).
Loading an adapter takes a turn of its own (between two token steps of the generations in flight: each generation's
rows name their adapter, the base's too, so a new one applies to none of them); dropping one waits for the
generations in flight that use it to end (generations for it that come meanwhile wait behind it), then takes a turn
of its own: the others go on meanwhile.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from pluralign.device import default_device
from pluralign.embed.models import quiet_loading
from pluralign.policy.chat_template import chat_prompt_ids
from pluralign.policy.styles import in_latin_script, last_question
from pluralign.turns import Turns, caller

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed batch


@dataclass(frozen=True)
class Sampling:
    """How to sample, in OpenAI's terms."""

    temperature: float = 0.7  # 0 = greedy
    top_p: float = 1.0  # nucleus mass kept
    max_tokens: int = 128  # new tokens per candidate
    stop: tuple[str, ...] = ()  # generation ends at the first of these (transformers' stop_strings); not included
    seed: int | None = None  # fixes sampling for reproducible tests
    frequency_penalty: float = 0.0  # OpenAI's: logit -= penalty * times the token was generated so far
    presence_penalty: float = 0.0  # OpenAI's: logit -= penalty once the token was generated at all

    def __post_init__(self) -> None:
        for name in ("frequency_penalty", "presence_penalty"):
            if not -2 <= getattr(self, name) <= 2:
                raise ValueError(f"`{name}` must be in [-2, 2], got {getattr(self, name)}")
        if not 0 <= self.temperature <= 2:
            raise ValueError(f"`temperature` must be in [0, 2], got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"`top_p` must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"`max_tokens` must be at least 1, got {self.max_tokens}")


class Cancelled(Exception):
    """The generation was stopped by its `cancel` event (the client went away); nothing is returned."""


class RemoteGeneratorError(RuntimeError):
    """The generation server failed, could not be reached in time, or answered something that is not a chat completion
    (`pluralign.policy.remote.RemoteGenerator`'s, importable from there; here, so that the service tells it apart
    without importing the `openai` client)."""


class GenerationTimedOut(RemoteGeneratorError):
    """The generation server did not send an answer in time: a whole one (a chat's, an adapter's load) within the bound
    of each try (`pluralign.policy.remote.RemotePolicy.timeout_s`, connecting included, to its last byte: a server
    answering a byte at a time is given up there), `tries` of them; or a streamed chat's within a stream's bounds (its
    first piece within `timeout_s`, then no piece for `stream_idle_s`, or not whole within `stream_timeout_s`). `bound`: the RemotePolicy field of the bound passed, `bound_s` its seconds; `said`: what the
    server did not do, in words naming no address ("did not send its whole answer within 120 s"). The service answers
    it 503 with Retry-After, naming the generation server, the bound and its setting (`generator_` + `bound`)."""

    def __init__(self, reason: str, bound_s: float, tries: int = 1, bound: str = "timeout_s", said: str = ""):
        super().__init__(reason)
        self.bound_s, self.tries, self.bound = bound_s, tries, bound
        self.said = said or f"did not send its whole answer within {bound_s:g} s"

    def __reduce__(self):  # pickle makes an exception again from its `args` (the reason alone): a worker process's
        return type(self), (self.args[0], self.bound_s, self.tries, self.bound, self.said)  # else a TypeError there


class GenerationRefused(RemoteGeneratorError):
    """The generation server refused a chat as the client's fault (400, 413 or 422: e.g. its messages and max_tokens
    exceed the model's context). Sending it again gets the same answer: the service answers it with a 400 naming
    `param` (the request's field the server named, else "messages") and the server's `reason`."""

    def __init__(self, reason: str, param: str = "messages"):
        super().__init__(reason)
        self.reason, self.param = reason, param


class PromptNotCounted(RemoteGeneratorError):
    """The generation server's tokenizer did not count a chat's prompt in time (`RemotePolicy.tokenize_timeout_s`), could
    not be reached, or failed (a 5xx): the chat is not sent uncounted (the service's prompt bounds would bound nothing),
    and the service answers it 503 with Retry-After. `why`: what happened, in words naming no address ("no answer within
    5 s", "answered 503", "unreachable")."""

    def __init__(self, reason: str, why: str):
        super().__init__(reason)
        self.why = why

    def __reduce__(self):  # as GenerationTimedOut's: whole across a process
        return type(self), (self.args[0], self.why)


class AdapterNotLoaded(ValueError):
    """The adapter named for a generation is not loaded (never was, or dropped since its name was taken: an adapter
    pool's eviction, a user's DELETE); raised before any token is generated."""


class AdapterNotKept(AdapterNotLoaded):
    """A remote generation server answered a chat for the adapter as for one it does not hold, even just after it
    loaded it again (`pluralign.policy.remote`): asking the adapter pool again only loads it again in vain."""


@dataclass(frozen=True)
class Candidate:
    text: str
    finish_reason: str  # "stop" (end of turn or a stop string) or "length"
    tokens: int  # completion tokens generated
    style: str | None = None  # the AnswerStyle's name when generated in a style
    # a stream's final Candidate: its prompt's tokens as the generator counted them for it (a remote server's `usage` of
    # that stream), so none is asked once the answer streamed; None from `generate`, which returns the count beside them
    prompt_tokens: int | None = None


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the first stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def stripped_pieces(pieces: Iterable[str]) -> Iterator[str]:
    """`pieces` of an answer as pieces that join to the answer stripped, as candidates' texts are: leading
    whitespace skipped, whitespace held back until visible text follows it; no empty piece. What every stream sends,
    a local generator's (`Generator.stream`, after its stop strings) and a remote one's."""
    held, started = "", False
    for piece in pieces:
        if not started:
            piece = piece.lstrip()
            if not piece:
                continue
            started = True
        body = held + piece
        visible = body.rstrip()
        if visible:
            yield visible
        held = body[len(visible) :]


class Penalties:
    """OpenAI's frequency and presence penalties as a logits processor, over the answer's own tokens:
    logit[j] -= frequency * count[j] + presence * (count[j] > 0)."""

    def __init__(self, prompt_length: int, frequency: float, presence: float):
        self.prompt_length, self.frequency, self.presence = prompt_length, frequency, presence

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:  # (B, T), (B, V) -> (B, V)
        generated = input_ids[:, self.prompt_length :]  # (B, T_new)
        if generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))  # (B, V)
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


class ModelUse:
    """The adapter each generation in flight uses: dropping one (peft deletes its weights from the shared layers)
    waits for the generations using it (one paused between two tokens would resume without it), and generations for
    it that come meanwhile wait behind the drop (then find it gone); generations for other adapters, and the base's,
    go on (before: a drop waited for every generation in flight with the adapter pool's lock held, and every
    generation that came meanwhile waited behind it, so one tenant's DELETE or a new user's load evicting another's
    adapter held every tenant's chats until the longest chat running, another tenant's, ended)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._using: Counter[str | None] = Counter()  # generations in flight per adapter (None: the base)
        self._dropping: Counter[str] = Counter()  # drops waiting or running per adapter

    @contextmanager
    def generation(self, adapter: str | None) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._dropping[adapter])
            self._using[adapter] += 1
        try:
            yield
        finally:
            with self._cond:
                self._using[adapter] -= 1
                self._using += Counter()  # no entry left per adapter ever used
                self._cond.notify_all()

    def in_use(self) -> set[str]:
        """The adapters of the generations in flight (the base's None left out)."""
        with self._cond:
            return {adapter for adapter, count in self._using.items() if count and adapter is not None}

    @contextmanager
    def drop(self, adapter: str) -> Iterator[None]:
        with self._cond:
            self._dropping[adapter] += 1
            try:
                self._cond.wait_for(lambda: not self._using[adapter])
            except BaseException:
                self._dropping[adapter] -= 1
                self._dropping += Counter()
                self._cond.notify_all()
                raise
        try:
            yield
        finally:
            with self._cond:
                self._dropping[adapter] -= 1
                self._dropping += Counter()
                self._cond.notify_all()


class _InTurns:
    """A stopping criterion that never stops a generation: between two of its token steps, it hands the model to
    a generation of another lane that waits (`Turns.pass_turn`) and resumes once its lane is served again. torch's
    RNG state (the CPU's, and the CUDA device's) is kept across the pause: the generations run meanwhile sample
    from it too, and a seeded generation must give the same text interleaved as alone. The one that runs next finds
    the RNG freshly seeded, not at this state: one starting unseeded would otherwise sample the very draws this one
    takes when it resumes (one random stream for both, shifted)."""

    def __init__(self, turns: Turns, lane: Hashable, device: torch.device):
        self.turns, self.lane, self.device = turns, lane, device
        self.handed_over = 0  # times the model was handed to another generation

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> bool:
        if self.turns.waiting():
            cpu = torch.get_rng_state()
            cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
            torch.default_generator.seed()  # a fresh state for whoever runs next (torch.seed(): 0.6 ms, this 10 us)
            if cuda is not None:
                torch.cuda.default_generators[self.device.index if self.device.index is not None else torch.cuda.current_device()].seed()
            try:
                self.handed_over += self.turns.pass_turn(self.lane)
            finally:
                torch.set_rng_state(cpu)
                if cuda is not None:
                    torch.cuda.set_rng_state(cuda, self.device)
        return False


def _keys_and_values_cached(config) -> bool:
    """Whether every layer of the model of `config` caches attention keys and values (transformers' `DynamicLayer`,
    sliding window included), so its prefill can be forwarded in slices into a `DynamicCache`. Not a state-space or
    linear-attention layer (Mamba's `LinearAttentionLayer`), nor a config transformers cannot build a cache for."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, LinearAttentionCacheLayerMixin

    try:
        layers = DynamicCache(config=config).layers
    except Exception:  # noqa: BLE001 (an architecture transformers builds no such cache for: one forward, as `generate`)
        return False
    return bool(layers) and all(isinstance(layer, DynamicLayer) and not isinstance(layer, LinearAttentionCacheLayerMixin)
                                for layer in layers)


_ROW_ADAPTERS = threading.local()  # `names`: the adapter of each row of the batch the thread generates (peft's adapter_names)


def _inject_adapter_names(module, args, kwargs):
    """A LoRA layer's forward pre-hook: the generating thread's rows' adapters, as peft's `adapter_names`. peft's own
    hooks (`generate(adapter_names=...)`) are registered on the shared layers for a whole `generate`, so two
    generations in turns would each run with the other's; this one reads the thread's own."""
    names = getattr(_ROW_ADAPTERS, "names", None)
    if names is not None:
        kwargs["adapter_names"] = names
    return args, kwargs


class Generator:
    """A causal LM and its tokenizer, ready to answer chat messages."""

    def __init__(self, model, tokenizer, model_id: str, prefill_slice_tokens: int = 64):
        """`prefill_slice_tokens`: prompt tokens x rows forwarded in one turn of a long prompt's prefill (see the module);
        a smaller slice lets another lane's token in sooner, at the cost of more forwards."""
        if prefill_slice_tokens < 1:
            raise ValueError(f"`prefill_slice_tokens` must be at least 1, got {prefill_slice_tokens}")
        self.model = model.eval()
        self.prefill_slice_tokens = prefill_slice_tokens
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model_id = model_id
        self._use = ModelUse()  # the adapter each generation in flight uses: a drop waits for those using it
        self._turns = Turns()  # generations in flight take the model a token step at a time, round-robin over lanes
        self._adapter_hooks: list = []  # `_inject_adapter_names` on each LoRA layer
        self._stop_criteria: dict[tuple[str, ...], object] = {}  # transformers' StopStringCriteria per stop strings (~1 s each)
        self._sliceable = _keys_and_values_cached(model.config)  # (a state-space model's prefill is one forward)
        # stop-string set-ups running now (seconds of CPU each, no forward pass): a child process reports them as its
        # progress (`pluralign.policy.process`), so they are not taken for a hang
        self.setting_up = 0
        self._setting_up_lock = threading.Lock()

    @classmethod
    def from_folder(cls, folder: str | Path, model_id: str | None = None, device: torch.device | None = None,
                    prefill_slice_tokens: int = 64) -> Generator:
        """A model saved with `save_pretrained` (weights + tokenizer) in `folder`."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        with quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(str(folder)).to(device or default_device())
        return cls(model, tokenizer, model_id or Path(folder).name, prefill_slice_tokens)

    @classmethod
    def smollm2(cls, device: torch.device | None = None) -> Generator:
        from pluralign.embed.models import SMOLLM2_ID, load_smollm2

        model, tokenizer = load_smollm2(device)
        return cls(model, tokenizer, SMOLLM2_ID)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def context_tokens(self) -> int | None:
        """Tokens the model attends over (prompt + answer), from its config; None if it does not say."""
        return int(getattr(self.model.config, "max_position_embeddings", 0)) or None

    @property
    def shared_prefill(self) -> bool:
        """Whether the `n` candidates of one prompt (`generate`) share one prefill: a prompt past one slice is forwarded
        once and its cache repeated per row (`_prefill_in_slices`). False for a model that caches no attention keys and
        values (Mamba): `model.generate` forwards every row. Styled candidates (`generate_styled`) are different
        prompts: each prefills its own."""
        return self._sliceable

    # ---- adapters ---------------------------------------------------------------------------

    @property
    def adapters(self) -> set[str]:
        config = getattr(self.model, "peft_config", None)
        return set(config) if config else set()

    @property
    def adapters_in_use(self) -> set[str]:
        """The adapters generations in flight use (a drop of one waits for them: the adapter pool evicts these last)."""
        return self._use.in_use()

    def load_adapter(self, name: str, folder: str | Path) -> None:
        """Load a saved LoRA adapter under `name` (the base model is wrapped on first use). Raises
        `pluralign.policy.adapters.AdapterError` naming the folder when its files cannot be loaded;
        what the failed load made of the adapter is removed."""
        from peft import PeftModel

        from pluralign.policy.adapters import AdapterError, reading_adapter

        # between two token steps of the generations in flight (a turn of its own: none runs meanwhile), not after
        # them: peft adds the adapter's weights beside the others' and wraps layers in place, and a paused generation,
        # whose rows name their adapters (the base's too, `_row_adapters`), resumes through the new layers unchanged
        with self._turns.turn(("adapter", name)):
            try:
                with reading_adapter(folder):
                    if isinstance(self.model, PeftModel):
                        self.model.load_adapter(str(folder), adapter_name=name)
                    else:
                        self.model = PeftModel.from_pretrained(self.model, str(folder), adapter_name=name).eval()
            except AdapterError:
                self._drop(name)
                raise
            finally:
                self._hook_adapters()

    def drop_adapter(self, name: str) -> None:
        """Unload adapter `name`: waits for the generations in flight that use it to end, and generations for it that come
        meanwhile wait behind it (then raise ValueError: not loaded); then takes a turn between two token steps of the
        others (peft deletes its weights beside theirs, or gives back the bare base, whose layers their rows go through
        unchanged as they do after a load)."""
        with self._use.drop(name), self._turns.turn(("adapter", name)):
            try:
                self._drop(name)
            finally:
                self._hook_adapters()

    def _hook_adapters(self) -> None:
        """`_inject_adapter_names` on each LoRA layer the model has now (none once it is the bare base again)."""
        from peft.tuners.lora import LoraLayer
        from peft.utils.other import AuxiliaryTrainingWrapper

        for handle in self._adapter_hooks:
            handle.remove()
        self._adapter_hooks = [
            module.register_forward_pre_hook(_inject_adapter_names, with_kwargs=True)
            for module in (self.model.modules() if self.adapters else ())
            if isinstance(module, (LoraLayer, AuxiliaryTrainingWrapper))
        ]

    def _drop(self, name: str) -> None:
        if name in self.adapters:
            self.model.delete_adapter(name)
            if not self.adapters:  # peft keeps pointing at the deleted adapter: go back to the bare base
                self.model = self.model.unload().eval()
            elif self.model.active_adapter not in self.adapters:
                self.model.set_adapter(next(iter(self.adapters)))

    def _row_adapters(self, adapter: str | None, batch: int) -> list[str]:
        """peft's `adapter_names` for a batch of `batch` rows all for `adapter` (None: the base), also with no
        adapter loaded: an adapter loaded while the generation is paused must not apply to its rows (`load_adapter`).
        Raises ValueError when `adapter` is not loaded."""
        if adapter is not None and adapter not in self.adapters:
            raise AdapterNotLoaded(f"adapter {adapter!r} is not loaded")
        return [adapter or BASE_ADAPTER] * batch

    def _generate_in_turns(
        self, lane: Hashable, ids: torch.Tensor, mask: torch.Tensor, sampling: Sampling, adapter: str | None,
        cancel: threading.Event | None = None, **kwargs,
    ) -> torch.Tensor:
        """`model.generate` from prompts `ids` (B, T), the model taken in turns with other lanes' generations (see
        the module); (B, T + new). Raises Cancelled when `cancel` is set before it began (checked at every token
        after: the caller says what a cancel then means). Raises ValueError for an adapter that is not loaded."""
        from transformers import StoppingCriteriaList

        in_turns = _InTurns(self._turns, lane, self.device)
        stopping = StoppingCriteriaList([in_turns, *self._stop_strings(sampling)])  # (set up before the turn: ~1 s)
        if cancel is not None:
            stopping.append(lambda *_args, **_kw: cancel.is_set())
        with self._use.generation(adapter), self._turns.turn(lane), torch.no_grad():
            if cancel is not None and cancel.is_set():  # gone while waiting for the model
                raise Cancelled("cancelled before generation started")
            _ROW_ADAPTERS.names = self._row_adapters(adapter, ids.shape[0])
            try:
                if sampling.seed is not None:
                    torch.manual_seed(sampling.seed)
                cache = self._prefill_in_slices(ids, mask, in_turns, cancel)
                return self.model.generate(
                    input_ids=ids, attention_mask=mask, max_new_tokens=sampling.max_tokens, eos_token_id=self._stop_token_ids(),
                    pad_token_id=self.tokenizer.pad_token_id, stopping_criteria=stopping, past_key_values=cache,
                    **self._sample_kwargs(sampling, ids.shape[1]), **kwargs,
                )
            finally:
                _ROW_ADAPTERS.names = None

    def _prefill_in_slices(self, ids: torch.Tensor, mask: torch.Tensor, in_turns: _InTurns, cancel: threading.Event | None):
        """The KV cache of prompts `ids` (B, T) (left-padded where `mask` is 0) but their last token, forwarded in
        slices of at most `prefill_slice_tokens` tokens x rows, the model handed to another lane's generation that waits
        between two (`in_turns`): `model.generate` goes on from it with the last token, as from its own prefill
        (transformers forwards only the tokens past the cache). None when the prompt fits one slice, or the model
        caches no keys and values (a state-space model, Mamba: its cache cannot be continued by a slice of several
        tokens): `generate` prefills it in its one forward. Rows that are all the same prompt (n candidates) are forwarded once and the
        cache repeated per row. Raises Cancelled when `cancel` is set between two slices. Positions as `generate`
        gives them: (cumulative mask - 1), 1 on padding."""
        from transformers import DynamicCache

        rows, row_mask = ids, mask
        if ids.shape[0] > 1 and bool((ids == ids[:1]).all()) and bool((mask == mask[:1]).all()):
            rows, row_mask = ids[:1], mask[:1]  # (1, T)
        prefix = ids.shape[1] - 1
        width = max(1, self.prefill_slice_tokens // rows.shape[0])
        if prefix <= width or not self._sliceable:
            return None
        positions = (row_mask.long().cumsum(-1) - 1).masked_fill(row_mask == 0, 1)  # (b, T)
        cache = DynamicCache(config=self.model.config)
        names, _ROW_ADAPTERS.names = _ROW_ADAPTERS.names, _ROW_ADAPTERS.names[: rows.shape[0]]
        try:
            for start in range(0, prefix, width):
                if start:
                    in_turns(ids, None)  # another lane's turn, if one waits
                    if cancel is not None and cancel.is_set():
                        raise Cancelled(f"cancelled after {start} of {prefix + 1} prompt tokens' prefill")
                end = min(prefix, start + width)
                self.model(input_ids=rows[:, start:end], attention_mask=row_mask[:, :end], position_ids=positions[:, start:end],
                           past_key_values=cache, use_cache=True, logits_to_keep=1)
        finally:
            _ROW_ADAPTERS.names = names
        if rows.shape[0] != ids.shape[0]:
            cache.batch_repeat_interleave(ids.shape[0])
        return cache

    # ---- generation -------------------------------------------------------------------------

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> torch.Tensor:
        ids = torch.tensor([chat_prompt_ids(self.tokenizer, messages)], dtype=torch.long)
        return ids.to(self.device)  # (1, T)

    def prompt_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        return int(self.encode_chat(messages).shape[1])

    def _sample_kwargs(self, sampling: Sampling, prompt_length: int) -> dict:
        kwargs: dict = {"do_sample": False} if sampling.temperature == 0 else {
            "do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p,
        }
        if sampling.frequency_penalty or sampling.presence_penalty:
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList(
                [Penalties(prompt_length, sampling.frequency_penalty, sampling.presence_penalty)]
            )
        return kwargs

    def _stop_strings(self, sampling: Sampling) -> list:
        """transformers' `StopStringCriteria` for `sampling.stop` (none without): each row's generation ends once its
        text holds a stop string (the tokens that spell it are generated, and cut from the text afterwards). Setting
        one up reads the tokenizer's whole vocabulary (~1 s for SmolLM2's 49k tokens): built here, before the
        generation takes its turn (passed as `stop_strings`, `generate` built it inside the turn, and every other
        lane waited), and kept per stop strings (it holds no state of a generation)."""
        if not sampling.stop:
            return []
        if (criteria := self._stop_criteria.get(sampling.stop)) is None:
            from transformers import StopStringCriteria

            with self._setting_up_lock:
                self.setting_up += 1
            try:
                criteria = StopStringCriteria(self.tokenizer, list(sampling.stop))
            finally:
                with self._setting_up_lock:
                    self.setting_up -= 1
            if len(self._stop_criteria) >= 32:
                self._stop_criteria.pop(next(iter(self._stop_criteria)), None)
            self._stop_criteria[sampling.stop] = criteria
        return [criteria]

    def _stop_token_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != self.tokenizer.unk_token_id:
            ids.add(im_end)
        return sorted(i for i in ids if i is not None)

    def _sample_rows(
        self, ids: torch.Tensor, mask: torch.Tensor, sampling: Sampling, adapter: str | None, cancel: threading.Event | None = None
    ) -> list[list[int]]:
        """Sample from prompts `ids` (B, T) (left-padded where `mask` is 0); the new tokens of each row.
        Raises Cancelled when `cancel` is set before or during generation (checked at every token)."""
        out = self._generate_in_turns(caller(), ids, mask, sampling, adapter, cancel)  # (B, T + new)
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled after {out.shape[1] - ids.shape[1]} of {sampling.max_tokens} tokens")
        return out[:, ids.shape[1] :].tolist()

    def _answer(self, row: list[int], sampling: Sampling) -> tuple[str, bool, int]:
        """(text before any stop, whether a stop token or string ended it, tokens really generated)."""
        stop_ids = self._stop_token_ids()
        ended = next((i for i, t in enumerate(row) if t in stop_ids), None)
        tokens = row if ended is None else row[:ended]
        text, stopped = cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), sampling.stop)
        if stopped and ended is None:  # a row that stopped on a string while others went on: padding follows
            tokens = self._through_stop(tokens, sampling.stop)
        return text, ended is not None or stopped, len(tokens)

    @torch.no_grad()
    def generate(
        self, messages: Sequence[dict[str, str]], n: int = 1, sampling: Sampling = Sampling(), adapter: str | None = None,
        cancel: threading.Event | None = None,
    ) -> tuple[list[Candidate], int]:
        """`n` candidates for the conversation, and the prompt's token count. Setting `cancel` stops
        the generation at its next token and raises Cancelled (the model is free for the next one)."""
        if n < 1:
            raise ValueError(f"`n` must be at least 1, got {n}")
        ids = self.encode_chat(messages)  # (1, T)
        rows = self._sample_rows(ids.expand(n, -1), torch.ones_like(ids).expand(n, -1), sampling, adapter, cancel)
        candidates = []
        for row in rows:
            text, ended, tokens = self._answer(row, sampling)
            candidates.append(Candidate(text=text.strip(), finish_reason="stop" if ended else "length", tokens=tokens))
        return candidates, int(ids.shape[1])

    def _through_stop(self, tokens: list[int], stop: Sequence[str]) -> list[int]:
        """The shortest prefix of `tokens` whose text holds a stop string (what was really generated)."""
        for end in range(1, len(tokens) + 1):
            if cut_at_stop(self.tokenizer.decode(tokens[:end], skip_special_tokens=True), stop)[1]:
                return tokens[:end]
        return tokens

    @torch.no_grad()
    def generate_styled(
        self, messages: Sequence[dict[str, str]], styles: Sequence, sampling: Sampling = Sampling(), adapter: str | None = None,
        cancel: threading.Event | None = None,
    ) -> tuple[list[Candidate], int]:
        """One candidate per `pluralign.policy.styles.AnswerStyle`, in one left-padded batch: each
        row is the conversation with the style's instruction, then the style's opening as the start of
        the answer. Returns the candidates and the plain conversation's prompt token count. `cancel`:
        as in `generate` (raises Cancelled)."""
        if not styles:
            raise ValueError("no styles given")
        # no opening a stop string would cut, nor an English one before a question in another script
        latin = in_latin_script(last_question(messages))  # once for every style
        styles = [style.under_stops(sampling.stop).for_question(messages, latin) for style in styles]
        prompts = []
        for style in styles:
            prompts.append(chat_prompt_ids(self.tokenizer, style.messages(list(messages)), suffix=style.opening))
        width = max(len(r) for r in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in prompts], device=self.device)  # (n, T) left-padded
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in prompts], device=self.device)
        candidates = []
        for style, row in zip(styles, self._sample_rows(ids, mask, sampling, adapter, cancel), strict=True):
            continuation, ended, tokens = self._answer(row, sampling)
            text, cut = style.finish(continuation)
            text, stopped = cut_at_stop(text, sampling.stop)  # the opening is the answer's text too: no stop string in it
            reason = "stop" if ended or cut or stopped else "length"
            candidates.append(Candidate(text=text.strip(), finish_reason=reason, tokens=tokens, style=style.name))
        return candidates, self.prompt_tokens(messages)

    def stream(
        self, messages: Sequence[dict[str, str]], sampling: Sampling = Sampling(), adapter: str | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[str | Candidate]:
        """Text pieces as they are generated, then the final Candidate (its full text and reason, its prompt's tokens). Raises
        AdapterNotLoaded, before any piece, when `adapter` is not loaded or is dropped before the generation begins;
        Cancelled, before any piece and with nothing generated, when `cancel` is set before the call (its reader left
        while it was planned, as `generate`'s). Once begun, a stream is stopped by closing it."""
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled before generation started")
        ids = self.encode_chat(messages)
        stop_ids = self._stop_token_ids()
        streamer = text_streamer(self.tokenizer)
        counter = _TokenCounter()
        cancel = threading.Event()  # set when a stop string ends the answer early

        self._row_adapters(adapter, 1)  # an adapter that is not loaded: ValueError here, not in the generating thread
        lane = caller()  # the consumer's: the generation runs on a thread of its own
        failed: list[Exception] = []  # raised here, not lost in the generating thread

        def run() -> None:
            try:
                self._generate_in_turns(lane, ids, torch.ones_like(ids), sampling, adapter, cancel, streamer=_Both(streamer, counter))
            except Cancelled:  # the consumer left before the model was free
                pass
            except Exception as exc:  # e.g. AdapterNotLoaded: dropped while this waited behind the drop
                failed.append(exc)
            finally:
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            text, stopped = yield from self._pieces(streamer, cancel, sampling)
        finally:  # also when the consumer stops early (client gone) or the streamer timed out:
            cancel.set()  # the model stops at its next token and lets go of the lock
        worker.join()
        if failed:  # before any piece for an adapter dropped meanwhile (AdapterNotLoaded): the caller may ask again
            raise failed[0]
        ended = stopped or counter.last in stop_ids
        tokens = counter.count - (1 if counter.last in stop_ids else 0)
        yield Candidate(text=text.strip(), finish_reason="stop" if ended else "length", tokens=tokens, prompt_tokens=int(ids.shape[1]))

    @staticmethod
    def _pieces(streamer, cancel: threading.Event, sampling: Sampling) -> Iterator[str]:
        """The streamer's text in pieces that join to the final text (stripped, as `generate` returns it: the
        whitespace of `stripped_pieces`, as a remote stream's); returns (the whole text, whether a stop string ended
        it). A stop string's length less one is held back: it may span pieces, and the answer then ends before it."""
        text, stopped = "", False
        hold = max((len(s) for s in sampling.stop if s), default=1) - 1

        def before_any_stop() -> Iterator[str]:  # the text no stop string can begin in any more
            nonlocal text, stopped
            sent = 0
            for piece in streamer:
                text += piece
                if sampling.stop:
                    cut, stopped = cut_at_stop(text, sampling.stop)
                    if stopped:  # begins after `sent`: were it before, the held-back text had shown it
                        cancel.set()
                        text = cut
                        break
                safe = max(sent, len(text) - hold)
                yield text[sent:safe]
                sent = safe
            yield text[sent:]

        yield from stripped_pieces(before_any_stop())
        return text, stopped


def text_streamer(tokenizer, timeout: float = 120):
    """A `transformers.TextIteratorStreamer` of a generation's new tokens: iterating it gives the text
    in pieces as it is generated (waiting at most `timeout` seconds for each), each piece whole characters.

    transformers' own hands text over only up to the last space, or when it ends in a CJK ideograph, so an
    answer in kana or Thai (no spaces) came in one piece at its end. This one hands over all the text
    decoded so far unless its last character is U+FFFD, the bytes of a character (an emoji split across
    byte-level tokens) still coming: the streamer asks `_is_chinese_char` of the last character whether
    the text up to it may go out. Decoding is prefix-stable for the tokenizers served (SmolLM2's byte-level
    BPE, `clean_up_tokenization_spaces` false), so what went out is never taken back."""
    from transformers import TextIteratorStreamer

    class WholeCharacters(TextIteratorStreamer):
        def _is_chinese_char(self, cp: int) -> bool:
            return cp != 0xFFFD

    return WholeCharacters(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout)


class _TokenCounter:
    """A streamer that counts new tokens and remembers the last one."""

    def __init__(self):
        self.count, self.last, self.prompt_seen = 0, None, False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        self.count += int(value.numel())
        self.last = int(value.reshape(-1)[-1])

    def end(self) -> None:
        pass


class _Both:
    """Feeds generation output to two streamers."""

    def __init__(self, first, second):
        self.first, self.second = first, second

    def put(self, value):
        self.first.put(value)
        self.second.put(value)

    def end(self):
        self.first.end()
        self.second.end()
