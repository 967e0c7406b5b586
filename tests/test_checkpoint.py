import os
import pickle

import pytest
import torch

from routescope.models import create_model, list_models
from routescope.models.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint

META = {
    "name": "tiny",
    "method": "baseline",
    "dataset": "fashion-mnist",
    "classes": [str(i) for i in range(10)],
    "input_size": [1, 28, 28],
    "mean": [0.286],
    "std": [0.353],
    "metrics": {},
    "recipe": {},
}


def test_registry_lists_cifar_resnets():
    assert {"resnet20", "resnet32", "resnet56", "resnet110"} <= set(list_models())
    with pytest.raises(KeyError, match="unknown model"):
        create_model("resnet21")


@pytest.mark.parametrize("name,blocks", [("resnet8", 1), ("resnet20", 3), ("resnet32", 5)])
def test_resnet_depth_and_channels(name, blocks):
    model = create_model(name, in_chans=1, num_classes=7)
    assert len(model.layer2) == blocks and model.layer1[0].conv1.in_channels == 16
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    rgb = create_model(name, in_chans=3)
    assert rgb(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_roundtrip_is_weights_only_and_exact(tmp_path):
    model = create_model("resnet8", in_chans=1).eval()
    save_checkpoint(tmp_path / "m.pt", model, META)
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert raw["format"] == "routescope" and raw["arch"] == "resnet8"
    loaded = load_checkpoint(tmp_path / "m.pt", form="train")
    x = torch.randn(3, 1, 28, 28)
    assert not loaded.training and loaded.meta["name"] == "tiny"
    assert torch.equal(loaded(x), model(x))
    assert not list(tmp_path.glob("*.tmp")), "atomic write left a temporary file"


def test_plain_state_dict_is_refused(tmp_path):
    torch.save(create_model("resnet8").state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a RouteScope checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


def test_garbage_and_pickled_code_are_refused(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"\x00not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a loadable"):
        load_checkpoint(tmp_path / "junk.pt")
    with open(tmp_path / "code.pt", "wb") as f:
        pickle.dump(os.system, f)  # a reference to code: weights_only must refuse it
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_weights_that_do_not_fit_their_architecture(tmp_path):
    save_checkpoint(tmp_path / "m.pt", create_model("resnet8", in_chans=1), META)
    payload = read_checkpoint(tmp_path / "m.pt")
    payload["arch"] = "resnet14"
    torch.save(payload, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match="do not fit architecture 'resnet14'") as info:
        load_checkpoint(tmp_path / "wrong.pt")
    assert "\n" not in str(info.value)
    payload["arch"] = "no_such_net"
    torch.save(payload, tmp_path / "unknown.pt")
    with pytest.raises(CheckpointError, match="cannot build"):
        load_checkpoint(tmp_path / "unknown.pt")


def test_version_mismatch(tmp_path):
    save_checkpoint(tmp_path / "m.pt", create_model("resnet8"), META)
    payload = read_checkpoint(tmp_path / "m.pt")
    payload["version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path / "future.pt")
