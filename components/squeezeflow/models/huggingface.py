"""Hugging Face ``transformers`` checkpoints as a model source (``model.format: huggingface``).

The source is what ``save_pretrained`` writes: a local directory or an ``s3://`` prefix holding
``config.json``, the weights as ``*.safetensors`` and, for a text model, the tokenizer's files. The
supported heads are the classifiers: ``*ForSequenceClassification`` (loaded with
``AutoModelForSequenceClassification``; input: int64 token ids) and ``*ForImageClassification``
(``AutoModelForImageClassification``; input: float32 pixel values). The loaded model is wrapped so that
the engine sees what it sees in its own models: a module called with one tensor that returns the logits.

Safety, checked before ``transformers`` is touched:

* offline only: ``HF_HUB_OFFLINE=1`` and ``local_files_only=True``; the hub is never called;
* no remote code: a config (or tokenizer config) with ``auto_map`` names modelling code that only
  ``trust_remote_code=True`` would run; it is refused, and ``trust_remote_code`` is never set;
* no pickles: weights load from safetensors only (``use_safetensors=True``); a checkpoint with only
  ``pytorch_model.bin`` (a pickle) is refused with the command that converts it.

In the artifact store the checkpoint is one object: the carried files (only those listed here; nothing
else of the directory travels) packed into an uncompressed tar with fixed metadata, so the same files
always give the same bytes and the same content hash.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from squeezeflow.errors import DataValidationError, ModelLoadError

INSTALL_HINT = "pip install 'squeezeflow[hf]'"
CONFIG_FILE = "config.json"
ARCHIVE_SUFFIX = ".tar"

# The heads squeezeflow compresses (classifiers), by the suffix of the architecture's class name.
SUPPORTED_HEADS: dict[str, Literal["text", "image"]] = {
    "ForSequenceClassification": "text",
    "ForImageClassification": "image",
}
_AUTO_CLASSES = {"text": "AutoModelForSequenceClassification", "image": "AutoModelForImageClassification"}

# What a text model needs to turn text into ids: at least one of these vocabulary files.
TOKENIZER_VOCABULARIES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
# Everything that travels with the checkpoint; any other file of the directory is left where it is.
CARRIED = (
    CONFIG_FILE,
    "*.safetensors",
    "model.safetensors.index.json",
    *TOKENIZER_VOCABULARIES,
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "merges.txt",
    "preprocessor_config.json",
    "processor_config.json",
)
# Weights squeezeflow never loads: pickles (any of them could run code when read), and other frameworks'.
PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")
OTHER_FRAMEWORK_WEIGHTS = ("tf_model.h5", "*.msgpack")


@dataclass(frozen=True)
class Checkpoint:
    """What the directory's listing and ``config.json`` say about a checkpoint."""

    architecture: str
    kind: Literal["text", "image"]
    files: tuple[str, ...]  # the carried files, sorted


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _convert_command(kind: str, uri: str) -> str:
    auto = _AUTO_CLASSES.get(kind, _AUTO_CLASSES["text"])
    return (
        f'python -c "from transformers import {auto} as M; '
        f"M.from_pretrained('{uri}').save_pretrained('{uri}', safe_serialization=True)\""
    )


def inspect_checkpoint(uri: str, names: Iterable[str], config_text: str | None) -> Checkpoint:
    """Check a checkpoint from its file names (those directly in the directory) and its config.json's
    text; raise `ModelLoadError` saying what is wrong and what to do."""
    names = sorted(set(names))
    if config_text is None:
        raise ModelLoadError(
            f"model {uri} is not a Hugging Face checkpoint: it has no {CONFIG_FILE} (format 'huggingface' "
            "takes the directory that model.save_pretrained(dir) wrote)"
        )
    try:
        config = json.loads(config_text)
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"model {uri}: {CONFIG_FILE} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"model {uri}: {CONFIG_FILE} is not a JSON object")
    if "auto_map" in config:
        raise ModelLoadError(
            f"model {uri} needs remote code: its {CONFIG_FILE} has `auto_map` "
            f"({', '.join(sorted(config['auto_map']))[:200]}), modelling code shipped with the checkpoint "
            "that only trust_remote_code=True would run. squeezeflow never runs a checkpoint's own code: "
            "use an architecture that transformers itself ships (e.g. BertForSequenceClassification)"
        )
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list) or not architectures:
        raise ModelLoadError(
            f"model {uri}: its {CONFIG_FILE} names no `architectures`; save the fine-tuned classifier with "
            "model.save_pretrained(dir), which records it"
        )
    supported = [
        (str(a), kind)
        for a in architectures
        for suffix, kind in SUPPORTED_HEADS.items()
        if str(a).endswith(suffix)
    ]
    if not supported:
        heads = ", ".join(f"*{s}" for s in SUPPORTED_HEADS)
        raise ModelLoadError(
            f"model {uri} has a head squeezeflow does not compress: {', '.join(map(str, architectures))}. "
            f"Supported heads are the classifiers ({heads}); fine-tune the model with one of them "
            "(e.g. BertForSequenceClassification) and save that"
        )
    architecture, kind = supported[0]
    problem = config.get("problem_type")
    if problem in ("multi_label_classification", "regression"):
        raise ModelLoadError(
            f"model {uri} ({architecture}) is configured for {problem} (config.json `problem_type`); "
            "squeezeflow's task is single-label classification, judged on the argmax of the logits"
        )
    weights = [n for n in names if n.endswith(".safetensors")]
    if not weights:
        pickled = [n for n in names if _matches(n, PICKLED_WEIGHTS)]
        if pickled:
            raise ModelLoadError(
                f"model {uri} has its weights only as {', '.join(pickled[:3])}, a pickle, which squeezeflow "
                "never loads (unpickling can run code). Convert it to safetensors, in an environment you "
                f"trust: {_convert_command(kind, uri)}"
            )
        other = [n for n in names if _matches(n, OTHER_FRAMEWORK_WEIGHTS)]
        found = f" (found {', '.join(other[:3])}: TensorFlow/Flax weights)" if other else ""
        raise ModelLoadError(
            f"model {uri} has no PyTorch weights in safetensors (*.safetensors){found}; save them with "
            "model.save_pretrained(dir, safe_serialization=True)"
        )
    if kind == "text" and not any(n in TOKENIZER_VOCABULARIES for n in names):
        raise ModelLoadError(
            f"model {uri} is a text classifier ({architecture}) without its tokenizer: none of "
            f"{', '.join(TOKENIZER_VOCABULARIES)} is there. Save it beside the model with "
            "tokenizer.save_pretrained(dir): the model's token ids mean nothing without its vocabulary"
        )
    return Checkpoint(
        architecture=architecture, kind=kind, files=tuple(n for n in names if _matches(n, CARRIED))
    )


def check_local_checkpoint(path: Path, uri: str | None = None) -> Checkpoint:
    """`inspect_checkpoint` on a local directory."""
    uri = uri or str(path)
    if not path.is_dir():
        raise ModelLoadError(
            f"model {uri} is not a directory: format 'huggingface' takes the directory that "
            "model.save_pretrained(dir) wrote (config.json, *.safetensors, the tokenizer's files)"
        )
    names = [p.name for p in path.iterdir() if p.is_file()]
    config = path / CONFIG_FILE
    checkpoint = inspect_checkpoint(uri, names, config.read_text() if config.is_file() else None)
    _check_tokenizer_config(uri, path)
    return checkpoint


def _check_tokenizer_config(uri: str, folder: Path) -> None:
    tokenizer_config = folder / "tokenizer_config.json"
    if not tokenizer_config.is_file():
        return
    try:
        doc = json.loads(tokenizer_config.read_text())
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"model {uri}: tokenizer_config.json is not valid JSON: {err}") from None
    if isinstance(doc, dict) and "auto_map" in doc:
        raise ModelLoadError(
            f"model {uri} needs remote code: its tokenizer_config.json has `auto_map`, a tokenizer class "
            "shipped with the checkpoint that only trust_remote_code=True would run; squeezeflow never "
            "runs a checkpoint's own code: save the tokenizer as a transformers tokenizer (tokenizer.json)"
        )


def _s3_checkpoint(uri: str, dest: Path) -> Path:
    """Download the carried files directly under the ``s3://`` prefix ``uri`` into ``dest``."""
    from squeezeflow.store.s3 import download_uri, parse_s3_uri, s3_client, s3_get_optional, s3_list

    bucket, key = parse_s3_uri(uri)
    prefix = key if not key or key.endswith("/") else f"{key}/"
    client = s3_client()
    names = [k[len(prefix) :] for k in s3_list(client, bucket, prefix)]
    names = [n for n in names if n and "/" not in n]
    config = s3_get_optional(client, bucket, f"{prefix}{CONFIG_FILE}")
    checkpoint = inspect_checkpoint(uri, names, config.decode() if config is not None else None)
    dest.mkdir(parents=True, exist_ok=True)
    for name in checkpoint.files:
        download_uri(f"s3://{bucket}/{prefix}{name}", dest / name)
    _check_tokenizer_config(uri, dest)
    return dest


def pack_checkpoint(uri: str, archive: Path) -> Path:
    """Check the checkpoint at ``uri`` (a local directory or an ``s3://`` prefix) and pack its carried
    files into ``archive`` (a tar with fixed metadata: the same files give the same bytes)."""
    with tempfile.TemporaryDirectory(dir=archive.parent if archive.parent.exists() else None) as tmp:
        if uri.startswith("s3://"):
            folder = _s3_checkpoint(uri, Path(tmp))
            files = inspect_checkpoint(
                uri, [p.name for p in folder.iterdir()], (folder / CONFIG_FILE).read_text()
            ).files
        else:
            folder = Path(uri)
            files = check_local_checkpoint(folder, uri).files
        archive.parent.mkdir(parents=True, exist_ok=True)
        part = archive.with_name(f".{archive.name}.{os.getpid()}.part")
        with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tar:
            for name in files:
                info = tarfile.TarInfo(name)
                info.size = (folder / name).stat().st_size
                info.mode = 0o644
                info.mtime = 0
                with (folder / name).open("rb") as f:
                    tar.addfile(info, f)
        os.replace(part, archive)
    return archive


def _unpacked(uri: str, archive: Path) -> Path:
    """The checkpoint directory of a packed ``archive`` (unpacked once, beside it)."""
    folder = archive.with_name(f"{archive.name}.d")
    if (folder / CONFIG_FILE).is_file():
        return folder
    tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", dir=archive.parent))
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for m in members:
                if not m.isreg() or "/" in m.name or "\\" in m.name or m.name in ("", ".", ".."):
                    raise ModelLoadError(
                        f"model {uri}: its packed checkpoint holds {m.name!r}, not a plain file of the "
                        "checkpoint's folder"
                    )
            # the "data" filter (Python 3.11.4+) also drops modes and owners; the checks above suffice
            safe: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, members=members, **safe)  # every member checked above
        try:
            os.replace(tmp, folder)
        except OSError:  # another process unpacked it first
            shutil.rmtree(tmp, ignore_errors=True)
    except tarfile.TarError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelLoadError(f"model {uri}: cannot read its packed checkpoint: {err}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def check_token_ids(uri: str, archive: Path, max_id: int, min_id: int, pad_id: int | None) -> None:
    """Raise `DataValidationError` where a dataset's token ids (``min_id``..``max_id`` over its splits)
    cannot be the packed checkpoint's: an id outside its vocabulary (``vocab_size`` in config.json), or
    a pad id the dataset declares (``pad_token_id``) other than its tokenizer's, which the model derives
    its attention mask from. Without these checks ONNX Runtime fails on a Gather index, or the model
    reads padding as text."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile(CONFIG_FILE)
        config = json.loads(member.read()) if member is not None else {}
    vocab = config.get("vocab_size")
    if isinstance(vocab, int) and (max_id >= vocab or min_id < 0):
        raise DataValidationError(
            f"the dataset's token ids run from {min_id} to {max_id}, but model {uri} has a vocabulary of "
            f"{vocab} ids (config.json vocab_size): the data was tokenized with another tokenizer than "
            "the checkpoint's; tokenize it with the tokenizer saved beside the model"
        )
    if pad_id is None:
        return
    offline: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    folder = _unpacked(uri, archive)
    tokenizer = _transformers().AutoTokenizer.from_pretrained(str(folder), **offline)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.get("pad_token_id")
    if pad is not None and int(pad) != pad_id:
        raise DataValidationError(
            f"the dataset's pad id is {pad_id} (dataset.json pad_token_id), but the tokenizer of model "
            f"{uri} pads with {pad} ({tokenizer.pad_token!r}), the id its attention mask is derived from: "
            "pad the token ids with the checkpoint's own tokenizer"
        )


def _transformers() -> Any:
    """``transformers``, imported offline (the hub is never called) and quiet (no progress bars)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import transformers
    except ImportError:
        raise ModelLoadError(
            "model format 'huggingface' needs the transformers library, which is not installed: "
            + INSTALL_HINT
        ) from None
    transformers.utils.logging.disable_progress_bar()
    return transformers


def _classifier_classes() -> tuple[Any, Any]:
    import torch
    from torch import nn

    class HuggingFaceTextClassifier(nn.Module):
        """A ``transformers`` sequence classifier as the engine's text models are: ``forward(input_ids,
        attention_mask=None)`` on int64 token ids, returning the logits. Without a mask it is derived
        from the ids (``ids != pad_token_id``), inside the graph, so the exported ONNX model has one
        input, the token ids. ``special_token_ids`` and ``unk_token_id`` are the tokenizer's (what
        ``vocab_prune`` keeps and maps unseen ids to)."""

        def __init__(
            self,
            model: nn.Module,
            pad_token_id: int,
            special_token_ids: tuple[int, ...] = (),
            unk_token_id: int | None = None,
        ) -> None:
            super().__init__()
            self.model = model
            self.pad_token_id = int(pad_token_id)
            self.special_token_ids = tuple(sorted({int(pad_token_id), *map(int, special_token_ids)}))
            self.unk_token_id = int(unk_token_id) if unk_token_id is not None else None

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
        ) -> torch.Tensor:
            if attention_mask is None:
                attention_mask = (input_ids != self.pad_token_id).to(torch.int64)
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    class HuggingFaceImageClassifier(nn.Module):
        """A ``transformers`` image classifier called with float32 pixel values, returning the logits."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.model(pixel_values=pixel_values).logits

    return HuggingFaceTextClassifier, HuggingFaceImageClassifier


def load_huggingface_model(uri: str, path: Path) -> Any:
    """The checkpoint at ``path`` (its directory, or the packed archive ingest stored) as an ``nn.Module``
    in eval mode: the classifier wrapped to take one tensor and return the logits."""
    folder = path if path.is_dir() else _unpacked(uri, path)
    checkpoint = check_local_checkpoint(folder, uri)
    transformers = _transformers()
    import torch

    auto = getattr(transformers, _AUTO_CLASSES[checkpoint.kind])
    offline: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    try:
        model, info = auto.from_pretrained(
            str(folder),
            use_safetensors=True,
            output_loading_info=True,
            attn_implementation="eager",  # plain matmul attention: exports to ONNX the same on any backend
            # float32 whatever the checkpoint was saved in (hub models often are bf16/fp16): the engine's
            # quantizers, training and ONNX Runtime's CPU kernels start from float32
            dtype=torch.float32,
            **offline,
        )
    except Exception as err:  # transformers raises many types for a config or weights it cannot read
        raise ModelLoadError(
            f"cannot load Hugging Face model {uri} ({checkpoint.architecture}): "
            f"{type(err).__name__}: {' '.join(str(err).split())[:400]}"
        ) from None
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ModelLoadError(
            f"model {uri} ({checkpoint.architecture}) lacks trained weights for {len(missing)} parameters "
            f"({', '.join(missing[:4])}): transformers would initialise them at random. Compress the "
            "fine-tuned classifier, saved with its head"
        )
    text_cls, image_cls = _classifier_classes()
    if checkpoint.kind == "image":
        return image_cls(model).eval()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), **offline)
    except Exception as err:
        reason = " ".join(str(err).split())[:300]
        raise ModelLoadError(
            f"model {uri}: cannot load its tokenizer: {type(err).__name__}: {reason}"
        ) from None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else model.config.pad_token_id
    if pad is None:
        raise ModelLoadError(
            f"model {uri}: neither its tokenizer nor its config names a pad token, so padded token ids "
            "cannot be told from text; set tokenizer.pad_token (and config.pad_token_id) and save again"
        )
    return text_cls(model, int(pad), tuple(tokenizer.all_special_ids), tokenizer.unk_token_id).eval()


@dataclass(frozen=True)
class TokenizedTexts:
    """Texts as a checkpoint's own tokenizer gives them: ``ids[split]`` int64 ``[N, max_length]``,
    right-padded with ``pad_token_id`` (or as the tokenizer pads), and how many texts were cut."""

    ids: dict[str, Any]
    max_length: int
    pad_token_id: int
    truncated: dict[str, int]
    label_names: list[str] | None  # config.json id2label, where it names the classes


def checkpoint_folder(uri: str, path: Path) -> Path:
    """The checkpoint's directory: ``path`` itself, or the packed archive ingest stored, unpacked."""
    return path if path.is_dir() else _unpacked(uri, path)


def _checkpoint_config(folder: Path) -> dict[str, Any]:
    doc = json.loads((folder / CONFIG_FILE).read_text())
    return doc if isinstance(doc, dict) else {}


def _load_tokenizer(uri: str, folder: Path) -> Any:
    offline: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    try:
        return _transformers().AutoTokenizer.from_pretrained(str(folder), **offline)
    except ModelLoadError:
        raise
    except Exception as err:
        reason = " ".join(str(err).split())[:300]
        raise ModelLoadError(
            f"model {uri}: cannot load its tokenizer: {type(err).__name__}: {reason}"
        ) from None


def label_names(config: dict[str, Any], num_classes: int) -> list[str] | None:
    """The class names a checkpoint's config.json gives (``id2label``), or None where it has none or
    only transformers' placeholders (``LABEL_0``, ``LABEL_1``, ...)."""
    id2label = config.get("id2label")
    if not isinstance(id2label, dict):
        return None
    try:
        names = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        return None
    if sorted(names) != list(range(num_classes)):
        return None
    if all(names[i] == f"LABEL_{i}" for i in names):
        return None
    return [names[i] for i in range(num_classes)]


def text_max_length(uri: str, tokenizer: Any, config: dict[str, Any], declared: int | None, cap: int) -> int:
    """The token length texts are padded and cut to: the dataset's declared one, else the tokenizer's
    ``model_max_length`` capped at ``cap``; never more than the model's position embeddings."""
    positions = config.get("max_position_embeddings")
    positions = positions if isinstance(positions, int) and positions > 0 else None
    if declared is not None:
        if declared < 3:
            raise DataValidationError(
                f"the dataset declares a length of {declared} token ids (input_shape): too short for a "
                "text and the tokenizer's special tokens"
            )
        if positions is not None and declared > positions:
            raise DataValidationError(
                f"the dataset declares a length of {declared} token ids (input_shape), but model {uri} has "
                f"{positions} positions (config.json max_position_embeddings): declare at most {positions}"
            )
        return declared
    model_max = getattr(tokenizer, "model_max_length", None)
    length = cap
    if isinstance(model_max, int) and 3 <= model_max < length:
        length = model_max
    if positions is not None:
        length = min(length, positions)
    return length


def tokenize_texts(
    uri: str,
    archive: Path,
    texts: dict[str, list[str]],
    *,
    max_length: int | None,
    cap: int,
    num_classes: int,
) -> TokenizedTexts:
    """Tokenize each split's ``texts`` with the packed checkpoint's own tokenizer, padded and cut to one
    length (`text_max_length`), as the model's users would (``tokenizer(texts, padding="max_length",
    truncation=True, max_length=...)``)."""
    import numpy as np

    folder = checkpoint_folder(uri, archive)
    config = _checkpoint_config(folder)
    tokenizer = _load_tokenizer(uri, folder)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.get("pad_token_id")
    if pad is None:
        raise ModelLoadError(
            f"model {uri}: neither its tokenizer nor its config names a pad token, so texts cannot be "
            "padded to one length; set tokenizer.pad_token (and config.pad_token_id) and save again"
        )
    length = text_max_length(uri, tokenizer, config, max_length, cap)
    ids: dict[str, Any] = {}
    truncated: dict[str, int] = {}
    for split, batch in texts.items():
        if not batch:
            ids[split] = np.zeros((0, length), dtype=np.int64)
            truncated[split] = 0
            continue
        full = tokenizer(batch, truncation=False, padding=False)["input_ids"]
        truncated[split] = sum(len(x) > length for x in full)
        enc = tokenizer(batch, padding="max_length", truncation=True, max_length=length)
        ids[split] = np.asarray(enc["input_ids"], dtype=np.int64)
    return TokenizedTexts(
        ids=ids,
        max_length=length,
        pad_token_id=int(pad),
        truncated=truncated,
        label_names=label_names(config, num_classes),
    )


@dataclass(frozen=True)
class RawTextServing:
    """What a registered model needs to answer raw text as ingest tokenized it: the checkpoint's
    tokenizer files (``tokenizer_dir``), how texts are padded and cut and what the classes are called
    (``config``), and a few texts for the model's input example."""

    tokenizer_dir: Path
    config: dict[str, Any]
    example_texts: list[str]


def raw_text_serving(
    uri: str, archive: Path, dest: Path, *, max_length: int, class_names: list[str], example_ids: Any
) -> RawTextServing:
    """Write the packed checkpoint's tokenizer to ``dest`` as ``tokenizer.save_pretrained`` does (a fast
    tokenizer's ``tokenizer.json`` among them) with how it pads and cuts texts to ``max_length`` and the
    class names: config.json's ``id2label`` where it names them, else ``class_names`` (the dataset's).
    ``example_ids`` (token ids) are decoded into the example texts."""
    folder = checkpoint_folder(uri, archive)
    config = _checkpoint_config(folder)
    tokenizer = _load_tokenizer(uri, folder)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(dest))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.get("pad_token_id")
    names = label_names(config, len(class_names)) or list(class_names)
    examples = [str(t) for t in tokenizer.batch_decode(example_ids, skip_special_tokens=True)]
    return RawTextServing(
        tokenizer_dir=dest,
        config={
            "max_length": int(max_length),
            "pad_token_id": int(pad) if pad is not None else 0,
            "pad_token": str(tokenizer.pad_token) if tokenizer.pad_token is not None else "",
            "pad_token_type_id": int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
            "padding_side": str(getattr(tokenizer, "padding_side", "right")),
            "truncation_side": str(getattr(tokenizer, "truncation_side", "right")),
            "fast": bool(getattr(tokenizer, "is_fast", False)) and (dest / "tokenizer.json").is_file(),
            "labels": names,
        },
        example_texts=[t if t.strip() else "text" for t in examples],
    )
