"""The TensorRT engine cache without TensorRT: keys, profiles, reuse, and rebuilds with their reasons."""

import dataclasses
import hashlib
import json
import logging

import pytest

from fourm_ros.backends.base import BackendError
from fourm_ros.backends.engine_cache import BatchProfile, EngineCache, EngineKey, Stack, profile_shapes
from fourm_ros.backends.export import GraphFile, TensorInfo

JETSON = Stack(tensorrt="10.3.0", gpu="Orin", compute_capability="8.7")
STEP = GraphFile(
    name="caption_step",
    file="caption_step.onnx",
    sha256="a" * 64,
    inputs=(
        TensorInfo("token", "int64", ("batch", 1)),
        TensorInfo("position", "int64", (1,)),
        TensorInfo("self_cache", "float32", (12, 2, "batch", 12, 64, 64)),
        TensorInfo("cross_kv", "float32", (12, 2, "batch", 12, 196, 64)),
    ),
    outputs=(TensorInfo("logits", "float32", ("batch", 30000)),),
)


def _key(**changes):
    key = EngineKey.create(
        STEP, JETSON, precision="fp16", profile=BatchProfile(max_batch=4), workspace_mb=2048
    )
    return dataclasses.replace(key, **changes)


def test_profile_covers_the_dynamic_inputs_only():
    entries = profile_shapes(STEP, BatchProfile(max_batch=4, opt_batch=2))
    assert [entry[0] for entry in entries] == ["token", "self_cache", "cross_kv"]
    _, low, opt, high = entries[1]
    assert (low, opt, high) == ((12, 2, 1, 12, 64, 64), (12, 2, 2, 12, 64, 64), (12, 2, 4, 12, 64, 64))
    pose = dataclasses.replace(STEP, inputs=(TensorInfo("codes", "int64", ("persons", 8)),))
    assert profile_shapes(pose, BatchProfile(max_persons=7)) == (("codes", (1, 8), (2, 8), (7, 8)),)
    odd = dataclasses.replace(STEP, inputs=(TensorInfo("x", "float32", ("frames", 3)),))
    with pytest.raises(BackendError, match="no optimisation profile for the dynamic axis 'frames'"):
        profile_shapes(odd, BatchProfile())
    with pytest.raises(ValueError, match="opt_batch <= max_batch"):
        BatchProfile(max_batch=1, opt_batch=2)


CHANGES = {
    "graph": "human_poses_step",
    "onnx_sha256": "b" * 64,
    "precision": "fp32",
    "profile": profile_shapes(STEP, BatchProfile(max_batch=2)),
    "workspace_mb": 1024,
    "tensorrt": "10.7.0",
    "gpu": "NVIDIA GeForce RTX 4090",
    "compute_capability": "8.9",
    "builder": "0.2.0",
}


@pytest.mark.parametrize("field", list(CHANGES))
def test_every_field_changes_the_key(field):
    assert {f.name for f in dataclasses.fields(EngineKey)} == set(CHANGES)
    base, changed = _key(), _key(**{field: CHANGES[field]})
    assert changed.digest() != base.digest()
    (difference,) = base.differences(changed)
    assert difference.startswith(f"{field} ") and " → " in difference


def test_the_key_survives_its_json_record():
    key = _key()
    assert EngineKey.from_dict(json.loads(json.dumps(key.to_dict()))) == key
    with pytest.raises(ValueError, match="fields"):
        EngineKey.from_dict({"graph": "encoder"})


class FakeTensorRT:
    """Builds 'engines' that name their key; deserialises only bytes it built for the current version."""

    def __init__(self, version="10.3.0"):
        self.version, self.builds, self.timing_caches = version, [], []

    def build(self, onnx_path, key, timing_cache):
        self.builds.append(key.graph)
        self.timing_caches.append(timing_cache.name)
        return f"engine|{self.version}|{key.digest()}".encode()

    def deserialize(self, data):
        parts = data.split(b"|")
        if len(parts) != 3 or parts[0] != b"engine" or parts[1].decode() != self.version:
            return None
        return {"engine": parts[2].decode()}


def _cache(tmp_path, fake, caplog):
    caplog.set_level(logging.INFO)
    return EngineCache(tmp_path, build=fake.build, deserialize=fake.deserialize)


def test_an_engine_is_built_once_then_reused(tmp_path, caplog):
    fake = FakeTensorRT()
    cache = _cache(tmp_path, fake, caplog)
    key = _key()
    engine = cache.load(key, tmp_path / "caption_step.onnx")
    assert engine == {"engine": key.digest()} and fake.builds == ["caption_step"]
    assert "building TensorRT engine caption_step (fp16): no cached engine" in caplog.text
    record = json.loads((tmp_path / "caption_step.fp16.json").read_text())
    data = (tmp_path / "caption_step.fp16.engine").read_bytes()
    assert record["engine_sha256"] == hashlib.sha256(data).hexdigest()
    assert record["key"] == key.to_dict()
    assert cache.load(key, tmp_path / "caption_step.onnx") == engine
    assert fake.builds == ["caption_step"]
    assert fake.timing_caches == ["timing-10.3.0-sm87.cache"]


def test_a_tensorrt_upgrade_rebuilds_and_says_why(tmp_path, caplog):
    cache = _cache(tmp_path, FakeTensorRT("10.3.0"), caplog)
    cache.load(_key(), tmp_path / "caption_step.onnx")
    upgraded = FakeTensorRT("10.7.0")
    cache = _cache(tmp_path, upgraded, caplog)
    caplog.clear()
    engine = cache.load(_key(tensorrt="10.7.0"), tmp_path / "caption_step.onnx")
    assert upgraded.builds == ["caption_step"] and engine is not None
    assert "changed since it was built: tensorrt 10.3.0 → 10.7.0" in caplog.text


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("gpu", "gpu Orin → NVIDIA GeForce RTX 4090"),
        ("compute_capability", "compute_capability 8.7 → 8.9"),
        ("precision", "no cached engine"),  # fp32 and fp16 engines live side by side
        ("profile", "profile token [1, 1]..[4, 1]"),
        ("workspace_mb", "workspace_mb 2048 → 1024"),
        ("onnx_sha256", "onnx_sha256 aaaa"),
    ],
)
def test_an_engine_is_never_loaded_for_another_key(tmp_path, caplog, field, message):
    fake = FakeTensorRT()
    cache = _cache(tmp_path, fake, caplog)
    cache.load(_key(), tmp_path / "caption_step.onnx")
    caplog.clear()
    cache.load(_key(**{field: CHANGES[field]}), tmp_path / "caption_step.onnx")
    assert len(fake.builds) == 2
    assert message in caplog.text


def test_a_corrupt_engine_file_is_rebuilt(tmp_path, caplog):
    fake = FakeTensorRT()
    cache = _cache(tmp_path, fake, caplog)
    key = _key()
    cache.load(key, tmp_path / "caption_step.onnx")
    path = tmp_path / "caption_step.fp16.engine"
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    caplog.clear()
    assert cache.load(key, tmp_path / "caption_step.onnx") == {"engine": key.digest()}
    assert "the engine file is corrupt" in caplog.text and len(fake.builds) == 2


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ([None, "engine"], "TensorRT could not deserialise the cached engine"),
        (
            [RuntimeError("Serialization assertion failed"), "engine"],
            "engine (Serialization assertion failed)",
        ),
    ],
)
def test_an_engine_tensorrt_cannot_read_is_rebuilt(tmp_path, caplog, answers, message):
    """The record matches, but TensorRT rejects the cached bytes (returns None or raises)."""
    fake = FakeTensorRT()
    key = _key()
    _cache(tmp_path, fake, caplog).load(key, tmp_path / "caption_step.onnx")
    cache = EngineCache(tmp_path, build=fake.build, deserialize=_answering(answers, fake))
    caplog.clear()
    assert cache.load(key, tmp_path / "caption_step.onnx") == {"engine": key.digest()}
    assert message in caplog.text and len(fake.builds) == 2


def test_a_fresh_engine_tensorrt_cannot_read_is_an_error(tmp_path, caplog):
    fake = FakeTensorRT()
    cache = EngineCache(tmp_path, build=fake.build, deserialize=_answering([None], fake))
    with pytest.raises(BackendError, match="built the fp16 engine for caption_step but cannot deserialise"):
        cache.load(_key(), tmp_path / "caption_step.onnx")


def _answering(answers, fake):
    """A deserialiser that gives ``answers`` in turn (None, an exception to raise, or "engine")."""
    answers = iter(answers)

    def deserialize(data):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return None if answer is None else fake.deserialize(data)

    return deserialize


def test_missing_or_malformed_records_force_a_rebuild(tmp_path, caplog):
    fake = FakeTensorRT()
    cache = _cache(tmp_path, fake, caplog)
    key = _key()
    cache.load(key, tmp_path / "caption_step.onnx")
    record = tmp_path / "caption_step.fp16.json"
    record.unlink()
    assert cache.stale_reason(key) == "its record is missing or unreadable"
    record.write_text(json.dumps({"key": {"graph": "caption_step"}}))
    assert cache.stale_reason(key).startswith("its record is malformed")
    cache.load(key, tmp_path / "caption_step.onnx")
    assert cache.stale_reason(key) is None and len(fake.builds) == 2
