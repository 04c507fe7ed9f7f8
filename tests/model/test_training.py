"""A few real training steps of the shipped model on real (small) slices of the corpus."""

import shutil

import numpy as np
import pytest
import torch

from reprolab import encoding, modeling
from reprolab.cleaning import normalise
from reprolab.training import STEP_FIELDS, history_csv, seed_everything, train_model
from tests.conftest import MAX_LENGTH, MODEL, corpus_tokens, train_params


@pytest.fixture(scope="module")
def data(tokenizer):
    return corpus_tokens(tokenizer, 60, 0), corpus_tokens(tokenizer, 40, 500)


def fresh_model(seed=0):
    torch.manual_seed(seed)
    return modeling.load_classifier(str(MODEL), ["ham", "spam"])


def batch_loss(model, data: modeling.TokenData) -> float:
    input_ids, mask = modeling.collate(data.sequences, 0)
    model.eval()
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=mask, labels=torch.from_numpy(data.labels)).loss.item()


@pytest.fixture(scope="module")
def trained(data):
    """The smoke model: two epochs on 120 real messages."""
    train, val = data
    device = torch.device("cpu")
    seed_everything(0, device, 2)
    model = fresh_model()
    before = batch_loss(model, val)
    steps = []
    result = train_model(model, train, val, train_params(epochs=2), 0, MAX_LENGTH, device,
                         on_step=lambda step, values: steps.append(values["train_loss"]))
    return model, result, steps, before


def test_training_lowers_loss_and_clears_accuracy_floor(data, trained):
    _, val = data
    model, result, steps, before = trained
    assert batch_loss(model, val) < before
    assert len(steps) == 30 and np.mean(steps[-5:]) < np.mean(steps[:5])
    best = result.history[result.best_epoch - 1]
    assert best["val_accuracy"] >= 0.85, result.history  # smoke floor: spam vs ham is easy
    assert history_csv(result.history).splitlines()[0].startswith("epoch,train_loss")
    # The logged steps are kept for train_steps.csv, as on_step saw them, each with its epoch.
    assert [row["train_loss"] for row in result.steps] == steps
    assert [row["step"] for row in result.steps] == list(range(1, 31)) and result.steps[-1]["epoch"] == 2
    assert history_csv(result.steps, STEP_FIELDS).splitlines()[0] == "step,epoch,train_loss,learning_rate"


def test_cpu_training_is_bit_identical(data):
    train, val = data
    device = torch.device("cpu")
    states = []
    for _ in range(2):
        seed_everything(0, device, 2)
        model = fresh_model()
        train_model(model, train.take(np.arange(24)), val.take(np.arange(8)), train_params(), 0, MAX_LENGTH, device)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_padding_does_not_change_predictions(data):
    """Dynamic padding is an optimisation only: logits match a batch of one."""
    _, val = data
    model = fresh_model()
    batched = modeling.predict_logits(model, val.take(np.arange(6)).sequences, 6, 0, torch.device("cpu"))
    single = modeling.predict_logits(model, val.take(np.arange(6)).sequences, 1, 0, torch.device("cpu"))
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

    train, val = data[0].take(np.arange(32)), data[1].take(np.arange(8))
    # Rows cut to 5 lengths, so batches come in several lengths.
    train = modeling.TokenData(train.ids, [s[: 24 + 8 * (i % 5)] for i, s in enumerate(train.sequences)], train.labels)
    device = torch.device("cpu")
    losses = {}
    for compiled in (False, True):
        torch._dynamo.reset()
        seed_everything(0, device, 2)
        result = train_model(one_layer_model(), train, val, train_params(torch_compile=compiled), 0, MAX_LENGTH,
                             device)
        losses[compiled] = result.history[0]["train_loss"]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # compiled, once for every length
    assert losses[True] == pytest.approx(losses[False], abs=0.01)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_training_step(data):
    train, val = data
    device = torch.device("cuda")
    model = fresh_model().to(device)
    result = train_model(model, train.take(np.arange(32)), val.take(np.arange(16)), train_params(device="cuda"), 0,
                         MAX_LENGTH, device)
    assert result.history and np.isfinite(result.history[0]["train_loss"])


def spam_probability(model, tokenizer, texts: list[str]) -> np.ndarray:
    encoded = encoding.encode(tokenizer, [normalise(t) for t in texts], MAX_LENGTH)
    data = modeling.TokenData([str(i) for i in range(len(texts))], [np.asarray(s) for s in encoded],
                              np.zeros(len(texts), dtype=np.int64))
    return modeling.softmax(modeling.predict_logits(model, data.sequences, 8, 0, torch.device("cpu")))[:, 1]


HAM = "Re: meeting notes. Hi Tom, I attached the notes from yesterday's call about the DNS migration."
SPAM = "FREE money!!! Click here to claim your prize now, limited offer, act today and win $1000 cash"


def test_behaviour_invariant_to_whitespace_and_invisible_characters(trained, tokenizer):
    """Harmless formatting edits go through the same cleaning, so predictions do not move at all."""
    model = trained[0]
    edited = [HAM.replace(" ", "  \n "), "\u200b" + SPAM.replace("!", "!\u00ad")]
    np.testing.assert_array_equal(spam_probability(model, tokenizer, [HAM, SPAM]),
                                  spam_probability(model, tokenizer, edited))


def test_behaviour_names_do_not_decide_the_class(trained, tokenizer):
    model = trained[0]
    base = spam_probability(model, tokenizer, [HAM, SPAM])
    renamed = spam_probability(model, tokenizer, [HAM.replace("Tom", "Maria"), SPAM + " Regards, Maria"])
    assert base[0] < 0.5 < base[1]  # the smoke model separates an obvious pair
    assert (renamed[0] < 0.5) and (renamed[1] > 0.5)
    np.testing.assert_allclose(base, renamed, atol=0.15)


@pytest.mark.parametrize("stop_at_step", [2, 3], ids=["mid-epoch", "epoch-boundary"])
def test_interrupted_training_resumes_to_identical_weights(data, tmp_path, stop_at_step):
    """Stopped at a step (as SIGTERM would), then resumed from the checkpoint: the same weights as
    an uninterrupted run. With 24 rows in batches of 8, step 3 ends epoch 1."""
    import signal

    from reprolab.training import Checkpointer, TrainingInterrupted

    train, val = data[0].take(np.arange(24)), data[1].take(np.arange(8))
    device = torch.device("cpu")
    p = train_params(epochs=2, early_stopping_patience=2, checkpoint_every_steps=0)

    def trained(checkpointer=None, stop=None):
        seed_everything(0, device, 2)
        model = fresh_model()

        def on_step(step, _values):
            if step == stop:
                checkpointer.stop_requested = signal.SIGTERM

        train_model(model, train, val, p, 0, MAX_LENGTH, device, on_step=on_step, checkpointer=checkpointer)
        return model.state_dict()

    reference = trained()
    checkpointer = Checkpointer(tmp_path / "ckpt", every_steps=0)
    with pytest.raises(TrainingInterrupted):
        trained(checkpointer, stop_at_step)
    saved = checkpointer.peek()
    assert saved.step == stop_at_step and (saved.epoch, saved.batch) == ((1, 2) if stop_at_step == 2 else (2, 0))
    checkpointer.stop_requested = 0
    resumed = trained(checkpointer)
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
