"""The task interface: the hooks the stages and the prediction path call where tasks differ.

A stage keeps its shape for every task; where a sequence classifier and a token classifier part ways
(the head, the loss, what a label is, how a model is scored, what a prediction looks like) it asks the
task chosen by params.yaml's top-level `task:` (`catalog.task_named`). A task holds no state, so one
instance serves every caller (and pickles into DataLoader worker processes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np
    import torch

    from reprolab.model.runtime import TokenData


class Task(ABC):
    name: ClassVar[str]  # its value of params.yaml's `task:`, recorded in the model's recipe
    auto_model: ClassVar[str]  # the transformers Auto class with this task's head
    head_config: ClassVar[dict[str, Any]]  # model config the head needs before its first forward
    peft_task_type: ClassVar[str]  # peft's TaskType for LoRA adapters on that head
    logits_axes: ClassVar[dict[int, str]]  # the dynamic axes of the exported graph's logits
    model_name: ClassVar[str] = "transformer"  # the fine-tuned model's key in metrics.json and reports
    baseline_name: ClassVar[str] = "baseline"  # the classical peer's key
    student_name: ClassVar[str] = "student"  # the distilled student's, scored against the fine-tuned model
    baseline_title: ClassVar[str]  # what the baseline is (stages/evaluate.py `BY_TASK`), as reports name it
    score: ClassVar[str]  # the test score models are ranked by (a key of each model's section of metrics.json)
    score_title: ClassVar[str]  # how reports name it
    accuracy: ClassVar[str]  # the test scores' accuracy key
    paired_test: ClassVar[tuple[str, str]]  # the comparison's p-value key beside `score`'s difference, and its name
    validation_fields: ClassVar[tuple[str, ...]]  # the keys of `validation_scores`, the early-stopping one last
    # What a record of new data is read from by `reprolab predict` and the served model: the table
    # columns tried in turn for its text (or words), and for its true label (shown beside the prediction).
    input_columns: ClassVar[tuple[str, ...]]
    label_column: ClassVar[str]  # also the true label's field in ingest's rows
    input_formats: ClassVar[tuple[str, ...]]  # the `--input-format`s its new records can come in
    actual_type: ClassVar[Any]  # the Arrow type of a record's true label in prediction outputs
    # The ingest and tokenize keys (beyond every task's) the model's recipe records for new records.
    source_keys: ClassVar[tuple[str, ...]] = ()
    tokenize_keys: ClassVar[tuple[str, ...]] = ()
    export_tolerance: ClassVar[float]  # how far int8's test `score` may be from torch's (the export target)

    @property
    def selection_score(self) -> str:
        """The validation score that picks the best epoch and stops training early."""
        return self.validation_fields[-1]

    def label_names(self, classes: list[str]) -> list[str]:
        """The model's classes, in class-id order, from ingest's labels as class names."""
        return classes

    @property
    def scored(self) -> tuple[str, str]:
        """The models evaluate scores, as metrics.json, the plot files and `reprolab compare` name them."""
        return self.model_name, self.baseline_name

    @property
    def student_scored(self) -> tuple[str, str]:
        """The student and its reference (its teacher), as the student's metrics.json names them."""
        return self.student_name, self.model_name

    @abstractmethod
    def collate_labels(self, labels: list[Any], width: int) -> torch.Tensor:
        """A batch's labels (one per row of the token data) as the tensor `loss` takes; `width`: the
        batch's padded sequence length."""

    @abstractmethod
    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        """The training loss of a batch's logits (class weights optional)."""

    @abstractmethod
    def output_fields(self, names: list[str]) -> list[tuple[str, Any]]:
        """The prediction columns (name, Arrow type) `reprolab predict` writes after id and actual."""

    @abstractmethod
    def output_columns(self, results: Any, names: list[str], rows: list[dict] | None = None) -> dict[str, list[Any]]:
        """`output_fields`' values for scored records: `results` as `Predictor.score` gives them (a row
        of class probabilities; a matrix of tag probabilities, a row per word), `rows` the records (a
        tagger's spans need their words and text; a classifier reads none)."""

    @abstractmethod
    def backend_scores(
        self, test: TokenData, probs: np.ndarray, reference: np.ndarray, names: list[str]
    ) -> dict[str, float]:
        """The test `score` of one backend's probabilities (`runtime.batched_logits`' rows) and how far
        its predictions agree with the `reference` backend's."""

    @abstractmethod
    def validation_scores(self, val: TokenData, probs: np.ndarray, names: list[str]) -> dict[str, float]:
        """The `validation_fields` of the validation rows' probabilities (`runtime.batched_logits`'s rows);
        `names`: the model's classes."""
