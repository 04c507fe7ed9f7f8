"""The task interface: the hooks the stages and the prediction path call where tasks differ.

A stage keeps its shape for every task; where a sequence classifier and a token classifier part ways
(the head, the loss, what a label is, how a model is scored, what a prediction looks like) it asks the
task chosen by params.yaml's top-level `task:` (`catalog.task_named`). A task holds no state, so one
instance serves every caller (and pickles into DataLoader worker processes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import torch


class Task(ABC):
    name: ClassVar[str]  # its value of params.yaml's `task:`, recorded in the model's recipe
    auto_model: ClassVar[str]  # the transformers Auto class with this task's head
    head_config: ClassVar[dict[str, Any]]  # model config the head needs before its first forward
    peft_task_type: ClassVar[str]  # peft's TaskType for LoRA adapters on that head
    logits_axes: ClassVar[dict[int, str]]  # the dynamic axes of the exported graph's logits
    model_name: ClassVar[str] = "transformer"  # the fine-tuned model's key in metrics.json and reports
    baseline_name: ClassVar[str] = "baseline"  # the classical peer's key
    baseline_title: ClassVar[str]  # what the baseline is (results/baselines.py `BY_TASK`), as reports name it

    @property
    def scored(self) -> tuple[str, str]:
        """The models evaluate scores, as metrics.json, the plot files and `reprolab compare` name them."""
        return self.model_name, self.baseline_name

    @property
    def versus(self) -> str:
        """metrics.json's key for the paired comparison of the fine-tuned model with the baseline."""
        return f"{self.model_name}_vs_{self.baseline_name}"

    @abstractmethod
    def collate_labels(self, labels: list[Any]) -> torch.Tensor:
        """A batch's labels (one per row of the token data) as the tensor `loss` takes."""

    @abstractmethod
    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        """The training loss of a batch's logits (class weights optional)."""

    @abstractmethod
    def validation_scores(self, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        """val_loss, val_accuracy and val_macro_f1 (the early-stopping score) of validation probabilities."""

    @abstractmethod
    def test_scores(self, labels: np.ndarray, probs: np.ndarray, names: list[str]) -> dict[str, Any]:
        """A model's section of metrics.json: at least `macro_f1` and `accuracy`."""

    @abstractmethod
    def predicted(self, probs: np.ndarray, names: list[str]) -> list[Any]:
        """The label each row's probabilities predict, by name: the one argmax-to-label of the project."""

    @abstractmethod
    def output_fields(self, names: list[str]) -> list[tuple[str, pa.DataType]]:
        """The prediction columns every output holds (predict's files, the MLflow model, evaluate's test
        predictions), in order."""

    @abstractmethod
    def output_columns(self, probs: np.ndarray, names: list[str]) -> dict[str, list[Any]]:
        """Those columns for scored rows, from their probabilities."""
