"""Vocabulary pruning for text models whose input is token ids.

A WordPiece model carries one embedding row per vocabulary entry (30,522 x 384 float32, about 47 MB of
all-MiniLM-L6-v2's 91 MB), yet a task's texts use only a few thousand of those tokens. ``vocab_prune``
keeps the rows of the token ids that occur in the train split (plus the special tokens) and puts an
int64 remap table in front of the smaller embedding, inside the module: the model still takes the
original token ids (the tokenizer and the ONNX input are unchanged), and an id that never occurred in
training is looked up as the unknown token.

No maintained library does this for an arbitrary PyTorch model (Torch-Pruning prunes the embedding's
width, not its rows; Hugging Face helpers resize a ``transformers`` model and change the tokenizer), so
it is done here: find the ``nn.Embedding`` that looks up the model's input, slice it, wrap it.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
from pydantic import Field

from squeezeflow.errors import PassError
from squeezeflow.passes.base import (
    ModelState,
    OptimizationPass,
    PassConfig,
    PassContext,
    register_pass,
    require_module,
)
from squeezeflow.passes.searchable import ProposedStep, SearchedTrial
from squeezeflow.training import token_lengths

log = logging.getLogger(__name__)

# BERT uncased WordPiece (all-MiniLM-L6-v2's tokenizer): [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103.
BERT_SPECIAL_IDS = (0, 100, 101, 102, 103)
BERT_UNK_ID = 100


class VocabPruneConfig(PassConfig):
    special_ids: list[int] = Field(
        default=list(BERT_SPECIAL_IDS),
        description="Token ids always kept (pad, unk, cls, sep, mask); by default a Hugging Face model's "
        "tokenizer's special ids, else BERT uncased WordPiece's.",
    )
    unk_id: int = Field(
        default=BERT_UNK_ID,
        ge=0,
        description="Token id whose row ids unseen in training are mapped to; by default a Hugging Face "
        "model's tokenizer's unknown token (its pad token if it has none), else BERT's [UNK].",
    )
    min_count: int = Field(
        default=1, ge=1, le=1000, description="Keep a token only if it occurs this often in the train split."
    )
    unseen: Literal["nearest", "unk"] = Field(
        default="nearest",
        description="What a dropped token id reads: the kept row nearest to its own embedding (cosine), "
        "or the unknown token's row.",
    )


def _remapped_embedding_class() -> Any:
    import torch
    from torch import nn

    class RemappedEmbedding(nn.Module):
        """``embedding(remap[ids])``: the original ids are looked up in a smaller embedding table."""

        def __init__(self, remap: torch.Tensor, embedding: nn.Embedding) -> None:
            super().__init__()
            self.register_buffer("remap", remap)
            self.embedding = embedding

        @property
        def weight(self) -> torch.Tensor:  # code that reads ``token_embedding.weight`` keeps working
            return self.embedding.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            # index_select exports as one ONNX Gather (``remap[ids]`` would be Unsqueeze + GatherND)
            remap: torch.Tensor = self.remap  # type: ignore[assignment]  # a registered buffer
            return self.embedding(remap.index_select(0, ids.reshape(-1)).view(ids.shape))

    return RemappedEmbedding


def find_input_embedding(module: Any, example: Any, pass_name: str) -> tuple[Any, str]:
    """The ``nn.Embedding`` that looks up the model's input ids, and its qualified name.

    Found by running ``example`` through the model with a hook on every embedding: the one whose input
    is the model's input tensor itself (an nn.Embedding over the ids). Raises PassError otherwise."""
    import torch
    from torch import nn

    embeddings = {name: m for name, m in module.named_modules() if isinstance(m, nn.Embedding)}
    if not embeddings:
        raise PassError(pass_name, "the model has no nn.Embedding (it needs a token-id text model)")
    hits: list[str] = []
    handles = []
    for name, emb in embeddings.items():

        def hook(_m: Any, args: Any, name: str = name) -> None:
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and x.shape == example.shape and torch.equal(x, example):
                hits.append(name)

        handles.append(emb.register_forward_pre_hook(hook))
    try:
        was_training = module.training
        module.eval()
        with torch.inference_mode():
            module(example)
        module.train(was_training)
    finally:
        for h in handles:
            h.remove()
    hits = list(dict.fromkeys(hits))
    if len(hits) != 1:
        raise PassError(
            pass_name,
            f"no single nn.Embedding looks up the input token ids (found {hits or 'none'} among "
            f"{sorted(embeddings)}); the model's first layer must be a word embedding over its input",
        )
    return embeddings[hits[0]], hits[0]


def _nearest_rows(weight: Any, rows: np.ndarray, candidates: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """For each of ``rows``, the index into ``candidates`` of the row with the most similar embedding
    (cosine). A word never seen in training then reads the row of a word that means about the same
    (its pretrained embedding says so) instead of the unknown token's."""
    import torch

    unit = torch.nn.functional.normalize(weight.float(), dim=1)
    cand = unit[torch.from_numpy(candidates)]
    out = np.empty(len(rows), dtype=np.int64)
    with torch.inference_mode():
        for i in range(0, len(rows), chunk):
            sims = unit[torch.from_numpy(rows[i : i + chunk])] @ cand.T
            out[i : i + chunk] = sims.argmax(dim=1).numpy()
    return out


def _special_ids(module: Any, config: VocabPruneConfig) -> tuple[list[int], int]:
    """The special ids and the unknown id ``vocab_prune`` uses: the config's where it sets them, else the
    tokenizer's that a Hugging Face model carries (`squeezeflow.models.huggingface`), else BERT's."""
    carrier = next((m for m in module.modules() if hasattr(m, "special_token_ids")), None)
    special_ids, unk_id = list(config.special_ids), config.unk_id
    if carrier is not None:
        if "special_ids" not in config.model_fields_set:
            special_ids = list(carrier.special_token_ids)
        if "unk_id" not in config.model_fields_set:
            unk = carrier.unk_token_id
            unk_id = int(unk if unk is not None else carrier.pad_token_id)
    return special_ids, unk_id


@register_pass
class VocabPrune(OptimizationPass):
    name = "vocab_prune"
    description = (
        "Keep only the word-embedding rows of tokens seen in training (plus special tokens), behind an "
        "id remap table inside the model; the input stays the original token ids."
    )
    input_kind = "torch"
    Config = VocabPruneConfig
    search_slot = 0  # first: every searched text recipe starts with it

    @classmethod
    def search_steps(cls, trial: SearchedTrial) -> list[ProposedStep]:
        return [ProposedStep(cls.name, {}, "vocab")] if trial.token_ids else []

    def run(self, model: ModelState, config: VocabPruneConfig, ctx: PassContext) -> ModelState:
        import torch
        from torch import nn

        module = require_module(model, self.name)
        if not np.issubdtype(ctx.train_x.dtype, np.integer):
            raise PassError(
                self.name,
                f"needs integer token-id inputs, but the dataset's x is {ctx.train_x.dtype} "
                "(vocabulary pruning applies to text models only)",
            )
        example = torch.from_numpy(np.ascontiguousarray(ctx.train_x[:2]))
        emb, qualname = find_input_embedding(module, example, self.name)
        vocab = int(emb.num_embeddings)
        if emb.max_norm is not None or emb.sparse:
            raise PassError(self.name, f"layer {qualname}: max_norm/sparse embeddings are not supported")
        if int(ctx.train_x.max()) >= vocab:
            raise PassError(
                self.name,
                f"layer {qualname}: train ids reach {int(ctx.train_x.max())} but it has {vocab} rows",
            )
        counts = np.bincount(ctx.train_x.reshape(-1), minlength=vocab)
        keep_mask = counts >= config.min_count
        special_ids, unk_id = _special_ids(module, config)
        specials = [*special_ids, unk_id]
        if emb.padding_idx is not None:
            specials.append(int(emb.padding_idx))
        bad = [i for i in specials if not 0 <= i < vocab]
        if bad:
            raise PassError(self.name, f"layer {qualname}: special ids {bad} are outside its {vocab} rows")
        keep_mask[specials] = True
        kept = np.flatnonzero(keep_mask)
        remap = np.full(vocab, -1, dtype=np.int64)
        remap[kept] = np.arange(len(kept), dtype=np.int64)
        dropped = np.flatnonzero(remap < 0)
        if config.unseen == "nearest" and len(dropped):
            words = np.setdiff1d(kept, specials)  # a dropped word never reads [PAD], [CLS] and the like
            remap[dropped] = remap[words[_nearest_rows(emb.weight.detach(), dropped, words)]]
        else:
            remap[dropped] = remap[unk_id]

        new = nn.Embedding(
            len(kept),
            emb.embedding_dim,
            padding_idx=None if emb.padding_idx is None else int(remap[emb.padding_idx]),
            scale_grad_by_freq=emb.scale_grad_by_freq,
            dtype=emb.weight.dtype,
        )
        with torch.no_grad():
            new.weight.copy_(emb.weight[torch.from_numpy(kept)])
        wrapped = _remapped_embedding_class()(torch.from_numpy(remap), new)
        parent_name, _, attr = qualname.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, wrapped)
        module.eval()

        before = vocab * emb.embedding_dim
        after = len(kept) * emb.embedding_dim
        ctx.notes["vocab_prune"] = {
            "vocab_before": vocab,
            "vocab_after": len(kept),
            "embedding_params_before": before,
            "embedding_params_after": after,
        }
        log.info(
            "vocab_prune %s: %d -> %d rows (%.1f MB -> %.1f MB of float32)",
            qualname,
            vocab,
            len(kept),
            before * 4 / 1e6,
            after * 4 / 1e6,
        )
        return ModelState(torch_module=module)


# -- padding trimming ---------------------------------------------------------------------------------


class TrimPaddingConfig(PassConfig):
    pad_id: int = Field(default=0, ge=0, description="The tokenizer's padding id (BERT's [PAD] is 0).")
    check_rows: int = Field(
        default=24,
        ge=1,
        le=10_000,
        description="Validation rows, each run alone, on which the trimmed model must reproduce the "
        "untrimmed model's outputs (the pass refuses models whose output depends on the padding).",
    )
    tolerance: float = Field(
        default=1e-3, gt=0, description="Largest output difference allowed, relative to the output scale."
    )


def _padding_trim_class() -> Any:
    import torch
    from torch import nn

    class PaddingTrim(nn.Module):
        """``inner(ids[:, :n])``, with ``n`` the position after the batch's last non-pad token.

        Tokenizers pad every text to a fixed width (64 here), but a review's median length is 26 tokens:
        the padded positions cost the attention and feed-forward layers their full price for nothing.
        ``n`` is computed from the input at run time, so the exported ONNX graph slices its own input
        (a data-dependent ``Slice``). Exact for a model that masks the pad id and numbers positions
        from 0, which ``TrimPadding`` checks before it wraps a model."""

        def __init__(self, inner: nn.Module, pad_id: int) -> None:
            super().__init__()
            self.inner = inner
            self.pad_id = pad_id

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            width = input_ids.shape[1]
            used = (input_ids != self.pad_id).any(0).to(torch.int64)
            positions = torch.arange(1, width + 1, dtype=torch.int64, device=input_ids.device)
            n = int((used * positions).max().clamp(min=1).item())
            torch._check(n >= 1)
            torch._check(n <= width)
            out: torch.Tensor = self.inner(input_ids[:, :n])
            return out

    return PaddingTrim


@register_pass
class TrimPadding(OptimizationPass):
    """Run a token-id model on its input cut after the last non-pad token (see ``PaddingTrim``).

    No accuracy is traded: the pass checks, on validation rows run one at a time, that the wrapped
    model answers exactly as before, and refuses (naming the reason) a model that attends to padding
    or whose output shape depends on the sequence width. Put it after the other PyTorch passes."""

    name = "trim_padding"
    description = (
        "Cut token-id inputs after their last non-pad token inside the model (exact for models that mask "
        "padding): less compute on short texts, nothing else changes."
    )
    input_kind = "torch"
    Config = TrimPaddingConfig
    search_slot = 40  # after recovery (which trains on trimmed batches itself), before export

    @classmethod
    def search_steps(cls, trial: SearchedTrial) -> list[ProposedStep]:
        return [ProposedStep(cls.name, {}, "trim")] if trial.token_ids else []

    def run(self, model: ModelState, config: TrimPaddingConfig, ctx: PassContext) -> ModelState:
        import torch

        module = require_module(model, self.name)
        x = ctx.val_x if len(ctx.val_x) else ctx.train_x
        if not np.issubdtype(x.dtype, np.integer) or x.ndim != 2:
            raise PassError(
                self.name,
                f"needs [N, length] integer token-id inputs, but the dataset's x is {x.dtype} "
                f"{list(x.shape)} (padding trimming applies to text models only)",
            )
        lengths = token_lengths(x, config.pad_id)
        if int(lengths.min()) >= x.shape[1]:
            raise PassError(
                self.name, f"no validation row has padding after its text (pad id {config.pad_id})"
            )
        rows = np.argsort(lengths, kind="stable")[: config.check_rows]
        wrapped = _padding_trim_class()(module, config.pad_id)
        was_training = module.training
        module.eval()
        worst = 0.0
        try:
            with torch.inference_mode():
                for i in rows:
                    ids = torch.from_numpy(np.ascontiguousarray(x[i : i + 1]))
                    ref, got = module(ids), wrapped(ids)
                    if ref.shape != got.shape:
                        raise PassError(
                            self.name,
                            f"the model's output shape depends on the sequence width ({list(ref.shape)} "
                            f"untrimmed, {list(got.shape)} trimmed); it cannot run on trimmed inputs",
                        )
                    scale = float(ref.abs().max()) + 1.0
                    worst = max(worst, float((ref - got).abs().max()) / scale)
        except PassError:
            raise
        except Exception as err:
            raise PassError(
                self.name, f"the model does not run on trimmed inputs: {type(err).__name__}: {str(err)[:200]}"
            ) from None
        finally:
            module.train(was_training)
        if worst > config.tolerance:
            raise PassError(
                self.name,
                f"trimming the padding changes the model's outputs (relative difference {worst:.2e} > "
                f"{config.tolerance:.0e}): the model attends to pad id {config.pad_id}, so it is left as is",
            )
        ctx.notes["trim_padding"] = {
            "pad_id": config.pad_id,
            "checked_rows": len(rows),
            "max_relative_difference": worst,
            "median_val_length": float(np.median(lengths)),
            "width": int(x.shape[1]),
        }
        log.info(
            "trim_padding: exact on %d rows (max rel. diff %.1e); median validation length %d of %d",
            len(rows),
            worst,
            int(np.median(lengths)),
            x.shape[1],
        )
        return ModelState(torch_module=wrapped)
