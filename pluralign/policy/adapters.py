"""LoRA adapters on disk and in memory: a registry keyed by (tenant, user), and a pool that serves
many adapters on one base model in the same batch.

On disk an adapter is peft's own layout (`adapter_config.json` + `adapter_model.safetensors`, what
`PeftModel.from_pretrained` and vLLM's `--lora-modules name=path` read) plus `pluralign.json`, our
metadata: schema version, base model id, number of shots, data version, metrics. Loading checks the
base model id and refuses an adapter built for another model.

In memory, `AdapterPool` keeps the most recently used adapters loaded on one peft model within a
byte budget, and scores or generates for a batch whose rows each name their user; rows of users
without an adapter use the fallback (the FSPO adapter when given, else the bare base model).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import quote, unquote

import msgspec
import torch

from pluralign.cache import FairLRU, Takes
from pluralign.checks import whole
from pluralign.data.decode_words import said
from pluralign.data.record import Persisted
from pluralign.files import DECODE_ERRORS, other_schema, staged_folder, writing_to
from pluralign.policy.logprobs import BASE_ADAPTER, encode_responses, prompt_ids, sequence_logprobs

SCHEMA_VERSION = 1
META_FILE = "pluralign.json"
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
ADAPTER_FILES = (META_FILE, *PEFT_FILES, "README.md", "metrics.json")  # what an adapter folder may hold (peft writes a README)
FALLBACK_ADAPTER = "fallback"  # the pool's name for the adapter serving users without their own

log = logging.getLogger(__name__)


class AdapterMeta(Persisted, kw_only=True):
    """What an adapter was built from; written next to peft's files as `pluralign.json`."""

    schema_version: int = SCHEMA_VERSION
    kind: str  # "fspo" (population few-shot policy) or "user" (one user's adapter)
    base_model: str  # id of the base model the LoRA weights apply to
    shots: int  # comparisons shown in context during training (0 = none)
    data_version: str  # content hash of the training comparisons
    loss: str = "dpo"
    beta: float = 0.1
    metrics: dict[str, int | float | None] = {}  # counts whole; None: not measured (no comparison held out: fewer than 5)
    created_at: float = 0.0
    tenant: str | None = None
    user: str | None = None
    parent: str | None = None  # data_version of the adapter training started from, if any
    # when a service received it (unix seconds): one trained elsewhere and registered there keeps its
    # `created_at`, which may be older than a DELETE it came after. None: made where it is (`received`)
    received_at: float | None = None

    def received(self) -> float:
        """When the adapter reached the service whose registry holds it: what a DELETE finished after
        the user came back compares with the time it began (`created_at` for one trained there)."""
        return self.created_at if self.received_at is None else self.received_at


class AdapterError(ValueError):
    """An adapter that cannot be used here: missing, unreadable, or built for another base model."""


_meta_decoder = msgspec.json.Decoder(AdapterMeta)
_meta_encoder = msgspec.json.Encoder()


def seeded_lora(model, lora_config, seed: int):
    """`peft.get_peft_model(model, lora_config)` with the adapter's random initialization (LoRA's A
    matrices; B starts at zero) drawn under `seed` in a forked torch RNG: the same seed gives the same
    adapter whatever ran before in the process, and the caller's random state is left as it was.
    Without it, peft draws from the process's RNG, so a run that sampled text or trained another
    adapter first would start from another adapter. Returns the peft model (wraps `model` in place)."""
    from peft import get_peft_model

    with torch.random.fork_rng():  # every device the caller may draw on
        torch.manual_seed(seed)
        return get_peft_model(model, lora_config)


def data_version(records) -> str:
    """A short content hash of training comparisons (msgspec structs), independent of nothing else."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(_meta_encoder.encode(record))
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def read_meta(folder: str | Path) -> AdapterMeta:
    """The adapter description in `folder`. Raises AdapterError naming the file when there is none,
    it cannot be read (an OSError) or it is not a description of this schema version."""
    folder = Path(folder)
    path = folder / META_FILE
    if not path.exists():
        raise AdapterError(f"{folder} is not a pluralign adapter (no {META_FILE})")
    try:
        data = path.read_bytes()
    except OSError as exc:  # a folder in its place, an I/O error, a permission: unreadable, as damaged
        raise AdapterError(f"{path}: the adapter description cannot be read: {exc.strerror or exc}") from None
    try:
        raw = msgspec.json.decode(data)
    except DECODE_ERRORS as exc:
        raise AdapterError(f"{path}: not an adapter description: {exc}") from None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:
        raise AdapterError(f"{folder}: {other_schema('adapter', version, SCHEMA_VERSION)}")
    try:
        return _meta_decoder.decode(data)
    except DECODE_ERRORS as exc:  # a field missing or of another type
        raise AdapterError(f"{path}: not an adapter description: {said(str(exc)) if isinstance(exc, msgspec.ValidationError) else exc}") from None


@contextmanager
def reading_adapter(folder: str | Path):
    """Around peft's loading of an adapter: a file cut short (a crash mid-copy), weights shaped for
    another model or a configuration peft cannot apply (a field of the wrong type) are an
    AdapterError naming the folder, not safetensors', torch's or peft's own."""
    from safetensors import SafetensorError

    try:
        yield
    except AdapterError:
        raise
    except (SafetensorError, RuntimeError, TypeError, KeyError, ValueError) as exc:
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AdapterError(f"{folder}: the adapter's weights cannot be loaded (truncated, or for another model), "
                           f"or peft cannot apply its configuration: {problem}") from None


def check_base(meta: AdapterMeta, base_model: str, where: str | Path) -> None:
    """Raises AdapterError naming `where` and both models when the adapter was trained on another base model."""
    if meta.base_model != base_model:
        raise AdapterError(
            f"adapter {where} was trained on base model {meta.base_model!r}, but this model is {base_model!r}; "
            "retrain it on this base model"
        )


def check_files(folder: str | Path) -> None:
    """Whether peft's files in `folder` can be loaded, read before any model is touched (a load
    that fails part way leaves a half-made adapter in the model): both present, adapter_config.json
    a LoRA configuration, adapter_model.safetensors whole. Raises AdapterError naming the folder
    and the file. Reads the weights once (an adapter is a few MB)."""
    from peft import LoraConfig

    from pluralign.files import read_safetensors

    folder = Path(folder)
    missing = [f for f in PEFT_FILES if not (folder / f).is_file()]
    if missing:
        raise AdapterError(f"adapter {folder} lacks {', '.join(missing)}")
    try:
        config = LoraConfig.from_pretrained(str(folder))
    except Exception as exc:  # not JSON, not an object, fields peft does not know or refuses
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AdapterError(f"{folder / PEFT_FILES[0]}: not a LoRA adapter configuration: {problem}") from None
    # peft takes any JSON value for these and fails part way through loading (a half-made adapter)
    for field, value, minimum in (("r", config.r, 1), ("lora_alpha", config.lora_alpha, 0)):
        if not isinstance(value, int | float) or isinstance(value, bool) or value < minimum or (field == "r" and value != int(value)):
            raise AdapterError(f"{folder / PEFT_FILES[0]}: not a LoRA adapter configuration: `{field}` is {value!r}")
    try:
        read_safetensors(folder / PEFT_FILES[1])
    except ValueError as exc:
        raise AdapterError(str(exc)) from None


def write_meta(folder: str | Path, meta: AdapterMeta) -> AdapterMeta:
    """Write `meta` as `folder`'s pluralign.json, `created_at` stamped now (Unix seconds) when it has none; returns it."""
    meta = msgspec.structs.replace(meta, created_at=meta.created_at or time.time())
    (Path(folder) / META_FILE).write_bytes(msgspec.json.format(_meta_encoder.encode(meta)))
    return meta


def save_adapter(model, folder: str | Path, meta: AdapterMeta, adapter_name: str = "default") -> Path:
    """Write one adapter of a peft model in peft's format plus our metadata, replacing `folder` whole
    (`pluralign.files.staged_folder`: a kill mid-save leaves the earlier adapter; of saves to one
    folder at once, the last to finish is the adapter, whole).

    `folder` may be missing, empty or an earlier adapter (ADAPTER_FILES); a folder holding anything
    else is a ValueError before anything is written, since replacing it whole would delete those files."""
    folder = Path(folder)
    # a full disk is an OSError naming the adapter (its weights file when safetensors failed), not the hidden folder
    with staged_folder(folder, ADAPTER_FILES, "LoRA adapter") as tmp, writing_to(folder, weights=folder / PEFT_FILES[1]):
        model.peft_config[adapter_name].base_model_name_or_path = meta.base_model
        # LoRA leaves the vocabulary alone: say so, or peft asks the hub for the base model's config
        model.save_pretrained(str(tmp), selected_adapters=[adapter_name], save_embedding_layers=False)
        if adapter_name != "default":  # peft writes non-default adapters into a subfolder
            for f in (tmp / adapter_name).iterdir():
                f.rename(tmp / f.name)
            (tmp / adapter_name).rmdir()
        write_meta(tmp, meta)
    return folder


def load_adapter(base_model, folder: str | Path, base_model_id: str, trainable: bool = False):
    """(peft model, AdapterMeta): the adapter at `folder` as `base_model`'s "default" adapter, trainable or not.
    Raises AdapterError naming the folder when its description is missing or unreadable (`read_meta`), it was trained
    on another base model than `base_model_id` (`check_base`), or peft cannot load its files (`reading_adapter`)."""
    from peft import PeftModel

    meta = read_meta(folder)
    check_base(meta, base_model_id, folder)
    with reading_adapter(folder):
        return PeftModel.from_pretrained(base_model, str(folder), is_trainable=trainable), meta


def _key_part(value: str, what: str) -> str:
    if not value or value in (".", ".."):
        raise AdapterError(f"invalid {what} {value!r}")
    return quote(value, safe="")


class AdapterRegistry:
    """Adapters on disk under `root/<tenant>/<user>/`, one per (tenant, user)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def folder(self, tenant: str, user: str) -> Path:
        """`root/<tenant>/<user>`, each part quoted. Raises AdapterError for an empty id, `.` or `..`."""
        return self.root / _key_part(tenant, "tenant") / _key_part(user, "user")

    def save(self, tenant: str, user: str, model, meta: AdapterMeta, adapter_name: str = "default") -> Path:
        """Write `model`'s adapter as the user's (`save_adapter`, replacing an earlier one whole); returns its folder."""
        meta = msgspec.structs.replace(meta, tenant=tenant, user=user)
        return save_adapter(model, self.folder(tenant, user), meta, adapter_name)

    def meta(self, tenant: str, user: str) -> AdapterMeta | None:
        """The user's adapter description, None when they have none. Raises AdapterError for one that cannot be read."""
        folder = self.folder(tenant, user)
        return read_meta(folder) if (folder / META_FILE).exists() else None

    def require(self, tenant: str, user: str, base_model: str) -> tuple[Path, AdapterMeta]:
        """The adapter's folder and metadata; raises AdapterError if absent or for another base model."""
        folder = self.folder(tenant, user)
        meta = self.meta(tenant, user)
        if meta is None:
            raise AdapterError(f"no adapter for user {user!r} of tenant {tenant!r}")
        check_base(meta, base_model, f"for user {user!r} of tenant {tenant!r}")
        check_files(folder)
        return folder, meta

    def delete(self, tenant: str, user: str) -> int:
        """Remove the user's adapter and what a killed swap left of one (`leftovers`); returns the files that went."""
        gone = 0
        for folder in [self.folder(tenant, user), *self.leftovers(tenant, user)]:
            if folder.is_dir():
                gone += sum(1 for p in folder.rglob("*") if p.is_file())
                shutil.rmtree(folder)
        return gone

    def leftovers(self, tenant: str, user: str) -> list[Path]:
        """Folders a process killed while replacing the user's adapter left beside it, each a whole or
        partial adapter of theirs: `.<user>.<suffix>` (`save_adapter`'s staged `<random>`,
        `swap_folder`'s `retired<random>`, a promotion's `<job id>`). The suffix holds no dot, so another user whose id
        extends this one (`<user>.b`, whose leftovers are `.<user>.b.<suffix>`) is never matched."""
        folder = self.folder(tenant, user)
        prefix = f".{folder.name}."
        if not folder.parent.is_dir():
            return []
        return sorted(p for p in folder.parent.iterdir() if p.name.startswith(prefix) and "." not in p.name[len(prefix):] and p.is_dir())

    def tenant_folder(self, tenant: str) -> Path:
        """The folder of every adapter of `tenant`: its name quoted, as `folder` names it (`org:1` is `org%3A1`)."""
        return self.root / _key_part(tenant, "tenant")

    def users(self, tenant: str) -> list[str]:
        """The ids of `tenant`'s users with an adapter described here, sorted; a folder a killed save or swap left
        (`.<user>.<suffix>`, `leftovers`) names none, as in `holders`."""
        return sorted(user for user in self.holders(tenant) if (self.folder(tenant, user) / META_FILE).exists())

    def holders(self, tenant: str) -> set[str]:
        """Every user of `tenant` with a folder here, a whole adapter or not (their ids unquoted: `dan@x.com`, not
        the folder's `dan%40x.com`); a folder a killed swap left (`.<user>.<suffix>`, `leftovers`) names none."""
        folder = self.tenant_folder(tenant)
        if not folder.is_dir():
            return set()
        return {unquote(p.name) for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}


def _stamp(folder: Path) -> tuple:
    """What changes when an adapter folder's files do (a retrain, a promotion, a repair): each file's
    name, size, modification time and inode (a swap brings new ones); () for a missing folder."""
    try:
        return tuple(sorted((p.name, st.st_size, st.st_mtime_ns, st.st_ino) for p in folder.iterdir() for st in [p.stat()]))
    except OSError:
        return ()


def adapter_name(tenant: str, user: str) -> str:
    """A peft-safe module name for a (tenant, user) adapter (peft names may not contain dots)."""
    return "u" + hashlib.sha1(f"{tenant}\0{user}".encode()).hexdigest()[:16]


class ModelHost:
    """Holds one model and loads adapters into it, wrapping it in peft on the first one.

    The pool only needs `model`, `load_adapter(name, folder)` and `drop_adapter(name)`; the
    service's `Generator` offers the same three, so a pool can manage the generator's adapters.
    """

    def __init__(self, model):
        self.model = model

    def load_adapter(self, name: str, folder: str | Path) -> None:
        """Load the adapter at `folder` into the model as `name`. Raises AdapterError naming the folder when peft
        cannot load it (`reading_adapter`)."""
        from peft import PeftModel

        with reading_adapter(folder):
            if hasattr(self.model, "peft_config"):
                self.model.load_adapter(str(folder), adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(folder), adapter_name=name)
        self.model.eval()

    @property
    def adapters(self) -> set[str]:
        config = getattr(self.model, "peft_config", None)
        return set(config) if config else set()

    def drop_adapter(self, name: str) -> None:
        """Unload adapter `name`; nothing when it is not loaded."""
        if name in self.adapters:
            self.model.delete_adapter(name)


def _one_per_row(users: Sequence, conversations: Sequence) -> None:
    """ValueError unless there is one user key (or None) per conversation: without it, a model with
    no adapter loaded yet read no user at all, and peft's mixed batch failed on its own terms."""
    if len(users) != len(conversations):
        raise ValueError(f"`users` has {len(users)} rows, `conversations` {len(conversations)}: one user key (or None) per row")


class AdapterPool:
    """Loaded adapters on one base model, least recently used evicted beyond `budget_bytes`, shared fairly between
    tenants (`pluralign.cache.FairLRU`): the adapter evicted is one of the tenant whose loaded adapters hold the most
    bytes, its least recently used that no generation in flight uses (the host's `adapters_in_use`, when it has one),
    else its least recently used (a drop waits for the generations using it: its weights leave memory once they end).
    So one tenant chatting as many users, in turn or at once, pushes out its own adapters once it holds more than any
    other, never a smaller tenant's (a tenant alone uses the whole budget). An adapter larger than its tenant's share
    takes smaller tenants' room as the users' histories cache lets a history (`pluralign.cache.Takes`: once per ten
    minutes a tenant, four times all tenants); a load whose take is refused is served beside the budget, not kept,
    pushing out nobody's (`_make_room`), so its user's chats again and again no longer cost the others a reload each.
    A caller about to generate with an adapter holds it (`holding`, `adapter_held`): meanwhile it is never let go from
    beside the budget, and goes after its tenant's adapters nobody uses or holds, as one a generation uses (not last of
    all: a tenant holding the most gives it up when it has no other, another tenant's idle adapter staying).

    With a host that tracks its generations (`adapters_in_use`: the service's generators), no drop ever waits with the
    pool's lock held: an adapter evicted, retrained or deleted leaves the table under the lock and is dropped on a
    thread of its own once the generations using it end (a `forget` waits for its own drop, outside the lock), so other
    users' `adapter_for` go on meanwhile (an eviction dropped under the lock, with every loaded adapter in use, would
    have every user's chat wait for the evicted adapter's chat to end). Until then its weights stay in the host's
    memory beside the budget (`bytes_evicted_in_use`): at most one adapter per generation in flight or about to begin
    (one held, `holding`, whose eviction's drop waits for the hold to end, then for its generation). A host without it
    (ModelHost) deletes an adapter's weights at once, under the lock, never beside `score`'s or `generate`'s forward
    pass; nor do their own evictions with any host (`_for_forward`). Those two take no turn of a generator's model:
    with a host that runs generations of its own (a `Generator`), call them while it runs none.

    `fallback` is an adapter folder (e.g. the FSPO adapter) that serves users without their own;
    it stays loaded. Every method is safe to call from several threads (one lock; a forward pass at
    a time, which is what one model on one device does anyway). `score` and `generate` resolve and
    use the adapters under that lock; a caller that takes a name from `adapter_for` and generates
    later (the service) keeps it only until another user's load needs the room, so size the budget
    for the users served at once.

    >>> pool = AdapterPool(ModelHost(base), AdapterRegistry("adapters"), SMOLLM2_ID, budget_bytes=64 << 20)
    >>> pool.generate([("acme", "alice"), None], [[{"role": "user", "content": "Hi"}]] * 2, tokenizer)
    """

    def __init__(self, host, registry: AdapterRegistry, base_model: str, budget_bytes: int, fallback=None,
                 clock: Callable[[], float] = time.monotonic):
        if isinstance(host, torch.nn.Module):  # transformers models have a load_adapter of their own
            raise TypeError("AdapterPool takes a host such as ModelHost(model), not a bare model")
        self.host = host  # a ModelHost, or anything with .model, .load_adapter(name, folder), .drop_adapter(name)
        self.registry = registry
        self.base_model = base_model
        self.budget_bytes = budget_bytes
        # the table of adapters loaded: by their user's tenant, name -> (bytes, created_at), least recently used first
        self._table: FairLRU[str, tuple[int, float]] = FairLRU(lambda entry: entry[0])
        self._tenant_of: dict[str, str] = {}  # adapter name -> its user's tenant, for the adapters in the table
        # room taken from smaller tenants' adapters (the users' histories cache's policy): an adapter whose take is
        # refused is served beside the budget, not kept (`_passing`: name -> its entry (bytes, created_at))
        self._takes = Takes(clock)
        self._passing: dict[str, tuple[int, float]] = {}
        # adapters a caller holds (`holding`, `adapter_held`): handed to a chat whose generation has not begun, evicted
        # after their tenant's others and never let go beside the budget (`_pass_on`), as those generations use (the
        # host's `adapters_in_use`)
        self._holds: Counter[str] = Counter()
        # of `_dropping`, the adapters evicted while held (`_make_room`) whose drop waits for the hold to end, then for
        # the generation that hold was for (the host's drop waits for it): a chat whose adapter another load evicted
        # between its call and its generation still finds it loaded. Else a budget too small for the users chatting at
        # once (one tenant's steady cold loads) evicted it again at each try of its user (the service's 503, each time)
        self._held_back: set[str] = set()
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)  # `_dropping` changed
        # adapters being dropped outside the lock (out of `loaded` already) -> their `loaded` entry, put back if it fails
        self._dropping: dict[str, tuple[int, float]] = {}
        self._left_memory: set[str] = set()  # of `_dropping`, those the host dropped already (changed without the lock)
        # adapter -> (time.monotonic() it failed, the host's error) of its last drop that failed: a call that waited for
        # that drop and would drop it again (retrained) raises the error instead of trying again and again
        self._drop_failed: dict[str, tuple[float, Exception]] = {}
        self._unusable: dict[str, tuple] = {}  # adapter name -> `_stamp` of its folder when it was found unusable
        # told once of each user's adapter found unusable (until its files change): (tenant, user, error)
        self.on_unusable: Callable[[str, str, AdapterError], None] | None = None
        self.fallback = BASE_ADAPTER
        if fallback is not None:  # the service's own setting: a damaged one is an error at start, naming it
            meta = read_meta(fallback)
            check_base(meta, base_model, fallback)
            check_files(fallback)
            self._load(FALLBACK_ADAPTER, Path(fallback))
            self.fallback = FALLBACK_ADAPTER

    @property
    def model(self):
        return self.host.model

    @property
    def loaded(self) -> dict[str, tuple[int, float]]:
        """The adapters in the table, name -> (bytes, created_at), each tenant's least recently used first (a copy)."""
        with self._lock:
            return {name: entry for _, name, entry in self._table.items()}

    @property
    def bytes_used(self) -> int:
        """Bytes of the adapters in the table (not those being dropped, whose generations still use them)."""
        return self._table.nbytes

    @property
    def bytes_evicted_in_use(self) -> int:
        """Bytes of the adapters out of the table (evicted, retrained or deleted) whose drop waits for the generations
        using them, or the hold of a chat about to begin one (or is under way): held in memory beside `budget_bytes`, at
        most one adapter per generation in flight or about to begin; and those served beside the budget, not kept (a take refused, `_make_room`), each until a load of another
        adapter finds no generation using it (`_pass_on`). Read without the pool's lock, which a load holds for seconds (a scrape of /metrics never waits for one);
        an adapter the host dropped already is not counted, though its drop thread still waits for that lock."""
        gone = set(self._left_memory)  # read first: `_drop` strikes a name out of `_dropping` before out of it
        passing = sum(size for size, _ in list(self._passing.values()))
        return passing + sum(size for name, (size, _) in list(self._dropping.items()) if name not in gone)

    def _entry(self, name: str) -> tuple[int, float] | None:
        """The table's (bytes, created_at) of adapter `name`, or None; under the lock."""
        tenant = self._tenant_of.get(name)
        return None if tenant is None else self._table.peek(tenant, name)

    def _take(self, name: str) -> tuple[int, float] | None:
        """Adapter `name`'s entry, taken out of the table (None: it was not there); under the lock."""
        tenant = self._tenant_of.get(name)
        return None if tenant is None else self._table.pop(tenant, name)

    def _is_peft(self) -> bool:
        return hasattr(self.model, "peft_config")

    def _load(self, name: str, folder: Path) -> int:
        try:
            self.host.load_adapter(name, folder)
        except (AdapterError, ValueError, OSError) as exc:  # what a load failing part way made of it must not serve anyone
            if name in getattr(self.host, "adapters", ()):
                self.host.drop_adapter(name)
            raise exc if isinstance(exc, AdapterError) else AdapterError(f"{folder}: the adapter cannot be loaded: {exc}") from None
        if getattr(self.host, "model", None) is None:  # a remote server holds the weights: count the files
            return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))
        marker = f".{name}."
        return sum(p.numel() * p.element_size() for n, p in self.model.named_parameters() if marker in n)

    def _held(self, name: str) -> bool:
        """Whether the host still holds a loaded adapter: a generation process started again after a
        crash loads its adapters again, except one damaged on disk meanwhile."""
        adapters = getattr(self.host, "adapters", None)
        return adapters is None or name in adapters

    def _tracks_generations(self) -> bool:
        return hasattr(self.host, "adapters_in_use")

    def unload(self, name: str) -> None:
        """Drop adapter `name` now, under the pool's lock (with a host that tracks its generations, this waits for
        theirs: the pool's own evictions and `forget` never do)."""
        with self._lock:
            if name in self._passing:
                self.host.drop_adapter(name)
                del self._passing[name]
            if self._entry(name) is not None:
                self.host.drop_adapter(name)
                self._take(name)

    def _retire(self, name: str, now: bool = False) -> None:
        """Take `name` out of the table and drop it from the host (under the pool's lock): at once with a host that
        does not track its generations, or when `now` (a forward pass of this pool's follows); else on a thread of its
        own, once the generations using it end (`_dropping` meanwhile), so the lock is never held while it waits."""
        passing = self._passing.pop(name, None)
        if passing is not None:  # served beside the budget: out of the host's memory too
            self._let_go(name, passing, now)
        entry = self._entry(name)
        if entry is None:
            return
        if now or not self._tracks_generations():
            self.unload(name)
            return
        self._let_go(name, self._take(name), now)

    def _let_go(self, name: str, entry: tuple[int, float], now: bool = False, evicted: bool = False) -> None:
        """`_retire` of `name`, taken out of the table already (its `entry`, put back first in line when a drop at once
        fails); under the pool's lock. `evicted` (by `_make_room`) and held: its drop waits for the holds to end
        (`_held_back`)."""
        if now or not self._tracks_generations():
            try:
                self.host.drop_adapter(name)
            except BaseException:
                self._table.put(self._tenant_of[name], name, entry, last=False)
                raise
            return
        self._dropping[name] = entry
        if evicted and self._holds[name]:
            self._held_back.add(name)
        threading.Thread(target=self._drop_logged, args=(name,), name="adapter-drop", daemon=True).start()

    def _drop_logged(self, name: str) -> None:
        if name in self._held_back:
            with self._lock:
                self._cond.wait_for(lambda: not self._holds[name])
                self._held_back.discard(name)
        try:
            self._drop(name)
        except Exception as exc:  # e.g. a remote server unreachable: back in the table, first in line
            log.error("adapter %s could not be dropped (the next eviction or forget drops it): %s", name, exc)

    def _drop(self, name: str) -> None:
        """The host's drop of `name`, taken out of the table into `_dropping` (called without the pool's lock). Raises
        what the host's drop raises; the adapter then goes back in the table, the least recently used, so the next
        eviction or `forget` drops it, and the failure is noted (`_drop_failed`) for the calls that waited for it."""
        failed: BaseException | None = None
        try:
            self.host.drop_adapter(name)
            self._left_memory.add(name)  # out of memory now, before this thread gets the lock (a load may hold it)
        except BaseException as exc:
            failed = exc
            raise
        finally:
            with self._lock:
                entry = self._dropping.pop(name)
                self._left_memory.discard(name)  # after the pop: `bytes_evicted_in_use` reads them the other way round
                self._drop_failed.pop(name, None)
                if failed is not None:  # still held (a server unreachable, a process lost)
                    self._table.put(self._tenant_of[name], name, entry, last=False)
                    if isinstance(failed, Exception):  # the host's error, not an interrupt of this thread's
                        self._drop_failed[name] = (time.monotonic(), failed)
                self._cond.notify_all()

    def forget(self, tenant: str, user: str) -> None:
        """Drop a user's adapter from memory (call after deleting or retraining it, with this pool's lock not held).

        With a host that tracks its generations (`adapters_in_use`: the service's generators), the drop waits for the
        user's generations in flight to end (the host's `drop_adapter`); it waits outside the
        pool's lock, so other users' `adapter_for` go on meanwhile. The adapter leaves the pool's table at once: this
        user's `adapter_for` meanwhile reads the registry afresh, giving the fallback once their files are deleted, and
        a retrained adapter is loaded once the drop has ended. Returns once the host holds no adapter of the user's.
        Raises what the host's drop raises; the adapter then stays in the table, dropped by the next `forget`.

        A host shared with other pools (`purge_adapter`: a remote generation server that other replicas of the service
        load their own copies into) is asked, once the user's adapter files are gone (a DELETE), to unload every copy of
        theirs, on the host's purge thread (the server may be slow or down: its failure is logged)."""
        name = adapter_name(tenant, user)
        with self._lock:
            self._unusable.pop(name, None)  # a new one is tried at the next request
            if not self._tracks_generations():  # e.g. ModelHost: deleted at once, never beside `score`'s forward pass
                self.unload(name)
                return
            self._cond.wait_for(lambda: name not in self._dropping)  # a drop of it already under way ends first
            held = self._entry(name) is not None or name in self._passing
            if held:
                self._dropping[name] = self._passing.pop(name) if name in self._passing else self._take(name)
        if held:
            self._drop(name)
        purge = getattr(self.host, "purge_adapter", None)
        if purge is not None and not (self.registry.folder(tenant, user) / META_FILE).exists():
            purge(name)  # returns at once: the host's own thread asks the server

    def retire(self, tenant: str, user: str) -> None:
        """`forget`'s first half, which never waits for a generation: the user's adapter leaves the pool's table now
        (their `adapter_for` reads the registry afresh) and, with a host that tracks its generations, is dropped on a
        thread of its own once theirs in flight end (at once, under the lock, with one that does not). For a caller
        holding a lock that other users' requests wait for (a DELETE holds the store's maintenance turn, which every
        tenant's DELETE takes): it retires the adapter under that lock and calls `forget` once it let it go, which
        waits for that drop (one that failed put the adapter back in the table: `forget` drops it again, and raises
        what that raises)."""
        name = adapter_name(tenant, user)
        with self._lock:
            self._unusable.pop(name, None)
            self._retire(name)

    def adapter_for(self, tenant: str, user: str, pinned: frozenset[str] = frozenset()) -> str:
        """The loaded adapter name serving this user (loading it if the registry has one), else the fallback; none of
        `pinned` is evicted to make room.

        A user's adapter that cannot be used (damaged: its description or peft's files missing, cut
        short, unreadable or refused by the OS; or built for another base model) is never half loaded: the user gets
        the fallback, and the adapter is reported once (an error logged, `on_unusable(tenant, user,
        error)` called) and not read again until its files change (a retrained
        or promoted adapter is tried at once); so is one larger than the whole budget (`budget_bytes`: no eviction makes
        room for it). A retrained adapter whose old one is being dropped is loaded once that
        drop ends (the wait releases the pool's lock, however deeply held: a caller needing several users' adapters
        asks `adapters_for`). Raises AdapterError only when the adapters needed at once exceed the budget, and what the
        host's drop raised when the old adapter's drop this call waited for failed (the old one is still held: the
        next call tries its drop again; this call does not try again and again without end)."""
        with self._lock:
            since = time.monotonic()
            while (name := self._resolve(tenant, user, pinned, since=since)) is None:
                self._cond.wait()
            return name

    @contextmanager
    def holding(self, name: str) -> Iterator[bool]:
        """Adapter `name`, handed out by `adapter_for`, held while the caller runs its generation with it: while held,
        another user's load never lets it go from beside the budget (`_pass_on`) and evicts it after its tenant's
        adapters nobody uses or holds, as for an adapter a generation uses (a tenant holding the most with no other to
        give up still gives it up: fairness first, but with a host that tracks its generations its weights leave memory
        only once the hold ends, and the generation begun under it: `_held_back`); a DELETE, a retrain or a promotion
        still drops it. Yields whether it was held: False when it is
        loaded no more (dropped since it was handed out: ask `adapter_held` again). Held from the call until the
        generation begins, the gap the host's `adapters_in_use` does not cover: unheld, a chat's adapter served beside
        the budget is let go there by another tenant's load, loaded again for the chat, and may be let go again by the
        next one before its generation begins. Dropped twice before it begins (two promotions or retrains), the chat is
        refused (the service's 503: `with_adapter_again`)."""
        with self._lock:
            held = self._entry(name) is not None or name in self._passing
            if held:
                self._holds[name] += 1
        try:
            yield held
        finally:
            if held:
                with self._lock:
                    self._holds[name] -= 1
                    self._holds += Counter()  # no entry left per adapter once let go
                    self._cond.notify_all()  # a drop held back for it (`_held_back`) goes on

    @contextmanager
    def adapter_held(self, tenant: str, user: str, tries: int = 3) -> Iterator[str]:
        """`adapter_for(tenant, user)`, held (`holding`) until the block ends. The hold is taken just after the answer, the
        lock let go in between (a caller's `adapter_for` may wait on others, as the service's tests make it): one dropped
        in that instant is asked for again, `tries` times in all, then handed out unheld (the fallback is never dropped)."""
        with ExitStack() as stack:
            for _ in range(tries):
                name = self.adapter_for(tenant, user)
                if name == self.fallback or stack.enter_context(self.holding(name)):
                    break
            yield name

    def adapters_for(self, users: Sequence[tuple[str, str] | None]) -> list[str]:
        """One adapter name per row; None rows (anonymous users) get the fallback. Resolved in one hold of the pool's
        lock, none evicting another's: a row whose adapter must wait for a drop to end waits before any row is
        resolved, then they are all resolved again (were the wait, which releases the lock, to come after the rows
        before it, an adapter of theirs dropped meanwhile would be handed out)."""
        with self._lock:
            pinned, since = frozenset(adapter_name(*key) for key in users if key is not None), time.monotonic()
            while (names := self._resolved(users, pinned, since=since)) is None:
                self._cond.wait()
            return names

    def _for_forward(self, users: Sequence[tuple[str, str] | None]) -> list[str]:
        """`adapters_for` for a forward pass of this pool's (`score`, `generate`: under the pool's lock alone, beside
        no drop, whose weights peft deletes from the layers it runs through): a drop under way ends before any row is
        resolved, and the call's own evictions drop at once."""
        with self._lock:
            pinned, since = frozenset(adapter_name(*key) for key in users if key is not None), time.monotonic()
            while self._dropping or (names := self._resolved(users, pinned, now=True, since=since)) is None:
                self._cond.wait()
            return names

    def _resolved(self, users: Sequence[tuple[str, str] | None], pinned: frozenset[str], now: bool = False,
                  since: float = float("inf")) -> list[str] | None:
        names: list[str] = []
        for key in users:
            name = self.fallback if key is None else self._resolve(*key, pinned, now, since)
            if name is None:
                return None
            names.append(name)
        return names

    def _resolve(self, tenant: str, user: str, pinned: frozenset[str], now: bool = False,
                 since: float = float("inf")) -> str | None:
        """`adapter_for`'s answer, under the pool's lock, never waiting: None when the user's retrained adapter must
        wait for the drop of their old one (the caller waits on `_cond`, then asks again). Raises what the host's drop
        raised when a drop of the old one failed since `since` (the caller's `time.monotonic()` when it began)."""
        name = adapter_name(tenant, user)
        folder = self.registry.folder(tenant, user)
        stamp = _stamp(folder)
        if self._unusable.get(name) == stamp:
            return self.fallback
        self._unusable.pop(name, None)
        try:
            meta = self.registry.meta(tenant, user)
            if meta is None:
                self._retire(name, now)  # deleted: its weights go once its generations end
                return self.fallback
            entry = self._entry(name)
            if entry is not None and entry[1] == meta.created_at and self._held(name):
                self._table.get(self._tenant_of[name], name)  # its tenant's most recently used
                return name
            passing = self._passing.get(name)
            if passing is not None and passing[1] == meta.created_at and self._held(name):
                if not (self._takes.may(tenant) or self.bytes_used + passing[0] <= self.budget_bytes):
                    return name  # served beside the budget still: no load
                size = self._passing.pop(name)[0]  # kept from now on (below): no load, the room it needs taken
            else:
                loaded = self._load_anew(tenant, user, name, entry, now, since)
                if loaded is None:
                    return None
                folder, meta, size = loaded
            if size > self.budget_bytes:  # no eviction makes room for it: unusable, as a damaged one
                self._loaded_for(tenant, name, (size, meta.created_at))
                self._retire(name, now)
                raise AdapterError(f"{folder}: the adapter takes {size} bytes, more than the whole adapter budget of "
                                   f"{self.budget_bytes} bytes (adapter_budget_mb)")
        except AdapterError as exc:
            self._unusable[name] = stamp
            log.error("the adapter of user %r of tenant %r cannot be used; they are served by the fallback until "
                      "its files change: %s", user, tenant, exc)
            if self.on_unusable is not None:
                self.on_unusable(tenant, user, exc)
            return self.fallback
        self._loaded_for(tenant, name, (size, meta.created_at))
        self._make_room(name, size, pinned, now)
        return name

    def _load_anew(self, tenant: str, user: str, name: str, entry: tuple[int, float] | None, now: bool,
                   since: float) -> tuple[Path, AdapterMeta, int] | None:
        """The user's adapter loaded into the host (the one there before, retrained since or no longer held, retired
        first): its folder, description and bytes; None when it must wait for the old one's drop to end. Raises what
        `_resolve` raises."""
        if entry is not None and (failed := self._drop_failed.get(name)) is not None and failed[0] >= since:
            raise failed[1]  # the drop this call waited for failed: not tried again and again
        self._retire(name, now)  # retrained since it was loaded (or no longer held by the host)
        if name in self._dropping:  # loaded anew under its name once the old one's drop ends
            return None
        folder, meta = self.registry.require(tenant, user, self.base_model)
        return folder, meta, self._load(name, folder)

    def _loaded_for(self, tenant: str, name: str, entry: tuple[int, float]) -> None:
        """`name`, an adapter of a user of `tenant`, in the table as `entry` (bytes, created_at); under the lock. The
        tenants of adapters no longer in the table are forgotten here, so `_tenant_of` holds what `loaded` does."""
        self._tenant_of[name] = tenant
        self._table.put(tenant, name, entry)
        if len(self._tenant_of) > 2 * len(self._table) + 64:
            self._tenant_of = {n: t for n, t in self._tenant_of.items()
                               if self._entry(n) is not None or n in self._dropping or n in self._passing}

    def _make_room(self, name: str, size: int, pinned: frozenset[str], now: bool = False) -> None:
        """Evict adapters (but `name` and `pinned`) until the table fits the budget (`pluralign.cache.FairLRU`), each one
        of the tenant holding the most bytes among those that may go, its least recently used that no generation uses
        (the host's `adapters_in_use`: their drop waits for their generations), else its least recently used. A tenant's
        adapters in use go before another tenant's idle one: evicted first whatever their tenant, a tenant's chats in
        flight (`tenant_generations` of them) pushed out a smaller tenant's adapters. AdapterError (`name` dropped
        again) when it cannot fit.

        Room of smaller tenants' adapters (`FairLRU.evict`'s `taken`) is taken as the users' histories cache takes it
        (`pluralign.cache.Takes`: once per `TAKE_AGAIN_S` a tenant, `TAKES_IN_ALL` times all tenants): a load whose take
        is refused leaves the table as it was (what went for it back in place) and its adapter is served beside the
        budget, not kept (`_passing`: its user's next chats are served by it while it stays; it goes at the next load
        of another adapter that finds no generation using it, `_pass_on`). Else an adapter larger than its tenant's
        share, chatted with again and again, pushed out the others' at each load: its tenant then held the most, so
        their next loads pushed it out, and its next load took their room again."""
        busy = set(getattr(self.host, "adapters_in_use", set())) | set(self._holds)  # generating, or about to (`holding`)
        self._pass_on(pinned | {name}, busy, now)
        tenant = self._tenant_of[name]
        may_take = self._takes.may(tenant)
        victims = self._table.evict(self.budget_bytes, pinned=pinned | {name}, busy=busy, take=may_take)
        if not may_take and self.bytes_used > self.budget_bytes:  # it needs others' room, which it may not take now
            self._serve_beside(name, size, pinned, victims, now)
            return
        if self._table.taken:
            self._takes.took_now(tenant, name)
        for i, (_, victim, entry) in enumerate(victims):
            try:
                self._let_go(victim, entry, now, evicted=True)
            except BaseException:  # a drop at once that failed: it and those after it stay in the table
                for tenant, later, kept in reversed(victims[i + 1 :]):
                    self._table.put(tenant, later, kept, last=False)
                raise
        if self.bytes_used > self.budget_bytes:
            self._retire(name, now)
            raise AdapterError(
                f"adapters needed at once exceed the pool's budget of {self.budget_bytes} bytes "
                f"(this one alone is {size} bytes)"
            )

    def _serve_beside(self, name: str, size: int, pinned: frozenset[str], victims: list, now: bool) -> None:
        """`_make_room` of `name` whose take is refused: the table as it was (`victims` back in place) and `name` served
        beside the budget (`_passing`); under the lock. AdapterError (`name` dropped again), as when the take is allowed,
        when the adapters needed at once (`pinned`, in the table or beside it) exceed the budget with it: a batch is not
        served beside the budget whole, nor refused or not by the books of other tenants' takes."""
        for owner, victim, entry in reversed(victims):
            self._table.put(owner, victim, entry, last=False)
        entry = self._table.pop(self._tenant_of[name], name)
        needed = size + sum((self._entry(n) or self._passing.get(n) or (0, 0.0))[0] for n in pinned if n != name)
        if needed > self.budget_bytes:
            self._let_go(name, entry, now)
            raise AdapterError(f"adapters needed at once exceed the pool's budget of {self.budget_bytes} bytes "
                               f"(this one alone is {size} bytes)")
        self._passing[name] = entry

    def _pass_on(self, keep: frozenset[str], busy: Container[str], now: bool = False) -> None:
        """The adapters served beside the budget (`_passing`) that no generation uses, but `keep`, let go; under the
        lock. So those held are the last served and those generations used at the last load: at most one per generation in
        flight then, beside the last served."""
        for name in [n for n in self._passing if n not in keep and n not in busy]:
            self._let_go(name, self._passing.pop(name), now)

    def score(self, users, conversations, responses, tokenizer, **encode_kwargs) -> torch.Tensor:
        """(N,) log pi(response | conversation) with each row's own adapter: `users` holds one
        (tenant, user) key or None per row. Raises ValueError when `users`, `conversations` and
        `responses` have other lengths."""
        _one_per_row(users, conversations)
        with self._lock, torch.no_grad():
            names = self._for_forward(users)
            batch = encode_responses(tokenizer, conversations, responses, **encode_kwargs)
            return sequence_logprobs(self.model, batch, names if self._is_peft() else None).cpu()

    def generate(self, users, conversations, tokenizer, max_new_tokens: int = 64, max_prompt_tokens: int = 1024,
                 **generate_kwargs) -> list[str]:
        """Greedy (unless told otherwise) replies, one per row, each from its user's adapter: `users`
        holds one (tenant, user) key or None per row of `conversations`; no rows give no replies. A prompt longer
        than `max_prompt_tokens` loses its start (the model reads its last tokens, as `score` does: `encode_responses`;
        the rest is not tokenized). Raises ValueError when `users` and `conversations` have other lengths, or
        `max_prompt_tokens` is not a whole number >= 1."""
        _one_per_row(users, conversations)
        whole("AdapterPool.generate", 1, max_prompt_tokens=max_prompt_tokens)
        if not len(conversations):
            return []
        with self._lock, torch.no_grad():
            names = self._for_forward(users)
            prompts = [prompt_ids(tokenizer, messages, last=max_prompt_tokens) for messages in conversations]
            width = max(len(p) for p in prompts)
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])  # (B, T) left-padded
            attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
            device = next(self.model.parameters()).device
            kwargs = {"adapter_names": names} if self._is_peft() else {}
            generate_kwargs.setdefault("do_sample", False)
            out = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                **kwargs,
                **generate_kwargs,
            )
            return tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
