"""What differs between tasks, behind one interface (`base.Task`): the model head and its loss, the
labels a batch carries, validation and test metrics, the baseline, the prediction output, and what the
exported graph returns. `catalog` names the tasks params.yaml's top-level `task:` can choose."""
