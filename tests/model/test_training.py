"""A few real training steps of the shipped model on real (small) slices of the corpus."""

import shutil
import signal

import numpy as np
import pytest
import torch

from reprolab.data.cleaning import normalise
from reprolab.encoding import encoder
from reprolab.model import runtime
from reprolab.model.checkpoints import Checkpointer, TrainingInterrupted
from reprolab.model.training import (
    STEP_FIELDS,
    history_csv,
    history_fields,
    make_accelerator,
    seed_everything,
    train_model,
)
from reprolab.tasks.sequence_classification import SequenceClassification
from tests.conftest import MAX_LENGTH, MODEL, corpus_tokens, train_params

SEQUENCE_CLASSIFICATION = SequenceClassification()

CPU = torch.device("cpu")


def train(model, train_rows, val_rows, p, **kwargs):
    """train_model on a fresh Accelerator for `p`, as the stage calls it."""
    return train_model(
        make_accelerator(p), SEQUENCE_CLASSIFICATION, model, train_rows, val_rows, p, 0, MAX_LENGTH, **kwargs
    )


@pytest.fixture(scope="module")
def data(tokenizer):
    return corpus_tokens(tokenizer, 60, 0), corpus_tokens(tokenizer, 40, 500)


def fresh_model(seed=0):
    torch.manual_seed(seed)
    return runtime.load_model(SEQUENCE_CLASSIFICATION, str(MODEL), ["ham", "spam"])


def batch_loss(model, data: runtime.TokenData) -> float:
    input_ids, mask = runtime.collate(data.sequences, 0)
    model.eval()
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=mask, labels=torch.from_numpy(data.labels)).loss.item()


@pytest.fixture(scope="module")
def trained(data):
    """The smoke model: two epochs on 120 real messages."""
    rows, val = data
    seed_everything(0, CPU, 2)
    model = fresh_model()
    before = batch_loss(model, val)
    steps = []
    result = train(
        model, rows, val, train_params(epochs=2), on_step=lambda step, values: steps.append(values["train_loss"])
    )
    return model, result, steps, before


def test_training_lowers_loss_and_clears_accuracy_floor(data, trained):
    _, val = data
    model, result, steps, before = trained
    assert batch_loss(model, val) < before
    assert len(steps) == 30 and np.mean(steps[-5:]) < np.mean(steps[:5])
    best = result.history[result.best_epoch - 1]
    assert best["val_accuracy"] >= 0.85, result.history  # smoke floor: spam vs ham is easy
    assert (
        history_csv(result.history, history_fields(SEQUENCE_CLASSIFICATION))
        .splitlines()[0]
        .startswith("epoch,step,train_loss")
    )
    assert [row["step"] for row in result.history] == [15, 30]  # each epoch's last step, where its figures go
    # The logged steps are kept for train_steps.csv, as on_step saw them, each with its epoch.
    assert [row["train_loss"] for row in result.steps] == steps
    assert [row["step"] for row in result.steps] == list(range(1, 31)) and result.steps[-1]["epoch"] == 2
    assert history_csv(result.steps, STEP_FIELDS).splitlines()[0] == "step,epoch,train_loss,learning_rate"


def test_cpu_training_is_bit_identical(data):
    rows, val = data
    states = []
    for _ in range(2):
        seed_everything(0, CPU, 2)
        model = fresh_model()
        train(model, rows.take(np.arange(24)), val.take(np.arange(8)), train_params())
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_padding_does_not_change_predictions(data):
    """Dynamic padding is an optimisation only: logits match a batch of one."""
    _, val = data
    model = fresh_model()
    batched = runtime.predict_logits(model, val.take(np.arange(6)).sequences, 6, 0, torch.device("cpu"))
    single = runtime.predict_logits(model, val.take(np.arange(6)).sequences, 1, 0, torch.device("cpu"))
    np.testing.assert_allclose(batched, single, atol=1e-5)


def one_layer_model():
    """The real model cut to its first encoder layer: what compiling it proves holds for six, at a
    sixth of inductor's compile time on the CPU."""
    model = fresh_model()
    model.bert.encoder.layer = model.bert.encoder.layer[:1]
    model.config.num_hidden_layers = 1
    return model


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on the CPU needs a C++ compiler")
def test_torch_compile_trains_like_eager(data):
    """One compiled graph serves every batch length, and learns like the eager model. Inductor draws
    its own dropout masks, so the losses agree closely, not exactly."""
    import torch._dynamo

    rows, val = data[0].take(np.arange(32)), data[1].take(np.arange(8))
    # Rows cut to 5 lengths, so batches come in several lengths.
    rows = runtime.TokenData(rows.ids, [s[: 24 + 8 * (i % 5)] for i, s in enumerate(rows.sequences)], rows.labels)
    losses = {}
    for compiled in (False, True):
        torch._dynamo.reset()
        seed_everything(0, CPU, 2)
        result = train(one_layer_model(), rows, val, train_params(torch_compile=compiled))
        losses[compiled] = result.history[0]["train_loss"]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # compiled, once for every length
    assert losses[True] == pytest.approx(losses[False], abs=0.01)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_training_step(data):
    rows, val = data
    result = train(fresh_model(), rows.take(np.arange(32)), val.take(np.arange(16)), train_params(device="cuda"))
    assert result.history and np.isfinite(result.history[0]["train_loss"])
    assert result.mixed_precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")


def spam_probability(model, tokenizer, texts: list[str]) -> np.ndarray:
    encoded = encoder.encode(tokenizer, [normalise(t) for t in texts], MAX_LENGTH)
    data = runtime.TokenData(
        [str(i) for i in range(len(texts))], [np.asarray(s) for s in encoded], np.zeros(len(texts), dtype=np.int64)
    )
    return runtime.softmax(runtime.predict_logits(model, data.sequences, 8, 0, torch.device("cpu")))[:, 1]


HAM = "Re: meeting notes. Hi Tom, I attached the notes from yesterday's call about the DNS migration."
SPAM = "FREE money!!! Click here to claim your prize now, limited offer, act today and win $1000 cash"


def test_behaviour_invariant_to_whitespace_and_invisible_characters(trained, tokenizer):
    """Harmless formatting edits go through the same cleaning, so predictions do not move at all."""
    model = trained[0]
    edited = [HAM.replace(" ", "  \n "), "\u200b" + SPAM.replace("!", "!\u00ad")]
    np.testing.assert_array_equal(
        spam_probability(model, tokenizer, [HAM, SPAM]), spam_probability(model, tokenizer, edited)
    )


def test_behaviour_names_do_not_decide_the_class(trained, tokenizer):
    model = trained[0]
    base = spam_probability(model, tokenizer, [HAM, SPAM])
    renamed = spam_probability(model, tokenizer, [HAM.replace("Tom", "Maria"), SPAM + " Regards, Maria"])
    assert base[0] < 0.5 < base[1]  # the smoke model separates an obvious pair
    assert (renamed[0] < 0.5) and (renamed[1] > 0.5)
    np.testing.assert_allclose(base, renamed, atol=0.15)


def stopped_then_resumed(rows, val, p, directory, stop_at_step, between=None):
    """A run stopped at `stop_at_step` (as SIGTERM would), `between(directory)` applied to its
    checkpoint, then resumed from it: the resumed model's weights, and the checkpoint's loop state."""

    def run(checkpointer, stop=None):
        seed_everything(0, CPU, 2)
        model = fresh_model()

        def on_step(step, _values):
            if step == stop:
                checkpointer.stop_requested = signal.SIGTERM

        train(model, rows, val, p, on_step=on_step, checkpointer=checkpointer)
        return model.state_dict()

    checkpointer = Checkpointer(directory)
    with pytest.raises(TrainingInterrupted):
        run(checkpointer, stop_at_step)
    saved = checkpointer.peek()
    if between:
        between(directory)
    checkpointer.stop_requested = 0
    return run(checkpointer), saved


def uninterrupted(rows, val, p):
    seed_everything(0, CPU, 2)
    model = fresh_model()
    train(model, rows, val, p)
    return model.state_dict()


@pytest.mark.parametrize("stop_at_step", [2, 3], ids=["mid-epoch", "epoch-boundary"])
def test_interrupted_training_resumes_to_identical_weights(data, tmp_path, stop_at_step):
    """With 24 rows in batches of 8, step 3 ends epoch 1."""
    rows, val = data[0].take(np.arange(24)), data[1].take(np.arange(8))
    p = train_params(epochs=2, early_stopping_patience=2)
    resumed, saved = stopped_then_resumed(rows, val, p, tmp_path / "ckpt", stop_at_step)
    assert saved.step == stop_at_step and (saved.epoch, saved.batch) == ((1, 2) if stop_at_step == 2 else (2, 0))
    reference = uninterrupted(rows, val, p)
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)


def test_checkpoint_from_a_gpu_resumes_on_the_cpu(data, tmp_path):
    """A GPU run's checkpoint holds a CUDA RNG state beside the CPU one; on a machine without CUDA it
    resumes all the same, to the weights of an uninterrupted CPU run (the CUDA state is left unused).
    Weights and optimizer state are loaded onto the CPU first (`map_location`), wherever they were saved."""
    rows, val = data[0].take(np.arange(24)), data[1].take(np.arange(8))
    p = train_params(epochs=1, gradient_accumulation_steps=2, batch_size=4)

    def as_if_saved_on_a_gpu(directory):
        (rng_file,) = directory.glob("step-*/random_states_0.pkl")
        states = torch.load(rng_file, weights_only=False)
        assert "torch_cuda_manual_seed" not in states  # saved here, without CUDA
        states["torch_cuda_manual_seed"] = [torch.zeros(16, dtype=torch.uint8)]  # a GPU's: a CPU byte tensor
        torch.save(states, rng_file)

    resumed, saved = stopped_then_resumed(rows, val, p, tmp_path / "ckpt" / "run", 2, as_if_saved_on_a_gpu)
    assert (saved.step, saved.batch) == (2, 4)  # accumulation: 2 batches per step
    reference = uninterrupted(rows, val, p)
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_checkpoints_move_between_gpu_and_cpu(data, tmp_path):
    """Stopped on one device, resumed on the other, both ways: the run finishes with finite weights."""
    rows, val = data[0].take(np.arange(32)), data[1].take(np.arange(8))
    for first, second in (("cuda", "cpu"), ("cpu", "cuda")):
        directory = tmp_path / first
        checkpointer = Checkpointer(directory)
        p_first = train_params(device=first, mixed_precision="no", epochs=2, early_stopping_patience=2)
        with pytest.raises(TrainingInterrupted):
            train(
                fresh_model(),
                rows,
                val,
                p_first,
                checkpointer=checkpointer,
                on_step=lambda step, _v, c=checkpointer: setattr(c, "stop_requested", signal.SIGTERM),
            )
        checkpointer.stop_requested = 0
        model = fresh_model()
        result = train(model, rows, val, p_first.model_copy(update={"device": second}), checkpointer=checkpointer)
        assert len(result.history) == 2 and all(torch.isfinite(w).all() for w in model.state_dict().values())


def test_lora_trains_adapters_and_leaves_a_plain_merged_model(data, tmp_path):
    """LoRA trains a few percent of the weights; the model it leaves is a plain classifier (adapters
    merged), in which only the adapted projections and the head moved, and which saves and reloads
    as any Hugging Face model: evaluate and everything after it need no change."""
    from transformers import AutoModelForSequenceClassification

    rows, val = data[0].take(np.arange(32)), data[1].take(np.arange(8))
    seed_everything(0, CPU, 2)
    model = fresh_model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(model, rows, val, train_params(method="lora", learning_rate=1e-3))
    assert result.trainable_parameters < 0.02 * sum(w.numel() for w in model.parameters())
    assert model.state_dict().keys() == initial.keys()
    assert not any("lora" in name for name, _ in model.named_modules())
    moved = {k for k in initial if not torch.equal(initial[k], model.state_dict()[k])}
    adapted = {k for k in initial if k.endswith(("query.weight", "value.weight")) or k.startswith("classifier.")}
    assert moved == adapted  # target_modules [query, value] in all 6 layers, and the head
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    sequences = val.sequences
    np.testing.assert_allclose(
        runtime.predict_logits(reloaded, sequences, 8, 0, CPU),
        runtime.predict_logits(model, sequences, 8, 0, CPU),
        atol=1e-6,
    )


def test_balanced_class_weights_lift_the_minority_class(data):
    """On 4:1 ham:spam rows, the balanced loss weights spam 4x as much as ham: the same run (seeds,
    batches) leaves the model giving spam more probability on held-out mails of both classes."""
    rows, val = data
    ham, spam = np.flatnonzero(rows.labels == 0)[:32], np.flatnonzero(rows.labels == 1)[:8]
    imbalanced = rows.take(np.sort(np.concatenate([ham, spam])))
    mean_spam = {}
    for weights in ("none", "balanced"):
        seed_everything(0, CPU, 2)
        model = fresh_model()
        train(model, imbalanced, val.take(np.arange(8)), train_params(class_weights=weights))
        mean_spam[weights] = runtime.softmax(runtime.predict_logits(model, val.sequences, 16, 0, CPU))[:, 1].mean()
    assert mean_spam["balanced"] > mean_spam["none"] + 0.02, mean_spam
