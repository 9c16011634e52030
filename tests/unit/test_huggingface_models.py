"""Hugging Face checkpoints as a model source (``model.format: huggingface``): a tiny
BertForSequenceClassification saved with ``save_pretrained`` (safetensors) and the packaged all-MiniLM
tokenizer loads through the spec, answers the token ids the tokenizer gives, exports to ONNX that ONNX
Runtime runs with the same logits; and each checkpoint squeezeflow must not load (weights only as a
pickle, remote code, no tokenizer, a head it does not compress) is refused with exit 2 and its own
message through the CLI, before transformers is asked to read anything."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

transformers = pytest.importorskip("transformers", reason="needs the hf extra: pip install -e '.[hf]'")

import torch  # noqa: E402

from squeezeflow.errors import ModelLoadError  # noqa: E402
from squeezeflow.models.huggingface import load_huggingface_model, pack_checkpoint  # noqa: E402
from squeezeflow.models.sources import export_onnx, load_torch_model  # noqa: E402
from squeezeflow.passes import PassContext  # noqa: E402
from squeezeflow.runtime import predict_logits  # noqa: E402
from squeezeflow.spec.load import parse_spec  # noqa: E402
from tests.huggingface_checkpoints import (  # noqa: E402
    LENGTH,
    TEXTS,
    TOKENIZER_FILES,
    cli,
    hf_doc,
    save_tiny_bert,
    token_ids,
)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("hf") / "tiny-bert")


def _token_ctx(tmp_path: Path, train: Any, val: Any) -> PassContext:
    """A pass context on a token-id dataset's train and validation splits (``np.load`` of their npz)."""
    return PassContext(
        workdir=tmp_path / "work",
        input_shape=[LENGTH],
        train_x=train["x"],
        train_y=train["y"],
        val_x=val["x"],
        val_y=val["y"],
    )


def test_huggingface_checkpoint_loads_through_the_spec_and_exports_onnx_with_the_same_logits(
    tiny_bert: Path, tmp_path: Path
) -> None:
    (tmp_path / "job.json").write_text(json.dumps(hf_doc(tiny_bert, tmp_path)))
    validate = cli("spec", "validate", tmp_path / "job.json", cwd=tmp_path)
    assert validate.returncode == 0, validate.stderr
    assert json.loads(validate.stdout)["model"] == {
        "format": "huggingface",
        "uri": str(tiny_bert),
        "factory": None,
        "factory_kwargs": {},
    }
    spec = parse_spec(hf_doc(tiny_bert, tmp_path))
    # what ingest stores (one packed archive) loads as the directory itself does
    archive = pack_checkpoint(str(tiny_bert), tmp_path / "source.tar")
    assert pack_checkpoint(str(tiny_bert), tmp_path / "again.tar").read_bytes() == archive.read_bytes()
    model = load_torch_model(spec.model, archive)
    direct = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(tiny_bert), local_files_only=True
    ).eval()

    ids = token_ids(tiny_bert)
    assert ids[0, 0] == 101 and (ids == 0).any()  # [CLS] first, padded with id 0
    x = torch.from_numpy(ids)
    with torch.inference_mode():
        logits = model(x)  # one int64 input, the mask derived from the pad id
        expected = direct(input_ids=x, attention_mask=(x != 0).long()).logits
    assert logits.shape == (len(TEXTS), 2)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)

    onnx_path = export_onnx(model, [LENGTH], tmp_path / "model.onnx", dtype=np.int64)
    got = predict_logits(onnx_path, ids)
    np.testing.assert_allclose(got, logits.numpy(), atol=1e-4)
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    assert [i.name for i in graph.input] == ["input"]
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64


def test_huggingface_checkpoint_without_its_classifier_weights_is_refused(tmp_path: Path) -> None:
    """A checkpoint that claims a classifier but lacks the head's weights would get a random head."""
    from safetensors.torch import load_file, save_file

    ckpt = save_tiny_bert(tmp_path / "headless")
    weights = {k: v for k, v in load_file(ckpt / "model.safetensors").items() if "classifier" not in k}
    save_file(weights, ckpt / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"lacks trained weights for 2 parameters \(classifier"):
        load_huggingface_model(str(ckpt), ckpt)


def _only_pickled_weights(ckpt: Path) -> None:
    (ckpt / "model.safetensors").unlink()
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(1)}, ckpt / "pytorch_model.bin")


def _remote_code(ckpt: Path) -> None:
    config = json.loads((ckpt / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.EvilForSequenceClassification"}
    (ckpt / "config.json").write_text(json.dumps(config))
    (ckpt / "modeling_evil.py").write_text("import os\nos.system('touch pwned')\n")


def _no_tokenizer(ckpt: Path) -> None:
    for name in TOKENIZER_FILES:
        (ckpt / name).unlink()


@pytest.mark.parametrize(
    ("damage", "head", "message"),
    [
        (
            _only_pickled_weights,
            "sequence",
            r"has its weights only as pytorch_model\.bin, a pickle, which squeezeflow never loads "
            r"\(unpickling can run code\)\. Convert it to safetensors, in an environment you trust: "
            r"python -c "
            r"\"from transformers import AutoModelForSequenceClassification as M; M\.from_pretrained\('.*'\)"
            r"\.save_pretrained\('.*', safe_serialization=True\)\"",
        ),
        (
            _remote_code,
            "sequence",
            r"needs remote code: its config\.json has `auto_map` \(AutoModelForSequenceClassification\), "
            r"modelling code shipped with the checkpoint that only trust_remote_code=True would run",
        ),
        (
            _no_tokenizer,
            "sequence",
            r"is a text classifier \(BertForSequenceClassification\) without its tokenizer: none of "
            r"tokenizer\.json, vocab\.txt",
        ),
        (
            None,
            "masked-lm",
            r"has a head squeezeflow does not compress: BertForMaskedLM\. Supported heads are the "
            r"classifiers \(\*ForSequenceClassification, \*ForImageClassification\)",
        ),
    ],
    ids=["pytorch-model-bin-only", "auto-map-remote-code", "no-tokenizer", "masked-lm-head"],
)
def test_huggingface_checkpoint_squeezeflow_must_not_load_exits_2_with_its_reason(
    tmp_path: Path, damage: Any, head: str, message: str
) -> None:
    ckpt = save_tiny_bert(tmp_path / "ckpt", head=head)
    if damage is not None:
        damage(ckpt)
    doc = hf_doc(ckpt, tmp_path)  # the data is never read: the model is refused first
    (tmp_path / "job.yaml").write_text(json.dumps(doc))

    validate = cli("spec", "validate", tmp_path / "job.yaml", cwd=tmp_path)
    run = cli(
        "run", tmp_path / "job.yaml", "--no-progress",
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--artifacts", tmp_path / "artifacts", "--workdir", tmp_path / "work",
        cwd=tmp_path,
    )  # fmt: skip
    for proc in (validate, run):
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert re.search(message, " ".join(proc.stderr.split())), proc.stderr
    # refused before the job starts: no tracking store, artifacts or work directory
    assert not any((tmp_path / name).exists() for name in ("mlflow.db", "artifacts", "work"))
    # the engine's own loader refuses it the same way (what ingest and every later stage call)
    with pytest.raises(ModelLoadError, match=message):
        load_huggingface_model(str(ckpt), ckpt)
    with pytest.raises(ModelLoadError, match=message):
        pack_checkpoint(str(ckpt), tmp_path / "packed.tar")
    assert not (tmp_path / "pwned").exists()


def test_huggingface_format_is_documented_in_the_spec_schema(tmp_path: Path) -> None:
    proc = cli("spec", "schema", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    source = json.loads(proc.stdout)["$defs"]["ModelSource"]["properties"]
    assert "huggingface" in source["format"]["enum"]
    described = source["format"]["description"]
    for words in ("*ForSequenceClassification", "*ForImageClassification", "pytorch_model.bin", "auto_map"):
        assert words in described
    assert "squeezeflow[hf]" in described


def test_huggingface_format_without_transformers_installed_names_the_extra(tiny_bert: Path) -> None:
    """transformers is an optional extra: without it the loader says what to install (exit 2)."""
    script = (
        "import sys; sys.modules['transformers'] = None\n"
        "from pathlib import Path\n"
        "from squeezeflow.errors import ModelLoadError\n"
        "from squeezeflow.models.huggingface import load_huggingface_model\n"
        "try:\n"
        f"    load_huggingface_model('ckpt', Path({str(tiny_bert)!r}))\n"
        "except ModelLoadError as err:\n"
        "    print(err.exit_code, err)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "2 model format 'huggingface' needs the transformers library, which is not installed: "
        "pip install 'squeezeflow[hf]'"
    )


def test_huggingface_image_classifier_loads_and_exports_onnx_with_the_same_logits(tmp_path: Path) -> None:
    """A *ForImageClassification checkpoint needs no tokenizer: it takes float32 pixel values."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=3,
    )
    ViTForImageClassification(config).save_pretrained(tmp_path / "vit", safe_serialization=True)
    model = load_torch_model(parse_spec(hf_doc(tmp_path / "vit", tmp_path)).model, tmp_path / "vit")
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    with torch.inference_mode():
        logits = model(torch.from_numpy(x)).numpy()
    assert logits.shape == (4, 3)
    onnx_path = export_onnx(model, [3, 16, 16], tmp_path / "vit.onnx")
    np.testing.assert_allclose(predict_logits(onnx_path, x), logits, atol=1e-4)


def test_huggingface_bert_structured_prune_removes_whole_heads_and_keeps_the_hidden_width(
    tmp_path: Path,
) -> None:
    """transformers' BertSelfAttention counts its heads in ``num_attention_heads``: the pass prunes whole
    heads there (it used to prune the residual width, embeddings included, and cut query/key/value
    channels across head boundaries)."""
    from squeezeflow.passes import ModelState, PassContext, get_pass
    from tests.huggingface_checkpoints import write_token_dataset

    ckpt = save_tiny_bert(tmp_path / "bert", hidden=64)  # 4 heads of 16 per layer
    data = write_token_dataset(tmp_path / "data", ckpt, length=32)
    train, val = (np.load(data / f"{s}.npz") for s in ("train", "val"))
    original = load_huggingface_model(str(ckpt), ckpt)
    ctx = PassContext(
        workdir=tmp_path / "work",
        input_shape=[32],
        train_x=train["x"],
        train_y=train["y"],
        val_x=val["x"],
        val_y=val["y"],
    )
    cls = get_pass("structured_prune")
    before = {n: p.detach().clone() for n, p in original.named_parameters()}
    state = ModelState(torch_module=original)
    pruned = cls().run(state, cls.Config.model_validate({"ratio": 0.5}), ctx).torch_module

    assert ctx.notes["prune_heads"] == {"heads_before": 8, "heads_after": 4}
    params = dict(pruned.named_parameters())
    assert params["model.bert.embeddings.word_embeddings.weight"].shape == (30_522, 64)
    assert params["model.classifier.weight"].shape == (2, 64)
    for layer in range(2):
        attention = pruned.model.bert.encoder.layer[layer].attention.self
        assert attention.num_attention_heads == 2 and attention.all_head_size == 32
        for proj in ("query", "key", "value"):
            name = f"model.bert.encoder.layer.{layer}.attention.self.{proj}.weight"
            kept, whole = params[name].detach(), before[name]
            assert kept.shape == (32, 64)
            heads = [whole[h * 16 : (h + 1) * 16] for h in range(4)]
            for h in range(2):  # each kept block of 16 rows is one whole original head
                assert any(torch.equal(kept[h * 16 : (h + 1) * 16], w) for w in heads), (name, h)
    ids = token_ids(ckpt, length=32)
    with torch.inference_mode():
        logits = pruned(torch.from_numpy(ids)).numpy()
    onnx_path = export_onnx(pruned, [32], tmp_path / "pruned.onnx", dtype=np.int64)
    np.testing.assert_allclose(predict_logits(onnx_path, ids), logits, atol=1e-4)


@pytest.mark.parametrize("member", ["../config.json", "sub/config.json", "link"])
def test_huggingface_packed_checkpoint_with_a_member_outside_its_folder_is_refused(
    tmp_path: Path, member: str
) -> None:
    import io
    import tarfile

    archive = tmp_path / "packed.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo(member)
        if member == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
    refused = f"its packed checkpoint holds '{re.escape(member)}', not a plain file"
    with pytest.raises(ModelLoadError, match=refused):
        load_huggingface_model("s3://bucket/model", archive)
    assert not (tmp_path / "config.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["packed.tar"]


def test_huggingface_checkpoint_saved_in_bfloat16_loads_as_float32(tmp_path: Path) -> None:
    """Hub checkpoints are often saved in bf16; the engine (quantizers, ONNX Runtime on the CPU) works
    from float32, so the loaded model is float32 whatever the file holds."""
    ckpt = save_tiny_bert(tmp_path / "bf16")
    transformers.AutoModelForSequenceClassification.from_pretrained(str(ckpt), local_files_only=True).to(
        torch.bfloat16
    ).save_pretrained(ckpt, safe_serialization=True)
    model = load_huggingface_model(str(ckpt), ckpt)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    with torch.inference_mode():
        assert model(torch.from_numpy(token_ids(ckpt))).dtype == torch.float32


@pytest.mark.parametrize("problem", ["multi_label_classification", "regression"])
def test_huggingface_classifier_for_another_problem_than_single_label_is_refused(
    tmp_path: Path, problem: str
) -> None:
    ckpt = save_tiny_bert(tmp_path / "ckpt")
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "problem_type": problem}))
    with pytest.raises(ModelLoadError, match=f"is configured for {problem} .* single-label classification"):
        load_huggingface_model(str(ckpt), ckpt)


def _bert_macs(hidden: int, heads: int, head_size: int, intermediate: int, length: int = LENGTH) -> int:
    """The tiny BERT's MACs counted by hand, per sample: per layer the query/key/value and output
    projections, the two feed-forward layers, and the attention's two matrix products; then the pooler
    (on the first token) and the classifier."""
    width = heads * head_size
    per_layer = (
        3 * length * hidden * width
        + length * width * hidden
        + 2 * length * hidden * intermediate
        + 2 * heads * length * length * head_size
    )
    return 2 * per_layer + hidden * hidden + hidden * 2


def test_huggingface_bert_macs_are_counted_for_the_baseline_and_its_pruned_and_int8_candidates(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """transformers builds the attention mask's shape in the graph (Range over the batch), which ONNX's
    shape inference leaves unknown, and a model that trims its padding has a length the data decides:
    the count used to skip every matrix product behind them."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from squeezeflow.onnx_cost import onnx_cost
    from squeezeflow.passes import ModelState, get_pass
    from tests.huggingface_checkpoints import write_token_dataset

    model = load_huggingface_model(str(tiny_bert), tiny_bert)
    baseline = onnx_cost(export_onnx(model, [LENGTH], tmp_path / "b.onnx", dtype=np.int64), [LENGTH])
    assert baseline.unresolved == 0
    assert baseline.macs == _bert_macs(hidden=32, heads=4, head_size=8, intermediate=64)

    quantize_dynamic(tmp_path / "b.onnx", tmp_path / "b8.onnx", weight_type=QuantType.QInt8)
    int8 = onnx_cost(tmp_path / "b8.onnx", [LENGTH])
    assert int8.unresolved == 0 and int8.macs == baseline.macs
    # every weight's product is integer arithmetic; the attention's products of activations stay float
    assert int8.float_macs == 2 * 2 * 4 * LENGTH * LENGTH * 8

    data = write_token_dataset(tmp_path / "data", tiny_bert)
    train, val = (np.load(data / f"{s}.npz") for s in ("train", "val"))
    ctx = _token_ctx(tmp_path, train, val)
    trim = get_pass("trim_padding")
    trimmed = trim().run(ModelState(torch_module=model), trim.Config.model_validate({}), ctx).torch_module
    export_onnx(trimmed, [LENGTH], tmp_path / "t.onnx", dtype=np.int64)
    # counted at the full length, what a sample without padding costs
    assert onnx_cost(tmp_path / "t.onnx", [LENGTH]).macs == baseline.macs

    cls = get_pass("structured_prune")
    pruned = cls().run(ModelState(torch_module=model), cls.Config.model_validate({"ratio": 0.5}), ctx)
    assert pruned.torch_module is not None
    export_onnx(pruned.torch_module, [LENGTH], tmp_path / "p.onnx", dtype=np.int64)
    cost = onnx_cost(tmp_path / "p.onnx", [LENGTH])
    assert cost.unresolved == 0 and 0 < cost.macs < baseline.macs


def test_huggingface_text_model_without_recipes_gets_the_text_defaults_and_the_text_search(
    tiny_bert: Path, tmp_path: Path, mlflow_server: Any
) -> None:
    """A Hugging Face classifier is a PyTorch module like a state_dict one: it used to get only the ONNX
    int8 defaults and a search that stopped after round 0."""
    from squeezeflow.results import DatasetInfo, IngestResult, ValidationSummary
    from squeezeflow.search.recipes import plan_recipes
    from squeezeflow.search.rounds import plan_round, rounds_of
    from squeezeflow.stages import Settings, StageContext
    from squeezeflow.store.artifacts import ArtifactRef

    spec = parse_spec(hf_doc(tiny_bert, tmp_path))
    assert not spec.search.recipes
    assert [[s.name for s in r.steps] for r in plan_recipes(spec, "int64")] == [
        ["trim_padding", "ort_dynamic_int8"],
        ["trim_padding"],
        ["vocab_prune", "finetune", "trim_padding", "ort_dynamic_int8"],
    ]
    assert rounds_of(spec) == 1 + spec.search.rounds > 1

    settings = Settings(
        artifacts=str(tmp_path / "store"), tracking_uri=mlflow_server.tracking_uri, workdir=tmp_path / "w"
    )
    ref = ArtifactRef(uri=str(tiny_bert), sha256="0" * 64, size=1)
    ingest = IngestResult(
        key="i",
        job_key="hf-job",
        spec_digest="d",
        dataset=DatasetInfo(
            uri=str(tmp_path),
            sha256="0" * 64,
            name="hf-reviews",
            num_classes=2,
            input_shape=[LENGTH],
            input_dtype="int64",
            split_sizes={"train": 48, "val": 24, "test": 24},
            class_counts={},
            imbalance_ratio=1.0,
        ),
        model_source=ref,
        validation=ValidationSummary(success=True, evaluated=1, failed=[], report=ref),
        parent_run_id="r",
    )
    ctx = StageContext.open(settings, spec.name)
    plan_round(spec, ingest, 0, ctx)
    searched = plan_round(spec, ingest, 1, ctx)
    assert searched.stop is None and searched.trials
    # the text space: every searched recipe keeps the used vocabulary and ends in dynamic int8 or float
    for trial in searched.trials:
        names = [s.name for s in trial.recipe.steps]
        assert names[0] == "vocab_prune", names
        assert "ort_static_int8" not in names


def test_huggingface_vocab_prune_keeps_the_tokenizers_special_tokens_and_maps_unseen_ids_to_its_unk(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """vocab_prune's special ids default to BERT uncased's; a Hugging Face model's tokenizer names its
    own, and those are kept (unless the recipe sets them)."""
    import shutil

    from squeezeflow.passes import ModelState, get_pass
    from tests.huggingface_checkpoints import write_token_dataset

    ckpt = Path(shutil.copytree(tiny_bert, tmp_path / "bert"))
    tok = transformers.AutoTokenizer.from_pretrained(str(ckpt), local_files_only=True)
    tok.unk_token = "[unused0]"  # id 1
    tok.add_special_tokens({"additional_special_tokens": ["[unused1]"]})  # id 2
    tok.save_pretrained(str(ckpt))
    for name, field in (("tokenizer.json", "model"), ("special_tokens_map.json", None)):
        doc = json.loads((ckpt / name).read_text())
        (doc[field] if field else doc)["unk_token"] = "[unused0]"  # what the fast tokenizer reads back
        (ckpt / name).write_text(json.dumps(doc))
    data = write_token_dataset(tmp_path / "data", ckpt)
    train, val = (np.load(data / f"{s}.npz") for s in ("train", "val"))
    unseen = 2000
    assert not np.isin([1, 2, 100, unseen], train["x"]).any()
    ctx = _token_ctx(tmp_path, train, val)
    cls = get_pass("vocab_prune")

    def pruned_remap(**params: Any) -> np.ndarray:
        model = load_huggingface_model(str(ckpt), ckpt)
        original = model.model.bert.embeddings.word_embeddings.weight.detach().clone()
        out = cls().run(ModelState(torch_module=model), cls.Config.model_validate(params), ctx).torch_module
        emb = out.model.bert.embeddings.word_embeddings
        remap = emb.remap.numpy()
        for i in (1, 2):  # the tokenizer's special tokens keep their own rows
            assert torch.equal(emb.embedding.weight[remap[i]], original[i])
        return remap

    remap = pruned_remap(unseen="unk")
    assert remap[unseen] == remap[1] == remap[100]  # BERT's [UNK] is an unused word of this vocabulary
    # what the recipe sets wins over the tokenizer's
    remap = pruned_remap(unseen="unk", unk_id=100, special_ids=[0, 1, 2, 100, 101, 102])
    assert remap[unseen] == remap[100] != remap[1]


def test_huggingface_token_dataset_from_another_tokenizer_exits_2_at_ingest(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """Token ids beyond the checkpoint's vocabulary, or padded with another id than its tokenizer's,
    were found only by ONNX Runtime's generic failure on a Gather index (or not at all)."""
    from squeezeflow.errors import DataValidationError
    from squeezeflow.models.huggingface import check_token_ids
    from tests.huggingface_checkpoints import write_token_dataset

    data = write_token_dataset(tmp_path / "data", tiny_bert)
    test = dict(np.load(data / "test.npz"))
    test["x"][0, 1] = 30_522  # one id past the vocabulary
    np.savez(data / "test.npz", **test)
    (tmp_path / "job.yaml").write_text(json.dumps(hf_doc(tiny_bert, data)))
    run = cli(
        "run", tmp_path / "job.yaml", "--no-progress",
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--artifacts", tmp_path / "artifacts", "--workdir", tmp_path / "work",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert re.search(r"token ids run from 0 to 30522.*vocabulary of 30522 ids", run.stderr), run.stderr

    archive = pack_checkpoint(str(tiny_bert), tmp_path / "source.tar")
    check_token_ids(str(tiny_bert), archive, max_id=30_521, min_id=0, pad_id=0)  # what fits passes
    check_token_ids(str(tiny_bert), archive, max_id=30_521, min_id=0, pad_id=None)
    with pytest.raises(DataValidationError, match=r"pad id is 1 .* pads with 0 \('\[PAD\]'\)"):
        check_token_ids(str(tiny_bert), archive, max_id=2_000, min_id=0, pad_id=1)
    with pytest.raises(DataValidationError, match="token ids run from -1 to 5"):
        check_token_ids(str(tiny_bert), archive, max_id=5, min_id=-1, pad_id=None)
