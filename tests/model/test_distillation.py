"""A student of the real MiniLM's layers, trained through the training loop on a teacher's logits."""

import signal

import numpy as np
import pytest
import torch

from reprolab.errors import StageError
from reprolab.model import distillation, runtime
from reprolab.model.checkpoints import Checkpointer, TrainingInterrupted
from reprolab.model.training import make_accelerator, seed_everything, train_model
from reprolab.params import DistillParams
from reprolab.tasks.sequence_classification import SequenceClassification
from tests.conftest import MAX_LENGTH, MODEL, corpus_tokens, train_params

TASK = SequenceClassification()
CPU = torch.device("cpu")


def pretrained(seed: int = 0):
    torch.manual_seed(seed)
    return runtime.load_model(TASK, str(MODEL), ["ham", "spam"])


def test_a_student_keeps_the_chosen_layers_weights_and_the_teacher_stays_whole(tmp_path):
    teacher = pretrained()
    student = distillation.keep_layers(teacher, [1, 4])
    assert len(distillation.encoder_layers(teacher)) == 6 and teacher.config.num_hidden_layers == 6
    assert student.config.num_hidden_layers == 2
    kept, original = student.state_dict(), teacher.state_dict()
    for new, old in ((0, 1), (1, 4)):
        for name, weight in distillation.encoder_layers(student)[new].state_dict().items():
            assert torch.equal(weight, original[f"bert.encoder.layer.{old}.{name}"]), (new, name)
    for name in ("bert.embeddings.word_embeddings.weight", "classifier.weight", "bert.pooler.dense.weight"):
        assert torch.equal(kept[name], original[name])
    assert not any(name.startswith("bert.encoder.layer.2.") for name in kept)
    # Saved and loaded like any model of its class: the same network comes back.
    student.save_pretrained(tmp_path)
    again = runtime.load_model(TASK, str(tmp_path), ["ham", "spam"])
    ids = torch.tensor([[101, 7592, 2088, 102]])
    student.eval()
    assert torch.equal(student(input_ids=ids).logits, again(input_ids=ids).logits)
    with pytest.raises(StageError, match=r"\[6\] not among the encoder's 6 layers \(0 to 5\)"):
        distillation.keep_layers(teacher, [0, 6])


@pytest.fixture(scope="module")
def rows(tokenizer):
    """Real mails with a teacher that says the opposite of every true label, confidently: what a student
    learns then shows which of the two it learned from."""
    train = corpus_tokens(tokenizer, 40, 0)
    contrary = [np.array([-4.0, 4.0] if label == 0 else [4.0, -4.0], np.float32) for label in train.labels]
    return train.with_teacher_logits(contrary), corpus_tokens(tokenizer, 20, 500)


def distilled(rows, alpha: float) -> tuple[dict, np.ndarray]:
    train, val = rows
    d = DistillParams(
        student_layers=[0, 2, 4], init="teacher", temperature=2.0, alpha=alpha, epochs=2, learning_rate=5e-4
    )
    p = d.train_params(train_params())
    seed_everything(0, CPU, 2)
    student = distillation.keep_layers(pretrained(), d.student_layers)
    train_model(make_accelerator(p), TASK, student, train, val, p, 0, MAX_LENGTH, distill=d)
    predicted = runtime.predict_logits(student, train.sequences, 32, 0, CPU).argmax(axis=1)
    return student.state_dict(), predicted


def test_alpha_one_learns_the_teachers_answers_exactly_again_and_alpha_zero_the_true_labels(rows):
    train, _ = rows
    weights, from_teacher = distilled(rows, alpha=1.0)
    _, from_labels = distilled(rows, alpha=0.0)
    assert np.mean(from_teacher != train.labels) >= 0.8, np.mean(from_teacher != train.labels)  # the teacher's
    assert np.mean(from_labels == train.labels) >= 0.8, np.mean(from_labels == train.labels)
    again, _ = distilled(rows, alpha=1.0)  # on the CPU, bit for bit
    assert weights.keys() == again.keys() and all(torch.equal(weights[k], again[k]) for k in weights)


def test_a_student_stopped_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_one(rows, tmp_path):
    """Stopped at step 2 of 3 (24 rows in batches of 8), as SIGTERM stops the stage, then resumed from
    its checkpoint: the teacher's logits come back with the rows the resumed epoch still has to see."""
    train, val = rows[0].take(np.arange(24)), rows[1].take(np.arange(8))
    d = DistillParams(
        student_layers=[0, 2, 4], init="teacher", temperature=2.0, alpha=0.5, epochs=2, learning_rate=5e-4
    )
    p = d.train_params(train_params(early_stopping_patience=2))

    def run(checkpointer=None, stop=None):
        seed_everything(0, CPU, 2)
        student = distillation.keep_layers(pretrained(), d.student_layers)

        def on_step(step, _values):
            if step == stop:
                checkpointer.stop_requested = signal.SIGTERM

        train_model(make_accelerator(p), TASK, student, train, val, p, 0, MAX_LENGTH, on_step, checkpointer, distill=d)
        return student.state_dict()

    checkpointer = Checkpointer(tmp_path)
    with pytest.raises(TrainingInterrupted):
        run(checkpointer, stop=2)
    assert checkpointer.peek().step == 2
    checkpointer.stop_requested = 0
    resumed, reference = run(checkpointer), run()
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
