"""Recovery fine-tuning with optional knowledge distillation, on in-memory arrays.

Used by the torch passes (pruning, low-rank factorisation). The loss is cross-entropy on the hard
labels, optionally blended with the temperature-scaled KL divergence to a teacher's soft targets
(Hinton et al., 2015), and optionally with the mean squared error between the student's and the
teacher's hidden states at matched blocks (intermediate-layer distillation, as TinyBERT and MiniLM do).
The best-validation weights are kept; training stops early when validation accuracy stops improving, or
when the time budget ends.

Training runs on the device a `TrainingSetup` names (the job spec's ``training`` section, resolved by
`resolve_training`): the CPU by default, or a CUDA GPU with optional mixed precision. The model leaves
`finetune` on the CPU whichever it trained on, so what follows (ONNX export, quantization) is unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from squeezeflow.progress import terminal_progress
from squeezeflow.recovery import RecoveryCheck, RecoveryStop
from squeezeflow.training_device import (
    TrainingSetup,
    deterministic_algorithms,
    device_of,
    on_device,
    training_precision,
)

log = logging.getLogger(__name__)


@contextlib.contextmanager
def fake_int8_dynamic(model: Any) -> Iterator[int]:
    """Simulate ONNX Runtime's dynamic int8 on every ``nn.Linear`` of ``model`` while the block runs
    (quantization-aware training); yields the number of layers it covers.

    What is simulated is what ``ort_dynamic_int8`` with per-channel weights will do to the exported
    model: weights rounded to int8 with one symmetric scale per output channel, and each layer's input
    rounded to uint8 over its own range (min and max of the tensor, 0 included). Rounding passes the
    gradient straight through (the straight-through estimator), so the float weights learn to sit
    where rounding costs the least. Nothing is left on the model afterwards: the weights stay float,
    and the int8 pass quantizes them as the simulation did. Written here because torch's own QAT
    flows (``torch.ao`` / PT2E) target static int8 with observers, not ONNX Runtime's dynamic scheme.
    """
    import torch
    from torch import nn

    def fake_input(_m: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        lo = torch.clamp(x.detach().amin(), max=0.0)
        hi = torch.clamp(x.detach().amax(), min=0.0)
        scale = torch.clamp((hi - lo) / 255.0, min=1e-8)
        zero = torch.round(-lo / scale)
        xq = (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale
        return (x + (xq - x).detach(), *args[1:])

    originals: list[tuple[Any, Any]] = []
    hooks = []

    def fake_weight(m: Any, args: tuple[Any, ...]) -> None:
        w = m.weight_float
        scale = torch.clamp(w.detach().abs().amax(dim=1, keepdim=True) / 127.0, min=1e-12)
        m.weight = w + (torch.clamp(torch.round(w / scale), -127, 127) * scale - w).detach()

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        for m in linears:
            # keep the Parameter under another name; ``weight`` becomes its rounded view
            weight = m._parameters.pop("weight")
            m.register_parameter("weight_float", weight)
            originals.append((m, weight))
            hooks.append(m.register_forward_pre_hook(fake_weight))
            hooks.append(m.register_forward_pre_hook(fake_input))
        yield len(linears)
    finally:
        for h in hooks:
            h.remove()
        for m, weight in originals:
            if "weight_float" in m._parameters:
                del m._parameters["weight_float"]
            if hasattr(m, "weight"):
                with contextlib.suppress(AttributeError):
                    del m.weight
            m.weight = weight


class HiddenStates:
    """Forward hooks that record the outputs of matched blocks of a student and a teacher, and the mean
    squared error between them (intermediate-layer distillation).

    ``names`` are qualified module names present in both models (for a depth-pruned student, the blocks
    it kept: each is matched to the teacher block it came from). Pairs whose outputs differ in shape on
    ``sample`` (a block whose channels were pruned) are left out; ``pairs`` says which remain. For token
    ids (an integer ``[N, L]`` input) and block outputs ``[N, L, H]``, the error is taken over the non-pad
    tokens only (pad id 0), which the model masks anyway. Recording happens only inside ``capture()``, so
    validation passes leave nothing behind. Hooks are used rather than a change to the model's forward,
    so any architecture works as it is."""

    def __init__(self, student: Any, teacher: Any, names: list[str], sample: Any) -> None:
        import torch

        self.student_out: dict[str, Any] = {}
        self.teacher_out: dict[str, Any] = {}
        self._active = False
        self._handles: list[Any] = []
        candidates = []
        for name in names:
            try:
                candidates.append((name, student.get_submodule(name), teacher.get_submodule(name)))
            except AttributeError:
                continue
        for name, s_mod, t_mod in candidates:
            self._handles.append(s_mod.register_forward_hook(self._recorder(self.student_out, name)))
            self._handles.append(t_mod.register_forward_hook(self._recorder(self.teacher_out, name)))
        s_mode, t_mode = student.training, teacher.training
        ok = False
        try:
            student.eval()
            teacher.eval()
            with torch.no_grad(), self.capture():
                student(sample)
                teacher(sample)
            shapes_match = {
                n
                for n in self.student_out
                if n in self.teacher_out and self.student_out[n].shape == self.teacher_out[n].shape
            }
            ok = True
        finally:
            student.train(s_mode)
            teacher.train(t_mode)
            if not ok:
                self.close()
        self.pairs = [n for n, _s, _t in candidates if n in shapes_match]
        self.clear()

    def _recorder(self, store: dict[str, Any], name: str) -> Any:
        import torch

        def record(_m: Any, _args: Any, output: Any) -> None:
            if not self._active:
                return
            if isinstance(output, tuple | list):
                output = output[0]
            if isinstance(output, torch.Tensor):
                store[name] = output

        return record

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        self._active = True
        try:
            yield
        finally:
            self._active = False

    def clear(self) -> None:
        self.student_out.clear()
        self.teacher_out.clear()

    def loss(self, inputs: Any) -> Any:
        """Mean over the matched pairs of the student's squared error to the teacher's block output."""
        import torch
        import torch.nn.functional as F

        mask = None
        if inputs.ndim == 2 and not inputs.is_floating_point():
            mask = (inputs != 0).unsqueeze(-1)
        terms = []
        for name in self.pairs:
            # float32 under autocast too: a sum of squares in bfloat16 loses most of its digits
            s, t = self.student_out[name].float(), self.teacher_out[name].detach().float()
            if mask is not None and s.ndim == 3 and s.shape[:2] == inputs.shape:
                m = mask.to(s.dtype)
                terms.append(((s - t) ** 2 * m).sum() / (m.sum() * s.shape[-1]).clamp(min=1.0))
            else:
                terms.append(F.mse_loss(s, t))
        self.clear()
        return torch.stack(terms).mean() if terms else inputs.new_zeros((), dtype=torch.float32)

    def close(self) -> None:
        """Remove the hooks (``contextlib.closing`` calls this)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.clear()


@dataclass
class FinetuneReport:
    epochs_run: int
    best_epoch: int
    best_val_accuracy: float
    initial_val_accuracy: float
    seconds: float
    stopped: str
    history: list[float] = field(default_factory=list)
    planned_epochs: int | None = None
    budget_seconds: float | None = None
    hidden_pairs: list[str] = field(default_factory=list)
    rule_stop: RecoveryStop | None = None
    device: str = "cpu"
    precision: str = "fp32"


def fit_schedule(
    budget_s: float, epochs: int, steps_per_epoch: int, step_s: float, val_s: float
) -> tuple[int, int]:
    """(epochs, steps per epoch) of a schedule that fits ``budget_s`` seconds, given a training step's
    and a validation pass's measured cost: ``epochs`` when they fit; else as many whole epochs as fit
    (at least one); else one shortened epoch (at least one step). A recovery that runs its whole
    one-cycle schedule in fewer epochs ends annealed, at a low rate; one cut off half way ends at a high
    rate, which costs more accuracy than the epochs it saves."""
    epoch_s = steps_per_epoch * step_s + val_s
    fits = int(budget_s // epoch_s) if epoch_s > 0 else epochs
    if fits >= epochs:
        return epochs, steps_per_epoch
    if fits >= 1:
        return fits, steps_per_epoch
    return 1, max(1, min(steps_per_epoch, int((budget_s - val_s) // step_s) if step_s > 0 else 1))


def token_lengths(x: np.ndarray, pad_id: int = 0) -> np.ndarray:
    """Per row of token ids, the position after its last non-pad token (0 for an all-pad row)."""
    positions = np.arange(1, x.shape[1] + 1)
    return np.asarray(((x != pad_id) * positions).max(axis=1))


def length_batches(lengths: np.ndarray, batch_size: int, gen: Any, bucket: int = 32) -> list[np.ndarray]:
    """Shuffled batches of similar lengths: shuffle, cut into buckets of ``bucket`` batches, sort each
    bucket by length, batch it, shuffle the batches. Each batch can then be cut after its longest row."""
    import torch

    order = torch.randperm(len(lengths), generator=gen).numpy()
    batches: list[np.ndarray] = []
    span = batch_size * bucket
    for i in range(0, len(order), span):
        chunk = order[i : i + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    shuffled = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[k] for k in shuffled]


def logits_of(model: Any, x: np.ndarray, batch_size: int = 512, trim_padding: bool = False) -> Any:
    """The eval-mode model's logits for every row of ``x`` (a float tensor on the CPU, rows in ``x``'s
    order; the batches run on the device the model is on).
    ``trim_padding``: token ids, run in length-sorted batches cut after their longest row (the same
    answers for a model that masks the pad id, in less time)."""
    import torch

    model.eval()
    device = device_of(model)
    lengths = token_lengths(x) if trim_padding else None
    order = np.arange(len(x)) if lengths is None else np.argsort(lengths, kind="stable")
    out: Any = None
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            xb = x[idx]
            if lengths is not None:
                xb = xb[:, : max(1, int(lengths[idx].max()))]
            logits = model(torch.from_numpy(np.ascontiguousarray(xb)).to(device)).float().cpu()
            if out is None:
                out = torch.empty((len(x), *logits.shape[1:]), dtype=torch.float32)
            out[torch.from_numpy(idx)] = logits
    return out if out is not None else torch.empty((0,))


def accuracy(
    model: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 512, trim_padding: bool = False
) -> float:
    """Top-1 accuracy. ``trim_padding``: token ids, evaluated in length-sorted batches cut after their
    longest row (the same answers for a model that masks the pad id, in less time)."""
    if len(x) == 0:
        return 0.0
    logits = logits_of(model, x, batch_size, trim_padding)
    return int((logits.argmax(1).numpy() == y).sum()) / len(x)


def _shift(xb: Any, gen: Any, max_shift: int = 2) -> Any:
    """Random translation by up to ``max_shift`` pixels (images only)."""
    import torch

    _, _, h, w = xb.shape
    padded = torch.nn.functional.pad(xb, (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2,), generator=gen).tolist()
    return padded[:, :, dy : dy + h, dx : dx + w]


def finetune(
    model: Any,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 128,
    weight_decay: float = 5e-4,
    teacher: Any | None = None,
    temperature: float = 4.0,
    alpha: float = 0.5,
    patience: int = 2,
    max_seconds: float | None = None,
    augment: bool = True,
    seed: int = 0,
    progress_label: str = "fine-tune",
    trim_padding: bool = False,
    quant_aware: bool = False,
    max_steps: int | None = None,
    deadline: float | None = None,
    cache_teacher: bool = True,
    hidden_layers: list[str] | None = None,
    hidden_weight: float = 0.0,
    abandon: RecoveryCheck | None = None,
    setup: TrainingSetup | None = None,
) -> FinetuneReport:
    """Fine-tune ``model`` in place; returns what happened. ``alpha`` weighs the distillation term.

    ``trim_padding`` (token-id inputs, pad id 0): batch rows of similar length together and cut each
    batch after its longest row. Reviews of median length 26 in a 64-token window train about twice as
    fast; exact only for models that mask the pad id, as the MiniLM classifier does.

    ``quant_aware``: train (and select the best epoch) under simulated dynamic int8, see
    ``fake_int8_dynamic``; for a model that dynamic int8 will quantize next.

    ``hidden_layers`` and ``hidden_weight`` (with a ``teacher``): add ``hidden_weight`` times the mean
    squared error between the outputs of the blocks named in ``hidden_layers`` in the model and in the
    teacher (see ``HiddenStates``; the report's ``hidden_pairs`` lists the blocks matched). A
    ``ValueError`` before any training when none of them matches in shape.

    ``max_steps``: at most this many batches per epoch (a seeded random subset of the train split each
    epoch); the learning-rate schedule is sized to them.

    ``cache_teacher``: when distilling, run the teacher once over the train split and reuse its soft
    targets every epoch, instead of a teacher forward in every step (which costs 3-4x the step of a
    student pruned by 85% on the ResNet-18 reference). Exact for inputs that are not augmented (token
    ids); for augmented images the target is the teacher's answer on the unshifted image, which a shift
    of two pixels hardly changes, while the student and its hard-label loss see the shifted one.

    ``max_seconds`` and ``deadline`` (epoch seconds, ``time.time()``) bound the training time: the cost
    of a training step and of a validation pass are measured first, and the schedule is sized to what
    fits (`fit_schedule`), so a recovery with less time runs a shorter one-cycle schedule to its end
    rather than being cut off at a high learning rate. A last check ends training after the epoch that
    overruns.

    ``abandon``: judged after every epoch on the validation curve (`RecoveryCheck.judge`); when it stops
    the trial, training stops there (``stopped`` is "abandoned" or "recovered", ``rule_stop`` says why)
    with the best weights so far.

    ``setup`` (default: the CPU, fp32): where training runs (`resolve_training`). The model and the
    teacher move to its device for training and are back on the CPU when this returns (or raises);
    mixed precision applies to the training steps only, never to validation or to quantization-aware
    training."""
    import torch

    setup = setup or TrainingSetup()
    torch.manual_seed(seed)  # every device's generator, the GPU's included
    gen = torch.Generator().manual_seed(seed)  # shuffling and augmentation draw from the CPU's, anywhere
    autocast, scaler = training_precision(setup, quant_aware)
    xt, yt = torch.from_numpy(train_x), torch.from_numpy(train_y)
    steps_per_epoch = max(1, (len(xt) + batch_size - 1) // batch_size)
    if max_steps is not None:
        steps_per_epoch = min(steps_per_epoch, max_steps)
    images = augment and xt.ndim == 4 and xt.shape[-1] >= 16
    if teacher is not None:
        teacher.eval()
    t0 = time.monotonic()
    budget = _budget(max_seconds, deadline)
    trim = trim_padding and xt.ndim == 2 and not xt.is_floating_point()
    lengths = token_lengths(train_x) if trim else None
    simulated = fake_int8_dynamic(model) if quant_aware else contextlib.nullcontext(0)
    planned = epochs
    with on_device(setup.device, model, teacher), deterministic_algorithms(setup), simulated as covered:
        initial = accuracy(model, val_x, val_y, trim_padding=trim)
        val_s = time.monotonic() - t0
        matching = hidden_weight > 0 and bool(hidden_layers)  # the teacher's hidden states: it runs live
        soft_targets = (
            _soft_targets(teacher, train_x, temperature, trim)
            if teacher is not None and alpha > 0 and cache_teacher and not matching
            else None
        )
        if budget is not None:
            live_teacher = teacher if soft_targets is None else None
            step_s = _step_seconds(model, live_teacher, xt, yt, batch_size, temperature, seed, autocast)
            left = budget - (time.monotonic() - t0)
            full_steps = steps_per_epoch
            epochs, steps_per_epoch = fit_schedule(left, epochs, steps_per_epoch, step_s, val_s)
            if epochs < planned or steps_per_epoch < full_steps:
                log.info(
                    "%s: %.0f s left for training (a step %.3f s, validation %.1f s): %d epoch(s) of %d "
                    "steps instead of %d",
                    progress_label,
                    left,
                    step_s,
                    val_s,
                    epochs,
                    steps_per_epoch,
                    planned,
                )
        hidden = None
        if teacher is not None and hidden_weight > 0 and hidden_layers:
            hidden = HiddenStates(model, teacher, list(hidden_layers), xt[:2].to(setup.device))
            if not hidden.pairs:
                hidden.close()
                raise ValueError(
                    f"none of the blocks {list(hidden_layers)} has an output of the shape of the teacher's "
                    "block of that name"
                )
            log.info("%s: matching hidden states at %s", progress_label, hidden.pairs)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15, anneal_strategy="cos"
        )
        best, best_epoch, best_state = initial, 0, copy.deepcopy(model.state_dict())
        history: list[float] = []
        stopped = "epochs" if epochs == planned else "time budget (shorter schedule)"
        rule_stop: RecoveryStop | None = None
        trained_from = time.monotonic()
        hooks = contextlib.closing(hidden) if hidden is not None else contextlib.nullcontext()
        with terminal_progress(transient=True) as bar, hooks:
            task = bar.add_task(progress_label, total=epochs * steps_per_epoch)
            for epoch in range(1, epochs + 1):
                model.train()
                for idx in _epoch_batches(len(xt), lengths, batch_size, gen)[:steps_per_epoch]:
                    xb, yb = _batch(xt, yt, idx, lengths, setup.device, gen if images else None)
                    cached = None if soft_targets is None else soft_targets[idx.to(soft_targets.device)]
                    step = (teacher, temperature, alpha, hidden, hidden_weight, cached)
                    _train_step(model, xb, yb, step, opt, autocast, scaler)
                    sched.step()
                    bar.advance(task)
                acc = accuracy(model, val_x, val_y, trim_padding=trim)
                history.append(acc)
                log.info("%s epoch %d/%d: val accuracy %.4f", progress_label, epoch, epochs, acc)
                if acc > best:
                    best, best_epoch, best_state = acc, epoch, copy.deepcopy(model.state_dict())
                rule_stop = (
                    abandon.judge(initial, history, epochs, time.monotonic() - trained_from)
                    if abandon
                    else None
                )
                if rule_stop is not None:
                    stopped = rule_stop.kind
                    break
                # Under the one-cycle schedule validation accuracy swings while the rate is high and gains
                # most as it anneals (ResNet-18 pruned by 85%, 18 epochs: judged from half way, it stopped
                # at epoch 11 at half the peak rate): judge a plateau only once the rate is below a quarter.
                annealed = opt.param_groups[0]["lr"] < 0.25 * lr
                if annealed and epoch - best_epoch >= patience and best_epoch > 0:
                    stopped = "early stop"
                    break
                if budget is not None and epoch < epochs and time.monotonic() - t0 > budget:
                    stopped = "time budget"
                    break
        model.load_state_dict(best_state)
    if quant_aware:
        log.info("%s: simulated dynamic int8 on %d linear layers", progress_label, covered)
    model.eval()
    return FinetuneReport(
        epochs_run=len(history),
        best_epoch=best_epoch,
        best_val_accuracy=best,
        initial_val_accuracy=initial,
        seconds=time.monotonic() - t0,
        stopped=stopped,
        history=history,
        planned_epochs=planned,
        budget_seconds=budget,
        hidden_pairs=[] if hidden is None else list(hidden.pairs),
        rule_stop=rule_stop,
        device=setup.device,
        precision="fp32" if autocast is contextlib.nullcontext else setup.precision,
    )


def _batch(xt: Any, yt: Any, idx: Any, lengths: np.ndarray | None, device: str, shift_gen: Any | None) -> Any:
    """A training batch's inputs and labels on ``device``: token rows cut after the batch's longest row
    (with ``lengths``), images shifted at random (with ``shift_gen``, see `_shift`)."""
    xb, yb = xt[idx], yt[idx]
    if lengths is not None:
        xb = xb[:, : max(1, int(lengths[idx.numpy()].max()))]
    xb, yb = xb.to(device), yb.to(device)
    return (xb if shift_gen is None else _shift(xb, shift_gen)), yb


def _epoch_batches(rows: int, lengths: np.ndarray | None, batch_size: int, gen: Any) -> list[Any]:
    """One epoch's batches of row indices: shuffled, or of similar lengths (`length_batches`)."""
    import torch

    if lengths is not None:
        return [torch.from_numpy(b) for b in length_batches(lengths, batch_size, gen)]
    order = torch.randperm(rows, generator=gen)
    return [order[i : i + batch_size] for i in range(0, rows, batch_size)]


def _train_step(
    model: Any,
    xb: Any,
    yb: Any,
    step: tuple[Any, float, float, HiddenStates | None, float, Any | None],
    opt: Any,
    autocast: Callable[[], Any],
    scaler: Any | None,
) -> None:
    """One optimizer step on a batch: the loss (`_loss`, with ``step``'s teacher, temperature, alpha,
    hidden states, their weight and the cached soft targets) under ``autocast``, its gradients, the
    update; with a gradient ``scaler`` (fp16), the loss scaled and steps that overflow skipped."""
    with autocast():
        loss = _loss(model, xb, yb, *step)
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        opt.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()


def _loss(
    model: Any,
    xb: Any,
    yb: Any,
    teacher: Any | None,
    temperature: float,
    alpha: float,
    hidden: HiddenStates | None,
    hidden_weight: float,
    soft: Any | None = None,
) -> Any:
    """A training step's loss: cross-entropy, blended with the distillation term (weight ``alpha``) when
    there is a teacher, plus ``hidden_weight`` times the hidden-state error when ``hidden`` matches blocks.
    ``soft``: the teacher's soft targets for the batch, computed before (`finetune`'s ``cache_teacher``);
    the teacher then runs only when its hidden states are matched."""
    import torch
    import torch.nn.functional as F

    with hidden.capture() if hidden is not None else contextlib.nullcontext():
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        if teacher is not None and (hidden is not None or (alpha > 0 and soft is None)):
            with torch.no_grad():
                teacher_logits = teacher(xb)
            if soft is None:
                soft = F.softmax(teacher_logits / temperature, dim=1)
        if teacher is not None and alpha > 0 and soft is not None:
            kd = F.kl_div(F.log_softmax(logits / temperature, dim=1), soft, reduction="batchmean")
            loss = (1 - alpha) * loss + alpha * temperature * temperature * kd
    if hidden is not None:
        loss = loss + hidden_weight * hidden.loss(xb)
    return loss


def _soft_targets(teacher: Any, x: np.ndarray, temperature: float, trim_padding: bool) -> Any:
    """The teacher's temperature-softened class probabilities for every row of ``x``, computed once."""
    import torch.nn.functional as F

    soft = F.softmax(logits_of(teacher, x, trim_padding=trim_padding) / temperature, dim=1)
    return soft.to(device_of(teacher))  # beside the teacher (on a GPU: indexed there every step)


def _budget(max_seconds: float | None, deadline: float | None) -> float | None:
    """Seconds training may take: the smaller of ``max_seconds`` and the time to ``deadline``."""
    limits = [x for x in (max_seconds, None if deadline is None else deadline - time.time()) if x is not None]
    return max(0.0, min(limits)) if limits else None


def _step_seconds(
    model: Any,
    teacher: Any | None,
    xt: Any,
    yt: Any,
    batch_size: int,
    temperature: float,
    seed: int,
    autocast: Callable[[], Any] = contextlib.nullcontext,
) -> float:
    """The measured cost of one training step (forward, the teacher's forward when distilling, backward;
    the median of four after one untimed warm-up step), to size a schedule to a time budget. It leaves no
    trace: gradients are discarded, the buffers that training-mode forwards update (batch-norm
    statistics) are restored, and the batches come from a generator of its own, so the training that
    follows is what it would have been."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed + 7919)
    dev = device_of(model)
    cuda = dev.type == "cuda"
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    rng = torch.get_rng_state()  # dropout draws from it
    cuda_rng = torch.cuda.get_rng_state(dev) if cuda else None  # or, on a GPU, from the GPU's
    model.train()
    times = []
    for i in range(5):
        idx = torch.randint(0, len(xt), (min(batch_size, len(xt)),), generator=gen)
        xb, yb = xt[idx].to(dev), yt[idx].to(dev)
        if cuda:
            torch.cuda.synchronize(dev)
        t = time.monotonic()
        with autocast():
            if teacher is not None:
                with torch.no_grad():
                    soft = F.softmax(teacher(xb) / temperature, dim=1)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            if teacher is not None:
                loss = loss + F.kl_div(
                    F.log_softmax(logits / temperature, dim=1), soft, reduction="batchmean"
                )
        loss.backward()
        if cuda:  # kernels run asynchronously: wait for them before reading the clock
            torch.cuda.synchronize(dev)
        if i:  # the first step allocates and warms caches: not what a step costs
            times.append(time.monotonic() - t)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    torch.set_rng_state(rng)
    if cuda_rng is not None:
        torch.cuda.set_rng_state(cuda_rng, dev)
    return float(np.median(times))
