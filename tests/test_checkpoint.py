import os
import pickle
from pathlib import Path

import pytest
import torch

from distilshot.errors import CheckpointError
from distilshot.train.checkpoint import ModelSpec, load_model, save_checkpoint

SPEC = ModelSpec("protonet", "convnet4", 5, 1, 28, (0.9,), (0.3,), "omniglot", {})


class Payload:
    """Unpickling this would run os.system: a checkpoint that is not ours must never get that far."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("touch pwned",))


def test_round_trip_keeps_weights_and_extra_state(tmp_path: Path) -> None:
    model = SPEC.build().eval()
    path = save_checkpoint(tmp_path / "m.pt", SPEC, model, epoch=3, history=[{"val_acc": 50.0}])
    loaded, spec, payload = load_model(path)
    assert spec == SPEC and payload["epoch"] == 3 and payload["history"] == [{"val_acc": 50.0}]
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded.embed(x)["embedding"], model.embed(x)["embedding"])
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_a_pickle_with_code_is_refused_without_running_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": "distilshot-checkpoint", "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="not a distilshot checkpoint"):
        load_model(path)
    assert not (tmp_path / "pwned").exists()


def test_foreign_corrupt_and_missing_files_are_refused(tmp_path: Path) -> None:
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no 'distilshot-checkpoint' marker"):
        load_model(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(CheckpointError, match="corrupted"):
        load_model(tmp_path / "junk.pt")
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "plain.pkl")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "absent.pt")


def test_mismatched_weights_are_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", SPEC, SPEC.build())
    payload = torch.load(path, weights_only=True)
    payload["spec"]["backbone"] = "resnet12"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(path)
