"""Structured channel pruning with Torch-Pruning's dependency graph (DepGraph), so residual and
concatenation paths stay consistent. Pruned models lose most of their accuracy until they are
fine-tuned, so a recipe must follow this pass with ``finetune``.

Transformers (a module with an integer ``num_heads`` and query/key/value ``nn.Linear`` children, such as
:class:`squeezeflow.zoo.minilm.EncoderLayer`, or ``num_attention_heads`` as in transformers' BERT family)
are pruned by whole attention heads (``head_ratio``) and by feed-forward intermediate channels
(``ratio``); the residual stream (hidden size), the embeddings and the classifier keep their width. Each
attention module's head count is updated to the heads it kept.

Layers Torch-Pruning cannot prune (recurrent layers: ``nn.GRU``, ``nn.LSTM``, ``nn.RNN`` and their cells)
are kept whole, and so is every channel that feeds or reads them; the rest of the model is pruned and the
kept layers are named in the notes (``prune.kept_whole``). A model with nothing else to prune is refused
with a ``PassError`` naming them. When Torch-Pruning fails on a model with custom layers that hold their
own weights (no Torch-Pruning pruner; it guesses how to slice them), the pass tries once more, on the
model as it came, with those layers kept whole too (``prune.first_try_failed`` says what went wrong)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

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
from squeezeflow.passes.searchable import (
    Categorical,
    Domain,
    FloatRange,
    ProposedStep,
    Searchable,
    SearchedTrial,
    first_choice,
)

log = logging.getLogger(__name__)


def _strong_moderate_light(domain: Domain) -> list[float]:
    """The search's opening ratios bracket the front: the strongest pruning first (the smallest model is
    also the cheapest to fine-tune, and the one that can reach large size and latency gains), then the
    middle of the range, then, over a wide range, its light end. Models that are compact already (a
    depthwise-separable CNN) lose points at the strong and middle ratios that an over-parameterised one
    does not, and the light one is the candidate that still beats int8 alone there (compact CNN
    reference with distillation and int8: pruned by 60%, -1.07 points, failed the gate; by 45%, -0.47;
    by 30%, -0.40 to +0.13 points over two runs, 6.0x smaller and 2.25x faster than the float model;
    int8 alone 3.3x / 1.7x)."""
    if not isinstance(domain, FloatRange):
        raise TypeError(f"prune_ratio is searched over a FloatRange, not {type(domain).__name__}")
    lo, hi = domain.low, domain.high
    step = domain.step

    def on_grid(x: float) -> float:
        # The study's distribution holds only low + k * step: an opening value between two grid points
        # is not one it can tell (Optuna warns and the point is outside the space it models).
        if not step:
            return round(x, 2)
        k = min(round((x - lo) / step), int((hi - lo) / step + 1e-9))
        return round(lo + k * step, 2)

    ratios = [on_grid(hi - 0.05 if hi - lo >= 0.1 else hi), on_grid((lo + hi) / 2)]
    if hi - lo >= 0.4 and lo > 0:
        ratios.append(on_grid(lo))
    return list(dict.fromkeys(ratios))


# Channel multiples the search may round pruned widths to: the device profile's `channel_multiple` and its
# double first (the default `search.space.round_to`), 1 for none.
WIDTH_MULTIPLES = (8, 16, 1, 2, 4, 32, 64, 128, 256)


class StructuredPruneConfig(PassConfig):
    ratio: float = Field(
        default=0.5,
        ge=0.0,
        le=0.95,
        description="Fraction of channels removed from each prunable layer (transformers: FFN channels).",
    )
    importance: Literal["magnitude", "taylor", "lamp"] = Field(
        default="magnitude", description="Channel importance: L2 magnitude, first-order Taylor, or LAMP."
    )
    global_pruning: bool = Field(
        default=False, description="Rank channels across layers instead of per layer."
    )
    iterative_steps: int = Field(default=1, ge=1, le=20, description="Prune in this many steps.")
    round_to: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Keep channel counts multiples of this (int8 kernels run fastest on multiples of 8 "
        "or 16 channels).",
    )
    taylor_batches: int = Field(default=8, ge=1, le=200, description="Train batches for Taylor gradients.")
    head_ratio: float | None = Field(
        default=None,
        ge=0.0,
        le=0.95,
        description="Transformers: fraction of attention heads removed per layer (default: ratio).",
    )


_QKV_NAMES = (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"), ("q", "k", "v"))
# What an attention module calls its head count: ``num_heads`` (squeezeflow's encoder), or
# ``num_attention_heads`` (transformers' BERT family, whose width is also kept in ``all_head_size``).
_HEAD_COUNT_NAMES = ("num_heads", "num_attention_heads")


def _head_count_name(m: Any) -> str | None:
    return next((n for n in _HEAD_COUNT_NAMES if isinstance(getattr(m, n, None), int)), None)


def head_count(block: Any) -> int:
    """The number of heads of an attention module `attention_blocks` found."""
    return int(getattr(block, _head_count_name(block) or "num_heads"))


def _set_head_count(block: Any, heads: int, width: int) -> None:
    setattr(block, _head_count_name(block) or "num_heads", heads)
    if isinstance(getattr(block, "all_head_size", None), int):
        block.all_head_size = width


def attention_blocks(model: Any) -> list[tuple[str, Any, tuple[Any, Any, Any]]]:
    """(name, module, (q, k, v)) for every attention module: an integer ``num_heads`` (or transformers'
    ``num_attention_heads``) attribute and query/key/value ``nn.Linear`` children (BERT
    ``query/key/value`` or ``q_proj/k_proj/v_proj`` names)."""
    import torch

    found: list[tuple[str, Any, tuple[Any, Any, Any]]] = []
    for name, m in model.named_modules():
        if _head_count_name(m) is None or isinstance(m, torch.nn.MultiheadAttention):
            continue
        for names in _QKV_NAMES:
            q, k, v = (getattr(m, n, None) for n in names)
            if all(isinstance(lin, torch.nn.Linear) for lin in (q, k, v)):
                found.append((name, m, (q, k, v)))
                break
    return found


def _recurrent_types() -> tuple[type, ...]:
    import torch

    return (torch.nn.RNNBase, torch.nn.RNNCellBase)


def kept_whole_layers(model: Any) -> dict[str, str]:
    """{module name: why} for the layers structured pruning keeps whole: recurrent layers, whose gate
    weights Torch-Pruning cannot slice (it has no GRU or RNN pruner; its LSTM pruner takes single-layer
    LSTMs only and slices their input-to-hidden weights along the input axis when pruning outputs)."""
    return {
        name or type(m).__name__: f"{type(m).__name__}: Torch-Pruning cannot prune recurrent layers"
        for name, m in model.named_modules()
        if isinstance(m, _recurrent_types())
    }


def custom_weight_layers(model: Any) -> dict[str, str]:
    """{module name: class name} for the layers that hold weights of their own but that Torch-Pruning has
    no pruner for (custom ops): it treats their weights as loose parameters and guesses the dimension to
    prune. When that guess breaks pruning, the pass tries again with them kept whole."""
    import torch_pruning as tp

    return {
        name: type(m).__name__
        for name, m in model.named_modules()
        if name
        and any(True for _p in m.parameters(recurse=False))
        and tp.ops.module2type(m) == tp.ops.OPTYPE.ELEMENTWISE
        and not isinstance(m, _recurrent_types())
    }


class _TorchPruningFailed(Exception):
    """Torch-Pruning raised while building its graph or pruning (the message says what it raised)."""


def _kept_whole_pruner() -> Any:
    """A Torch-Pruning layer pruner for a layer kept whole. It puts the layer in the dependency graph (so
    the channels that feed it and read it are coupled to it), and its in- and out-channel pruning are one
    function, so Torch-Pruning refuses every group that reaches an ignored layer of this kind."""
    import torch_pruning as tp

    class KeptWhole(tp.pruner.BasePruningFunc):
        def prune_out_channels(self, layer: Any, idxs: Any) -> Any:
            raise RuntimeError(f"{type(layer).__name__} is kept whole and must not be pruned")

        prune_in_channels = prune_out_channels

        def get_out_channels(self, layer: Any) -> int | None:
            return int(getattr(layer, "hidden_size", 0)) or None

        def get_in_channels(self, layer: Any) -> int | None:
            return int(getattr(layer, "input_size", 0)) or None

    return KeptWhole()


def _tensors(out: Any) -> list[Any]:
    """The leaves of a layer's input or output: a value, or plain tuples of them (an LSTM's
    ``(y, (h, c))``); ``None`` (no initial state) has none, a ``PackedSequence`` its ``data``."""
    from torch.nn.utils.rnn import PackedSequence

    if out is None:
        return []
    if isinstance(out, PackedSequence):
        return [out.data]
    return [t for o in out for t in _tensors(o)] if type(out) is tuple else [out]


def _rebuilt(out: Any, leaves: Iterator[Any]) -> Any:
    """``out`` with its leaves (in ``_tensors`` order) taken from ``leaves``."""
    from torch.nn.utils.rnn import PackedSequence

    if isinstance(out, PackedSequence):
        return out._replace(data=next(leaves))
    return tuple(_rebuilt(o, leaves) for o in out) if type(out) is tuple else next(leaves)


@contextmanager
def _opaque_while_tracing(layers: list[Any]) -> Iterator[None]:
    """Make each layer one step in the autograd graph while Torch-Pruning traces the model.

    On the CPU a GRU or RNN runs as dozens of small autograd steps (gate splits, per-step stacks); the
    dependency graph walks into them, takes them for channel operations and fails building its index
    maps (a bare ``IndexError``). Here the layer's outputs come out of one autograd step whose inputs are
    the layer's tensor inputs (a GRU's sequence and initial state), so the graph sees the inputs, the
    layer and its outputs. The layer's own forward is back as soon as the graph is built (Taylor
    importance needs its real gradients)."""
    import torch

    class KeptWholeStep(torch.autograd.Function):
        @staticmethod
        def forward(inputs: int, *tensors: Any) -> Any:
            return tuple(t.clone() for t in tensors[inputs:])

        @staticmethod
        def backward(ctx: Any, *grads: Any) -> Any:
            return (None,) * (len(grads) + 1 + ctx.inputs)

        @staticmethod
        def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
            ctx.inputs = inputs[0]

    def opaque(layer: Any) -> Any:
        real = layer.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            with torch.no_grad():
                out = real(*args, **kwargs)
            inputs = [t for a in (*args, *kwargs.values()) for t in _tensors(a)]
            outs = _tensors(out)
            if not outs or not all(isinstance(t, torch.Tensor) for t in outs):
                return real(*args, **kwargs)  # an output of another kind: trace the layer as it is
            inputs = [t for t in inputs if isinstance(t, torch.Tensor)]
            return _rebuilt(out, iter(KeptWholeStep.apply(len(inputs), *inputs, *outs)))

        return forward

    try:
        for layer in layers:
            layer.forward = opaque(layer)
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)


def _describe(kept: dict[str, str]) -> str:
    return "; ".join(f"{name} ({why})" for name, why in kept.items())


def _classifier_layers(model: Any, num_classes: int) -> list[Any]:
    import torch

    return [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_classes]


@register_pass
class StructuredPrune(OptimizationPass):
    name = "structured_prune"
    description = "Structured channel pruning (Torch-Pruning DepGraph); follow it with finetune."
    input_kind = "torch"
    needs_recovery: ClassVar[bool] = True
    Config = StructuredPruneConfig
    searchable = (
        Searchable(
            "prune_ratio",
            FloatRange(0.0, 0.95, step=0.05),
            order=10,
            description="Fraction of channels removed; 0 leaves the model unpruned.",
            narrowed_by="prune_ratio",
            opening=_strong_moderate_light,
        ),
        # Asked on every trial, even unpruned ones: stored trial records carry it.
        Searchable(
            "importance",
            Categorical(("magnitude", "taylor", "lamp")),
            order=20,
            description="Channel importance criterion (used only when pruning).",
            narrowed_by="importance",
            opening=first_choice,
        ),
        # Asked on every trial too. Token-id models keep their widths (heads and FFN widths of pretrained
        # transformers are multiples of 64 already): their recipes leave it out.
        Searchable(
            "round_to",
            Categorical(WIDTH_MULTIPLES),
            order=25,
            description="Pruned channel counts rounded to multiples of this (1: not rounded).",
            narrowed_by="round_to",
            opening=first_choice,
        ),
    )
    search_slot = 20

    @classmethod
    def search_steps(cls, trial: SearchedTrial) -> list[ProposedStep]:
        ratio = round(float(trial.params["prune_ratio"]), 2)
        if ratio <= 0:
            return []
        importance = trial.params["importance"]
        multiple = int(trial.params.get("round_to", 1))
        if multiple > 1 and not trial.token_ids:
            return [
                ProposedStep(
                    cls.name,
                    {"ratio": ratio, "importance": importance, "round_to": multiple},
                    f"prune{int(ratio * 100)}-w{multiple}-{importance}",
                )
            ]
        return [
            ProposedStep(
                cls.name,
                {"ratio": ratio, "importance": importance},
                f"prune{int(ratio * 100)}-{importance}",
            )
        ]

    def run(self, model: ModelState, config: StructuredPruneConfig, ctx: PassContext) -> ModelState:
        module = require_module(model, self.name)
        kept = kept_whole_layers(module)
        custom = {} if attention_blocks(module) else custom_weight_layers(module)
        # Pruning changes the module in place: a second try needs the model as it came.
        pristine = copy.deepcopy(module) if custom else None
        try:
            return self._prune(module, config, ctx, kept)
        except _TorchPruningFailed as err:
            if pristine is None:
                raise PassError(self.name, f"Torch-Pruning could not prune this model: {err}") from None
            first = err
        why = "custom layer Torch-Pruning has no pruner for"
        retry = {**kept, **{name: f"{kind}: {why}" for name, kind in custom.items()}}
        log.warning("structured_prune: %s; trying again with %s kept whole", first, ", ".join(custom))
        try:
            pruned = self._prune(pristine, config, ctx, retry)
            ctx.notes["prune"]["first_try_failed"] = str(first)
            return pruned
        except _TorchPruningFailed as err:
            raise PassError(
                self.name,
                f"Torch-Pruning could not prune this model: {first}; nor with {_describe(retry)} "
                f"kept whole: {err}",
            ) from None

    def _prune(
        self, module: Any, config: StructuredPruneConfig, ctx: PassContext, kept: dict[str, str]
    ) -> ModelState:
        """Prune ``module`` in place with the layers named in ``kept`` left whole."""
        import torch
        import torch.nn.functional as F
        import torch_pruning as tp

        num_classes = int(ctx.train_y.max()) + 1
        example = torch.from_numpy(ctx.train_x[:2])
        attention = attention_blocks(module)
        transformer: dict[str, Any] = (
            self._transformer_args(module, attention, config, num_classes) if attention else {}
        )
        ignored = transformer.pop("ignored_layers", None) or _classifier_layers(module, num_classes)
        kept_modules = [m for name, m in module.named_modules() if (name or type(m).__name__) in kept]
        ignored = [*ignored, *kept_modules]
        if "unwrapped_parameters" in transformer:  # a kept layer's weights are its own, not loose ones
            own = {id(p) for m in kept_modules for p in m.parameters()}
            transformer["unwrapped_parameters"] = [
                (p, dim) for p, dim in transformer["unwrapped_parameters"] if id(p) not in own
            ]
        customized = {type(m): _kept_whole_pruner() for m in kept_modules}
        heads_before = sum(head_count(b) for _n, b, _l in attention)
        importance = {
            "magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2),
            "taylor": lambda: tp.importance.GroupTaylorImportance(),
            "lamp": lambda: tp.importance.LAMPImportance(p=2),
        }[config.importance]()
        try:
            with _opaque_while_tracing(kept_modules):
                pruner = tp.pruner.MetaPruner(
                    module,
                    example,
                    importance=importance,
                    pruning_ratio=config.ratio,
                    global_pruning=config.global_pruning,
                    iterative_steps=config.iterative_steps,
                    ignored_layers=ignored,
                    round_to=config.round_to,
                    customized_pruners=customized or None,
                    **transformer,
                )
            groups = pruner.DG.get_all_groups(
                ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types
            )
            if kept and next(iter(groups), None) is None:
                raise PassError(
                    self.name,
                    f"nothing left to prune: every prunable channel reaches a layer kept whole "
                    f"({_describe(kept)}); leave structured_prune out of this model's recipes",
                )
            base_macs, base_params = tp.utils.count_ops_and_params(module, example[:1])
            for _ in range(config.iterative_steps):
                if config.importance == "taylor":
                    module.zero_grad()
                    module.train()
                    rng = torch.Generator().manual_seed(ctx.seed)
                    idx = torch.randperm(len(ctx.train_x), generator=rng)[: 64 * config.taylor_batches]
                    for i in range(0, len(idx), 64):
                        b = idx[i : i + 64]
                        xb, yb = (
                            torch.from_numpy(ctx.train_x[b.numpy()]),
                            torch.from_numpy(ctx.train_y[b.numpy()]),
                        )
                        F.cross_entropy(module(xb), yb).backward()
                pruner.step()
            for name, block, (q, _k, _v) in attention:
                heads = int(pruner.num_heads.get(q, head_count(block)))
                if heads < 1 or q.out_features % heads:
                    raise PassError(
                        self.name,
                        f"layer {name}: {q.out_features} query channels do not split into {heads} heads",
                    )
                _set_head_count(block, heads, q.out_features)
            module.eval()
            macs, params = tp.utils.count_ops_and_params(module, example[:1])
        except PassError:
            raise
        except Exception as err:
            raise _TorchPruningFailed(f"{type(err).__name__}: {str(err)[:300]}") from None
        if attention:
            ctx.notes["prune_heads"] = {
                "heads_before": heads_before,
                "heads_after": sum(head_count(b) for _n, b, _l in attention),
            }
        ctx.notes["prune"] = {
            "macs_before": int(base_macs),
            "macs_after": int(macs),
            "params_before": int(base_params),
            "params_after": int(params),
        }
        if kept:
            ctx.notes["prune"]["kept_whole"] = _describe(kept)
            log.info("pruning kept these layers whole: %s", _describe(kept))
        log.info(
            "pruned: MACs %.2fM -> %.2fM, params %.0fk -> %.0fk",
            base_macs / 1e6,
            macs / 1e6,
            base_params / 1e3,
            params / 1e3,
        )
        return ModelState(torch_module=module)

    def _transformer_args(
        self,
        module: Any,
        attention: list[tuple[str, Any, tuple[Any, Any, Any]]],
        config: StructuredPruneConfig,
        num_classes: int,
    ) -> dict[str, Any]:
        """MetaPruner arguments for a transformer: prune whole heads (q/k/v/output projection together,
        which DepGraph couples through the attention matmuls) and FFN intermediate channels; ignore
        every other Linear whose output is the residual stream, the classifier and the embeddings."""
        import torch

        hidden = {int(lins[0].in_features) for _n, _b, lins in attention}
        if len(hidden) != 1:
            raise PassError(self.name, f"attention blocks disagree on the hidden size: {sorted(hidden)}")
        width = hidden.pop()
        qkv = {id(lin) for _n, _b, lins in attention for lin in lins}
        for name, block, (q, k, v) in attention:
            if not q.out_features == k.out_features == v.out_features:
                raise PassError(self.name, f"layer {name}: query/key/value widths differ")
            if q.out_features % head_count(block):
                raise PassError(
                    self.name,
                    f"layer {name}: {q.out_features} channels do not split into {head_count(block)} heads",
                )
        ignored: list[Any] = [
            m
            for m in module.modules()
            if isinstance(m, torch.nn.Linear)
            and id(m) not in qkv
            and (m.out_features == width or m.out_features == num_classes)
        ]
        ignored += [m for m in module.modules() if isinstance(m, torch.nn.Embedding | torch.nn.LayerNorm)]
        unwrapped = [
            (p, 0)
            for m in module.modules()
            for p in m.parameters(recurse=False)
            if not isinstance(m, torch.nn.Linear | torch.nn.Embedding | torch.nn.LayerNorm) and p.ndim == 1
        ]
        heads = {lin: head_count(block) for _n, block, lins in attention for lin in lins}
        return {
            "ignored_layers": ignored,
            "num_heads": heads,
            "prune_num_heads": True,
            "prune_head_dims": False,
            "head_pruning_ratio": config.ratio if config.head_ratio is None else config.head_ratio,
            "unwrapped_parameters": unwrapped,
        }
