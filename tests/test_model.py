import pytest
import torch

from digitdet.config import Config
from digitdet.models.faster_rcnn import BACKBONES, build_model
from digitdet.models.roi_align import roi_align_rows as _rows

TINY = dict(fpn_channels=32, representation_size=64, min_size=48, max_size=128)


def _empty_target():
    return {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)}


@pytest.mark.parametrize("box_loss", ["smooth_l1", "giou"])
def test_image_without_digits_has_zero_box_loss(box_loss):
    torch.manual_seed(0)
    model = build_model(Config(**TINY, box_loss=box_loss)).train()
    losses = model([torch.rand(3, 40, 90)], [_empty_target()])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert losses["loss_box_reg"].item() == 0.0 and losses["loss_rpn_box_reg"].item() == 0.0
    assert losses["loss_classifier"].item() > 0


def test_giou_loss_is_positive_with_digits():
    torch.manual_seed(0)
    model = build_model(Config(**TINY, box_loss="giou", rpn_post_nms_top_n_train=50)).train()
    target = {"boxes": torch.tensor([[10.0, 5.0, 24.0, 35.0], [26.0, 5.0, 40.0, 35.0]]),
              "labels": torch.tensor([2, 8])}
    losses = model([torch.rand(3, 40, 90)], [target])
    assert losses["loss_box_reg"].item() > 0  # ground truth is added to the proposals


@pytest.mark.parametrize("backbone", [b for b in BACKBONES if b not in ("resnet101_fpn", "resnet50_fpn_v2")])
def test_every_backbone_builds_and_predicts_in_image_pixels(backbone):
    model = build_model(Config(backbone=backbone, **TINY, box_score_thresh=0.0)).eval()
    with torch.inference_mode():
        out = model([torch.rand(3, 37, 101)])[0]
    assert out["boxes"].shape[1] == 4
    if len(out["boxes"]):
        assert out["boxes"][:, 2].max() <= 101 and out["boxes"][:, 3].max() <= 37
        assert out["labels"].min() >= 1 and out["labels"].max() <= 10


def test_anchor_levels_must_match_feature_maps():
    with pytest.raises(ValueError, match="anchor_sizes has 2 levels"):
        build_model(Config(**TINY, returned_layers=[1, 2, 3], anchor_sizes=[[16], [32]]))


def test_roi_iou_thresholds_reach_the_sampler():
    heads = build_model(Config(**TINY, box_fg_iou_thresh=0.6, box_bg_iou_thresh=0.4)).roi_heads
    assert (heads.proposal_matcher.high_threshold, heads.proposal_matcher.low_threshold) == (0.6, 0.4)


def test_anchor_ratio_is_height_over_width():
    from digitdet.models.faster_rcnn import anchor_generator
    gen = anchor_generator(Config(anchor_sizes=[[32], [64], [128]], aspect_ratios=[4.0]), 3)
    x1, y1, x2, y2 = gen.cell_anchors[0][0].tolist() if gen.cell_anchors else gen.generate_anchors((32,), (4.0,))[0].tolist()
    assert (y2 - y1) / (x2 - x1) == pytest.approx(4.0, rel=0.05)


def test_local_pretrained_file(tmp_path):
    cfg = Config(**TINY)
    src = build_model(cfg)
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    dst = build_model(Config(**TINY, pretrained=str(path)))
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_model(Config(**TINY, pretrained=str(tmp_path / "nope.pth")))


def test_roi_pool_strides_do_not_depend_on_the_first_batch():
    torch.manual_seed(0)
    three_levels = dict(returned_layers=[2, 3, 4], anchor_sizes=[[16, 24], [32, 48], [64, 96]])
    model = build_model(Config(**TINY, **three_levels, box_score_thresh=0.0)).eval()
    probe = torch.rand(3, 40, 90)
    with torch.inference_mode():
        model([torch.rand(3, 30, 250)])  # short, wide first batch: torchvision would infer wrong strides
        after_wide = model([probe])[0]["scores"]
        fresh = build_model(Config(**TINY, **three_levels, box_score_thresh=0.0))
        fresh.load_state_dict(model.state_dict())
        first = fresh.eval()([probe])[0]["scores"]
    assert model.roi_heads.box_roi_pool.scales == [1 / 8, 1 / 16, 1 / 32]
    assert torch.allclose(after_wide, first)


@pytest.mark.parametrize("levels", [[3], [3, 4], [2, 3]])
def test_training_roi_align_equals_torchvision(levels, monkeypatch):
    """The fast training pooler gives torchvision's outputs and feature gradients, boxes on every
    level, partly or wholly outside the maps, and tiny boxes included."""
    from torchvision.ops import MultiScaleRoIAlign

    from digitdet.models import roi_align
    from digitdet.models.faster_rcnn import _fix_strides
    from digitdet.models.roi_align import TrainingRoIAlign

    calls = []
    monkeypatch.setattr(roi_align, "roi_align_rows", lambda *a: calls.append(1) or _rows(*a))

    torch.manual_seed(0)
    names = [str(i) for i in range(len(levels))]
    shapes = [(64, 160), (64, 160), (64, 160)]
    maps = {n: torch.randn(3, 5, 64 >> lv, 160 >> lv) for n, lv in zip(names, levels)}
    boxes = []
    for _ in shapes:
        corners = torch.rand(12, 4) * torch.tensor([700.0, 300, 700, 300]) - 60  # sqrt(area) up to ~500
        b = torch.cat([torch.min(corners[:, :2], corners[:, 2:]), torch.max(corners[:, :2], corners[:, 2:])], 1)
        boxes.append(torch.cat([b, torch.tensor([[3.0, 4.0, 3.5, 4.2], [150.0, 60.0, 165.0, 70.0]])]))
    results = []
    for cls in (MultiScaleRoIAlign, TrainingRoIAlign):
        pool = _fix_strides(cls(names, 7, 1), levels).train()
        x = {n: t.clone().requires_grad_(True) for n, t in maps.items()}
        out = pool(x, boxes, shapes)
        out.backward(torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape).sin())
        results.append((out.detach(), [x[n].grad for n in names]))
    if len(levels) == 2:
        assert len(set(pool.map_levels(boxes).tolist())) == 2  # both maps are read
    assert calls == [1]  # the fast path ran (and only for TrainingRoIAlign)
    (ref, ref_grads), (new, new_grads) = results
    assert torch.allclose(new, ref, atol=1e-5)
    for a, b in zip(new_grads, ref_grads):
        assert torch.allclose(a, b, atol=1e-4)


def test_inputs_are_resized_to_exactly_min_size_or_max_size():
    # Plain torchvision floors side * (min_size / side) computed in double precision, which gives
    # 63 for a 49-px photo at min_size 64 (and 159 for a 303-px long side at max_size 160); the
    # exported ONNX graph computes it in float32 and gets 64, so the two read different inputs.
    model = build_model(Config(**{**TINY, "min_size": 64, "max_size": 160})).eval()
    shapes = [(49, 120), (98, 150), (187, 300), (60, 303), (80, 616), (30, 308)]
    with torch.inference_mode():
        batch, _ = model.transform([torch.rand(3, h, w) for h, w in shapes])
    assert [tuple(s) for s in batch.image_sizes] == [(64, 156), (64, 97), (64, 102), (31, 160), (20, 160), (15, 160)]
    assert model.transform.min_size == (64,) and model.transform.max_size == 160  # restored


def test_train_scales_resize_each_training_batch_to_one_scale_and_inference_keeps_min_size():
    torch.manual_seed(0)
    model = build_model(Config(**TINY, train_scales=[0.5, 2.0]))
    images = [torch.rand(3, 40, 90), torch.rand(3, 50, 60)]
    target = {"boxes": torch.tensor([[10.0, 5.0, 24.0, 35.0]]), "labels": torch.tensor([2])}
    model.train()
    heights = set()
    for _ in range(12):
        batch, _ = model.transform(images, [dict(target), dict(target)])
        sizes = {min(h, w) for h, w in batch.image_sizes}
        assert len(sizes) == 1, "one scale per batch, not per image"
        heights |= sizes
    assert heights == {24, 96}  # 0.5 x 48 and 2 x 48 (short sides: 40 and 50 px photos alike)
    assert model.transform.min_size == (48,) and model.transform.max_size == 128  # restored
    model.eval()
    with torch.inference_mode():
        batch, _ = model.transform(images)
    assert {min(h, w) for h, w in batch.image_sizes} == {48}
    with pytest.raises(ValueError, match="train_scales"):
        build_model(Config(**TINY, train_scales=[0.0, 1.0]))


def test_size_divisible_pads_the_batch_to_its_multiple():
    # 48 x 108 after the resize (a 40 x 90 photo at min_size 48): padded to 64 x 128 at 32, 48 x 112 at 8
    images = [torch.rand(3, 40, 90)]
    for divisible, padded in ((32, (64, 128)), (8, (48, 112))):
        model = build_model(Config(**TINY, returned_layers=[1, 2], anchor_sizes=[[16], [32]],
                                   size_divisible=divisible)).eval()
        with torch.inference_mode():
            batch, _ = model.transform(images)
            out = model(images)
        assert tuple(batch.tensors.shape[-2:]) == padded and batch.image_sizes == [(48, 108)]
        assert out[0]["boxes"].shape[1] == 4
    with pytest.raises(ValueError, match="size_divisible"):
        build_model(Config(**TINY, size_divisible=0))


@pytest.mark.parametrize("sampling_ratio", [1, 2])  # 1: the training RoI pooling of models/roi_align.py
def test_channels_last_changes_memory_layout_only(sampling_ratio):
    # the same weights in either layout: the same losses, gradients and detections
    torch.manual_seed(0)
    cfg = dict(TINY, returned_layers=[1, 2], anchor_sizes=[[16], [32]], roi_sampling_ratio=sampling_ratio,
               box_score_thresh=0.0)
    nchw = build_model(Config(**cfg, channels_last=False))
    nhwc = build_model(Config(**cfg, channels_last=True))
    nhwc.load_state_dict(nchw.state_dict())
    assert nhwc.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert nchw.backbone.body.conv1.weight.is_contiguous()
    images = [torch.rand(3, 40, 90), torch.rand(3, 50, 60)]
    targets = [{"boxes": torch.tensor([[10.0, 5.0, 24.0, 35.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.tensor([[20.0, 8.0, 36.0, 44.0]]), "labels": torch.tensor([7])}]
    seen = []
    nhwc.backbone.fpn.register_forward_hook(lambda m, a, out: seen.append(out["0"]))
    losses = []
    for model in (nchw, nhwc):
        model.train()
        torch.manual_seed(1)  # the RPN and RoI samplers draw the same proposals
        loss = model(images, [dict(t) for t in targets])
        losses.append({k: v.item() for k, v in loss.items()})
        sum(loss.values()).backward()
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()
    for key in losses[0]:
        assert losses[1][key] == pytest.approx(losses[0][key], rel=1e-4, abs=1e-6), key
    grads = [m.backbone.body.conv1.weight.grad for m in (nchw, nhwc)]
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-5)
    with torch.inference_mode():
        out = [m.eval()(images) for m in (nchw, nhwc)]
    for a, b in zip(*out):
        assert len(a["boxes"]) == len(b["boxes"]) > 0
        assert torch.allclose(a["boxes"], b["boxes"], atol=1e-3) and torch.equal(a["labels"], b["labels"])
        assert torch.allclose(a["scores"], b["scores"], atol=1e-4)


def test_letter_class_is_learnt_but_never_returned():
    # two proposals on the same box: a letter (high score) and the 0 it looks like; a third
    # proposal elsewhere is a 5. The letter removes the 0 and then goes itself.
    from digitdet import labels as L
    model = build_model(Config(**TINY, letter_class=True, box_score_thresh=0.05)).eval()
    heads = model.roi_heads
    assert heads.box_predictor.cls_score.out_features == L.NUM_CLASSES + 1 == L.num_classes(True)
    proposals = [torch.tensor([[10.0, 5.0, 24.0, 35.0], [30.0, 5.0, 44.0, 35.0]])]
    logits = torch.full((2, L.NUM_CLASSES + 1), -10.0)
    logits[0, L.LETTER], logits[0, L.digit_to_category(0)] = 3.0, 2.0
    logits[1, L.digit_to_category(5)] = 5.0
    deltas = torch.zeros(2, 4 * (L.NUM_CLASSES + 1))
    boxes, scores, labels = heads.postprocess_detections(logits, deltas, proposals, [(40, 60)])
    assert labels[0].tolist() == [L.digit_to_category(5)]
    assert boxes[0].tolist() == [[30.0, 5.0, 44.0, 35.0]]
    heads.drop_label = None  # the same outputs without the step: letter and 0 are both there
    _, _, labels = heads.postprocess_detections(logits, deltas, proposals, [(40, 60)])
    assert {L.LETTER, L.digit_to_category(0), L.digit_to_category(5)} <= set(labels[0].tolist())


def test_a_letter_removes_the_thin_digit_found_on_its_side_but_not_a_better_one():
    # "62D" was read 621: the D's straight side found as a 1, a thin box inside the letter's
    # (IoU 0.3, so an IoU rule kept it). A digit mostly outside the letter stays, and so does a
    # digit inside it that scores higher than the letter.
    from digitdet import labels as L
    model = build_model(Config(**TINY, letter_class=True, box_score_thresh=0.05)).eval()
    heads = model.roi_heads
    letter, side, beside = [40.0, 5.0, 60.0, 35.0], [40.0, 6.0, 46.0, 34.0], [55.0, 5.0, 75.0, 35.0]
    proposals = [torch.tensor([letter, side, beside])]
    deltas = torch.zeros(3, 4 * (L.NUM_CLASSES + 1))

    def labels_after(side_logit):
        logits = torch.full((3, L.NUM_CLASSES + 1), -10.0)
        logits[0, L.LETTER], logits[1, L.digit_to_category(1)] = 3.0, side_logit
        logits[2, L.digit_to_category(7)] = 1.0  # a lower score, but only a quarter inside
        return heads.postprocess_detections(logits, deltas, proposals, [(40, 80)])[2][0].tolist()

    assert labels_after(2.0) == [L.digit_to_category(7)]
    assert sorted(labels_after(4.0)) == [L.digit_to_category(1), L.digit_to_category(7)]


def test_box_refine_regresses_each_returned_box_again_by_its_own_class():
    torch.manual_seed(0)
    model = build_model(Config(**TINY, box_score_thresh=0.0)).eval()
    images = [torch.rand(3, 48, 120, generator=torch.Generator().manual_seed(1))]
    heads, pred = model.roi_heads, model.roi_heads.box_predictor.bbox_pred

    def detect(refine_steps):
        heads.refine_steps = refine_steps
        return model(images)[0]

    with torch.inference_mode():
        pred.weight.zero_()
        pred.bias.zero_()
        base = detect(0)
        torch.testing.assert_close(detect(1)["boxes"], base["boxes"])  # a zero regression moves nothing
        label = int(base["labels"][0])
        pred.bias[4 * label] = 1.0  # dx = 1 / 10 (box coder weights 10, 10, 5, 5): 0.1 box widths right
        once, twice = detect(0), detect(1)
    assert torch.equal(twice["labels"], once["labels"]) and torch.equal(twice["scores"], once["scores"])
    own = once["labels"] == label  # that class's boxes move 0.1 of their width again (unless clipped)
    b, m = once["boxes"][own], twice["boxes"][own]
    want = b[:, 0] + 0.1 * (b[:, 2] - b[:, 0])
    unclipped = b[:, 2] + 0.1 * (b[:, 2] - b[:, 0]) < 120 - 1e-3
    assert unclipped.any()
    torch.testing.assert_close(m[unclipped, 0], want[unclipped], rtol=0, atol=1e-3)
    torch.testing.assert_close(twice["boxes"][~own], once["boxes"][~own])  # other classes' regressors are 0
    with pytest.raises(ValueError, match="box_refine"):
        build_model(Config(**TINY, box_refine=-1))


def test_digits_only_weights_grow_into_a_letter_class_model_and_back(tmp_path):
    src = build_model(Config(**TINY, letter_class=False))
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    dst = build_model(Config(**TINY, letter_class=True, pretrained=str(path)))
    a, b = src.roi_heads.box_predictor, dst.roi_heads.box_predictor
    n = a.cls_score.out_features
    assert torch.equal(b.cls_score.weight[:n], a.cls_score.weight)
    assert torch.equal(b.bbox_pred.weight[:4 * n], a.bbox_pred.weight)
    assert torch.equal(b.bbox_pred.bias[:4 * n], a.bbox_pred.bias)
    assert not torch.equal(b.cls_score.weight[n], torch.zeros_like(b.cls_score.weight[n]))
    torch.save(dst.state_dict(), path)  # and back: a letter model initialises a digits-only one
    back = build_model(Config(**TINY, letter_class=False, pretrained=str(path))).roi_heads.box_predictor
    assert torch.equal(back.cls_score.weight, a.cls_score.weight) and torch.equal(back.bbox_pred.bias, a.bbox_pred.bias)
