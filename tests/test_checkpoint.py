"""The strict safetensors loader shared by the model and the tokenizers."""

import json

import pytest
import torch
from safetensors.torch import save_file

from fourm_ros import checkpoint
from fourm_ros.checkpoint import CheckpointError


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.register_buffer("table", torch.arange(6.0).reshape(2, 3))


def _write(directory, tensors, config=None):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config or {"dim": 4}))
    save_file(tensors, str(directory / "model.safetensors"))
    return directory


def _full(module):
    return {key: value.clone() + 1 for key, value in module.state_dict().items()}


def test_round_trip_copies_every_tensor_and_casts_dtype(tmp_path):
    source = _full(Tiny())
    ckpt = checkpoint.resolve(_write(tmp_path / "ckpt", source))
    assert ckpt.config == {"dim": 4}
    target = Tiny().to(torch.float16)
    loaded = checkpoint.load_state(target, ckpt.weights)
    assert sorted(loaded) == sorted(source)
    assert target.linear.weight.dtype == torch.float16
    torch.testing.assert_close(target.linear.weight.float(), source["linear.weight"], atol=1e-3, rtol=1e-3)


def test_missing_key_is_named(tmp_path):
    tensors = _full(Tiny())
    del tensors["linear.bias"]
    ckpt = checkpoint.resolve(_write(tmp_path / "c", tensors))
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): linear\.bias"):
        checkpoint.load_state(Tiny(), ckpt.weights)


def test_computable_buffer_may_be_absent_and_keeps_its_value(tmp_path):
    tensors = _full(Tiny())
    del tensors["table"]
    ckpt = checkpoint.resolve(_write(tmp_path / "c", tensors))
    module = Tiny()
    checkpoint.load_state(module, ckpt.weights, computable={"table"})
    torch.testing.assert_close(module.table, torch.arange(6.0).reshape(2, 3))


def test_shape_mismatch_is_named_with_both_shapes(tmp_path):
    tensors = _full(Tiny())
    tensors["linear.weight"] = torch.zeros(3, 5)
    ckpt = checkpoint.resolve(_write(tmp_path / "c", tensors))
    with pytest.raises(CheckpointError, match=r"linear\.weight: file \[3, 5\] vs module \[3, 4\]"):
        checkpoint.load_state(Tiny(), ckpt.weights)


def test_unexpected_key_is_an_error_unless_declared_known(tmp_path):
    tensors = _full(Tiny())
    tensors["other.weight"] = torch.zeros(2)
    ckpt = checkpoint.resolve(_write(tmp_path / "c", tensors))
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): other\.weight"):
        checkpoint.load_state(Tiny(), ckpt.weights)
    loaded = checkpoint.load_state(Tiny(), ckpt.weights, known_unused=lambda key: key.startswith("other."))
    assert "other.weight" not in loaded


def test_rename_maps_file_keys_to_module_keys(tmp_path):
    tensors = _full(Tiny())
    tensors["renamed.weight"] = tensors.pop("linear.weight")
    ckpt = checkpoint.resolve(_write(tmp_path / "c", tensors))
    module = Tiny()
    checkpoint.load_state(module, ckpt.weights, rename={"renamed.weight": "linear.weight"})
    torch.testing.assert_close(module.linear.weight, tensors["renamed.weight"])


def test_truncated_file_is_rejected_clearly(tmp_path):
    directory = _write(tmp_path / "c", _full(Tiny()))
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        checkpoint.load_state(Tiny(), checkpoint.resolve(directory).weights)


def test_garbage_file_is_rejected_clearly(tmp_path):
    directory = _write(tmp_path / "c", _full(Tiny()))
    (directory / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        checkpoint.read_shapes(directory / "model.safetensors")


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pth", "weights.ckpt"])
def test_pickle_files_are_refused_not_loaded(tmp_path, name):
    directory = tmp_path / "c"
    directory.mkdir()
    (directory / "config.json").write_text("{}")
    (directory / name).write_bytes(b"not even looked at")
    with pytest.raises(CheckpointError, match="pickle"):
        checkpoint.resolve(directory)
    with pytest.raises(CheckpointError, match="only from safetensors"):
        checkpoint.resolve(directory / name)


def test_missing_config_and_bad_json(tmp_path):
    directory = _write(tmp_path / "c", _full(Tiny()))
    (directory / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        checkpoint.resolve(directory)
    (directory / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"has no config\.json"):
        checkpoint.resolve(directory)


def test_nonexistent_path_is_explained(tmp_path):
    with pytest.raises(CheckpointError, match="neither an existing path nor a Hugging Face repo id"):
        checkpoint.resolve(str(tmp_path / "nowhere" / "deeper" / "x"))


def test_offline_repo_not_in_cache_names_the_repo_and_the_alternative(tmp_path):
    with pytest.raises(CheckpointError, match=r"EPFL-VILAB/4M-21_B.*offline.*local directory"):
        checkpoint.resolve("EPFL-VILAB/4M-21_B", cache_dir=tmp_path, offline=True)


def test_unreachable_hub_names_the_repo_and_the_alternative(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError("connection refused")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(CheckpointError, match=r"EPFL-VILAB/4M-21_B.*could not be reached.*local directory"):
        checkpoint.resolve("EPFL-VILAB/4M-21_B", cache_dir=tmp_path)


def test_repo_in_the_cache_resolves_offline(tmp_path):
    from huggingface_hub import constants

    repo_dir = tmp_path / "models--org--tiny"
    snapshot = repo_dir / "snapshots" / ("0" * 40)
    _write(snapshot, _full(Tiny()))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("0" * 40)
    assert constants.HF_HUB_OFFLINE
    ckpt = checkpoint.resolve("org/tiny", cache_dir=tmp_path, offline=True)
    assert ckpt.weights == snapshot / "model.safetensors"
    assert ckpt.source == "org/tiny"
