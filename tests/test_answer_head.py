"""--answer_head classifier: a 2-class head on the LLM's last hidden state, trained, saved, loaded and scored."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from llava_df.apps.merge import merge_run
from llava_df.apps.predict import main as predict_main
from llava_df.data.collator import IGNORE_INDEX, make_collator
from llava_df.data.load import load_splits
from llava_df.errors import UsageError
from llava_df.eval.detector import Detector
from llava_df.model.answer_head import FILL, ClassifierHead, answer_head_of, install_answer_head
from llava_df.model.build import build_model
from llava_df.model.strategies import apply_strategy, trainable_report
from llava_df.model.tiny import example_batch, load_tiny_processor
from llava_df.spec.args import DataArguments, ModelArguments
from llava_df.spec.resolve import parse_spec
from llava_df.train.workflow import main as train_main


def test_the_head_scatters_two_class_logits_and_the_lm_loss_is_their_cross_entropy():
    torch.manual_seed(0)
    head = ClassifierHead(hidden_size=8, vocab_size=50, real_id=7, fake_id=3)
    hidden = torch.randn(2, 5, 8)
    logits = head(hidden)
    assert logits.shape == (2, 5, 50)
    two = hidden @ head.classes.weight.T  # [2, 5, 2]: (Real, Fake)
    torch.testing.assert_close(logits[..., 7], two[..., 0])
    torch.testing.assert_close(logits[..., 3], two[..., 1])
    others = [i for i in range(50) if i not in (3, 7)]
    assert torch.all(logits[..., others] == FILL)
    # The causal-LM loss with one label (at position 3, read from position 2) is the 2-class CE exactly.
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 3], labels[1, 3] = 3, 7  # fake, real
    lm = F.cross_entropy(logits[:, :-1].reshape(-1, 50), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
    two_class = F.cross_entropy(two[:, 2], torch.tensor([1, 0]))
    torch.testing.assert_close(lm, two_class)
    lm.backward()
    assert head.classes.weight.grad is not None and head.classes.weight.grad.abs().sum() > 0


def test_bad_token_ids_are_refused():
    with pytest.raises(ValueError, match="must differ"):
        ClassifierHead(8, 50, real_id=3, fake_id=3)
    with pytest.raises(ValueError, match=r"lie in \[0, 50\)"):
        ClassifierHead(8, 50, real_id=3, fake_id=50)


def test_the_collator_labels_only_the_first_answer_token_for_the_classifier():
    processor = load_tiny_processor()
    data = DataArguments()
    items = [{"id": "a", "is_fake": 1, "image": _image()}, {"id": "b", "is_fake": 0, "image": _image()}]
    full = make_collator(processor, data)(items)
    first = make_collator(processor, data, answer_head="classifier")(items)
    rows = torch.arange(2)
    assert torch.equal(first["answer_index"], full["answer_index"])
    assert ((first["labels"] != IGNORE_INDEX).sum(dim=1) == 1).all()  # one label per row ...
    at = first["labels"][rows, first["answer_index"]]
    assert torch.equal(at, full["labels"][rows, full["answer_index"]])  # ... the answer word's first token
    assert (
        (full["labels"] != IGNORE_INDEX).sum(dim=1) > 1
    ).all()  # the generative answer also supervises EOS


def test_a_custom_answer_that_is_neither_word_is_refused_by_name():
    processor = load_tiny_processor()
    collator = make_collator(processor, DataArguments(), answer_head="classifier")
    with pytest.raises(Exception, match="item 'odd': its answer starts with token"):
        collator([{"id": "odd", "is_fake": 1, "image": _image(), "answer": "Maybe"}])


@pytest.mark.parametrize("strategy", ["projector_only", "lora"])
def test_the_head_trains_under_every_strategy_and_in_fp32(strategy):
    flags = {"projector_only": {"tune_mm_mlp_adapter": True}, "lora": {"lora_enable": True, "lora_r": 4}}[
        strategy
    ]
    args = ModelArguments(bits=8, answer_head="classifier", **flags)
    built = build_model(args, strategy)
    install_answer_head(built.model, real_id=5, fake_id=9)
    model = apply_strategy(built.model, args, strategy, verbose=False)
    head = answer_head_of(model)
    assert isinstance(head, ClassifierHead) and head.classes.weight.requires_grad
    assert head.classes.weight.dtype == torch.float32
    hidden = built.model.config.text_config.hidden_size
    assert trainable_report(model)["components"]["other"]["trainable"] == 2 * hidden
    batch = example_batch(built.processor, batch_size=2)
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert torch.all(logits[..., 0] == FILL) and logits.shape[-1] == built.model.config.text_config.vocab_size


def test_bad_flags_are_refused_before_anything_loads(tmp_path):
    with pytest.raises(Exception, match="--answer_head 'softmax': expected one of generate, classifier"):
        parse_spec(["--output_dir", str(tmp_path / "r"), "--answer_head", "softmax"])
    captions = tmp_path / "captions.json"
    captions.write_text("[]")
    with pytest.raises(Exception, match="--answer_head classifier with --task caption"):
        parse_spec(["--output_dir", str(tmp_path / "r"), "--answer_head", "classifier", "--version", "plain",
                    "--data_path", str(captions)])  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny LoRA run with the classifier head (INT8, as the sweep trains), best/ chosen on validation."""
    out = tmp_path_factory.mktemp("head") / "run"
    train_main(
        ["--output_dir", str(out), "--answer_head", "classifier", "--bits", "8", "--max_steps", "4",
         "--synthetic_n", "80", "--report_to", "none", "--per_device_train_batch_size", "8",
         "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "no", "--lora_enable", "True",
         "--lora_r", "4", "--learning_rate", "1e-2"]
    )  # fmt: skip
    return out


@pytest.mark.slow
def test_a_classifier_run_saves_its_head_and_scores_the_same_when_loaded_back(run, tmp_path):
    for ckpt in ("best", "final"):
        meta = json.loads((run / ckpt / "llava_df_checkpoint.json").read_text())
        assert "answer_head.safetensors" in meta["files"]
        assert meta["answer_head"]["kind"] == "classifier"
        assert meta["model_args"]["answer_head"] == "classifier"
    weights = load_file(run / "final" / "answer_head.safetensors")
    assert list(weights) == ["classes.weight"] and weights["classes.weight"].shape[0] == 2
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["auc"] is not None and 0.0 <= results["test"]["auc"] <= 1.0
    # The loaded detector reproduces the run's own test scores: the head, its ids and the collator round-trip.
    detector = Detector.from_pretrained(run)
    assert detector.info["answer_head"] == "classifier"
    assert isinstance(answer_head_of(detector.model), ClassifierHead)
    config = json.loads((run / "run_config.json").read_text())
    test = load_splits(DataArguments(**config["data"]), seed=config["training"]["seed"])["test"]
    paths = []
    for i in range(len(test)):
        item = test[i]
        paths.append(tmp_path / f"{item['id']}.png")
        item["image"].save(paths[-1])
    scores = json.loads((run / "scores.json").read_text())["test"]
    reference = dict(zip(scores["id"], scores["p_fake"], strict=True))
    got = detector.score(paths)
    assert max(abs(p - reference[path.stem]) for p, path in zip(got, paths, strict=True)) <= 1e-4


@pytest.mark.slow
def test_merge_and_generate_are_refused_for_a_classifier_run(run, tmp_path, capsys):
    with pytest.raises(UsageError, match="--answer_head classifier: its 2-class head has no place"):
        merge_run(run, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    image = tmp_path / "face.png"
    _image().save(image)
    with pytest.raises(SystemExit):
        predict_main(["--run_dir", str(run), str(image), "--generate"])
    err = capsys.readouterr().err
    assert err.startswith("error: --generate with") and "Drop --generate" in err and "Traceback" not in err


def _image():
    from PIL import Image

    return Image.new("RGB", (32, 32), (120, 90, 60))
