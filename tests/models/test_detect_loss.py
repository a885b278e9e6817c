"""Target assignment and loss of the anchor-free detector on hand-checked cases."""

import pytest

torch = pytest.importorskip("torch")

from ubiq.models.toolchain.heads.detect import make_points  # noqa: E402
from ubiq.models.toolchain.train.detect_loss import DetectionLoss, box_iou_pairs  # noqa: E402


def _grid(size=128):
    shapes = [(size // s, size // s) for s in (8, 16, 32)]
    return make_points(shapes, (8, 16, 32))


def test_iou_and_giou_of_known_boxes():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 0.0, 30.0, 10.0]])
    iou, giou = box_iou_pairs(a, b)
    assert iou[0].item() == pytest.approx(50 / 150, abs=1e-5)
    assert iou[1].item() == pytest.approx(0.0, abs=1e-6)
    assert giou[1].item() == pytest.approx(0 - (300 - 200) / 300, abs=1e-5)


def test_small_box_goes_to_stride_8_points_near_its_centre():
    points, strides = _grid()
    loss = DetectionLoss(num_classes=2)
    box = torch.tensor([[40.0, 40.0, 72.0, 72.0]])  # 32 px: largest distance <= 48 -> stride 8
    index = loss.assign(points, strides, box)
    chosen = torch.nonzero(index == 0).squeeze(1)
    assert chosen.numel() > 0
    assert set(strides[chosen].tolist()) == {8.0}
    centre = torch.tensor([56.0, 56.0])
    assert ((points[chosen] - centre).abs() < 2.5 * 8).all()
    inside = (points[chosen] > 40).all(1) & (points[chosen] < 72).all(1)
    assert inside.all()


def test_large_box_goes_to_a_coarse_level_and_overlaps_take_the_smallest_box():
    points, strides = _grid(256)
    loss = DetectionLoss(num_classes=2)
    big = [8.0, 8.0, 248.0, 248.0]
    small = [112.0, 112.0, 144.0, 144.0]
    index = loss.assign(points, strides, torch.tensor([big, small]))
    assert set(strides[index == 0].tolist()) <= {32.0}
    assert (index == 0).any() and (index == 1).any()
    # A stride-8 point at the small box's centre belongs to the small box.
    centre = ((points - torch.tensor([124.0, 124.0])).abs().sum(1) + (strides != 8) * 1e9).argmin()
    assert index[centre] == 1


def test_no_ground_truth_means_all_background_and_a_finite_loss():
    points, strides = _grid()
    loss = DetectionLoss(num_classes=2)
    assert (loss.assign(points, strides, torch.zeros((0, 4))) == -1).all()
    logits = torch.zeros(1, points.shape[0], 2, requires_grad=True)
    distances = torch.ones(1, points.shape[0], 4, requires_grad=True)
    value, parts = loss(
        (logits, distances, points, strides), [(torch.zeros((0, 4)), torch.zeros(0))]
    )
    assert torch.isfinite(value)
    value.backward()
    assert parts["box"] == 0.0


def test_a_perfect_prediction_has_lower_loss_than_a_wrong_one():
    points, strides = _grid()
    loss = DetectionLoss(num_classes=2)
    box = torch.tensor([[40.0, 40.0, 72.0, 72.0]])
    target = [(box, torch.tensor([1]))]
    index = loss.assign(points, strides, box)
    positive = index == 0
    exact = torch.stack(
        (points[:, 0] - 40, points[:, 1] - 40, 72 - points[:, 0], 72 - points[:, 1]), 1
    ).clamp(min=0)[None]
    good_logits = torch.full((1, points.shape[0], 2), -8.0)
    good_logits[0, positive, 1] = 8.0
    wrong_logits = torch.full((1, points.shape[0], 2), -8.0)
    wrong_logits[0, positive, 0] = 8.0
    good, good_parts = loss((good_logits, exact, points, strides), target)
    bad, _ = loss((wrong_logits, exact * 0.5, points, strides), target)
    assert good_parts["box"] < 1e-4
    assert good < bad
