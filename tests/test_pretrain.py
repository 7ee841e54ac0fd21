"""Backbone pre-training on digit crops, and its use by fit()."""
import pytest
import torch

from digitdet.config import Config
from digitdet.data.coco import load_coco_digits
from digitdet.io import load_checkpoint
from digitdet.models.faster_rcnn import build_model
from digitdet.train.fit import fit
from digitdet.train.pretrain import DigitCrops, build_classifier, pretrain_backbone


def test_crops_are_square_labelled_and_reproducible(tiny_data):
    coco, _ = load_coco_digits(tiny_data / "train.json", tiny_data / "train")
    crops = DigitCrops(coco, tiny_data / "train", seed=1)
    n_boxes = len(coco["annotations"])
    assert len(crops) == n_boxes + int(n_boxes * 0.25)
    x, y = crops[0]
    assert x.shape == (3, 64, 64) and 1 <= y <= 10
    assert torch.equal(crops[0][0], x)
    assert crops[len(crops) - 1][1] == 0  # background windows come last


@pytest.mark.slow
def test_pretrained_classifier_initialises_the_detector(tiny_data, tmp_path):
    out = tmp_path / "bb.pt"
    result = pretrain_backbone(tiny_data, out, epochs=1, batch_size=16, workers=0, progress=False)
    assert 0.0 <= result["valid_accuracy"] <= 1.0
    state = load_checkpoint(out)["model"]
    model = build_model(Config(pretrained=str(out), returned_layers=[2, 3], anchor_sizes=[[16], [32]]))
    assert torch.equal(model.backbone.body.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])
    assert set(build_classifier("mobilenet_v3_fpn").state_dict())  # mobilenet classifier builds too


def test_classifier_of_the_first_stages_only_initialises_the_detector(tiny_data, tmp_path):
    short = build_classifier("resnet18_fpn", stages=2)
    assert not any(k.startswith(("layer3.", "layer4.")) for k in short.state_dict())
    assert short(torch.zeros(2, 3, 64, 64)).shape == (2, 11)  # classifies from stage 2's 128 channels
    out = tmp_path / "bb2.pt"
    pretrain_backbone(tiny_data, out, epochs=1, batch_size=16, workers=0, progress=False, stages=2)
    state = load_checkpoint(out)["model"]
    model = build_model(Config(pretrained=str(out)))  # the default detector: stages 1-2
    assert torch.equal(model.backbone.body.layer2[1].conv2.weight, state["layer2.1.conv2.weight"])
    with pytest.raises(ValueError, match="stages=5"):
        build_classifier("resnet18_fpn", stages=5)
    with pytest.raises(ValueError, match="only ResNet"):
        build_classifier("mobilenet_v3_fpn", stages=2)


@pytest.mark.slow
def test_fit_pretrains_once_and_records_the_file(tiny_data, tmp_path):
    cfg = Config().override(["fpn_channels=32", "representation_size=64", "min_size=48", "max_size=128",
                             "workers=0", "batch_size=4", "epochs=1", "eval_every=0", "max_train_images=8",
                             "max_valid_images=4", "pretrain_epochs=1", "pretrain_max_images=4"])
    fit(cfg, tiny_data, tmp_path / "run", progress=False)
    saved = load_checkpoint(tmp_path / "run" / "last.pt")["config"]
    assert saved["pretrained"] == str(tmp_path / "run" / "backbone.pt")
    assert (tmp_path / "run" / "backbone.pt").exists()
