"""`reprolab vendor-model`: a model directory copied into the repository, from a folder or from an
installed package that carries one (how the default model arrives), never from the network."""

import json
import sys

import pytest

from reprolab.data.vendoring import vendor_model
from reprolab.errors import StageError


def model_dir(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (path / "model.safetensors").write_bytes(b"weights")
    (path / ".cache").write_text("not part of the model")
    (path / "nested").mkdir()  # only the folder's files are the model
    return path


def test_vendors_a_local_folder_file_by_file(tmp_path):
    source = model_dir(tmp_path / "source")
    dest = vendor_model(str(source), tmp_path / "models/pretrained/mine")
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "model.safetensors"]
    assert (dest / "model.safetensors").read_bytes() == b"weights"
    (source / "model.safetensors").write_bytes(b"new weights")
    vendor_model(str(source), dest)  # vendoring again replaces the copy whole
    assert (dest / "model.safetensors").read_bytes() == b"new weights"


def test_vendors_the_model_folder_of_an_installed_package(tmp_path, monkeypatch):
    package = tmp_path / "site" / "some_model_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    model_dir(package / "model")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "some_model_pkg", raising=False)
    dest = vendor_model("some-model-pkg", tmp_path / "vendored")
    assert (dest / "config.json").is_file() and (dest / "model.safetensors").read_bytes() == b"weights"


def test_a_folder_that_is_no_model_is_refused_and_nothing_written(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StageError, match="not a Hugging Face model directory"):
        vendor_model(str(tmp_path / "empty"), tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
