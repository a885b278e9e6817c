"""Tests for ubiq.models.runtime.preprocess: geometry, normalisation, layouts and dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from ubiq.errors import ModelError
from ubiq.manifest import InputSpec, Preprocess
from ubiq.models.runtime.preprocess import ImageTransform, prepare_input


def _spec(width: int, height: int, layout: str = "NCHW", dtype: str = "float32") -> InputSpec:
    shape = (1, 3, height, width) if layout == "NCHW" else (1, height, width, 3)
    return InputSpec(name="images", shape=shape, dtype=dtype, layout=layout)


def _hwc(tensor: np.ndarray, layout: str) -> np.ndarray:
    return tensor[0].transpose(1, 2, 0) if layout == "NCHW" else tensor[0]


def _random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_letterbox_geometry_matches_ultralytics_for_a_wide_frame():
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    tensor, transform = prepare_input(image, Preprocess(width=320, height=320), _spec(320, 320))
    assert tensor.shape == (1, 3, 320, 320)
    assert transform == ImageTransform(0.5, 0.5, 0.0, 40.0, 640, 480)
    # Borders hold the pad value 114 (normalised by the default std 255), the inside the image.
    np.testing.assert_allclose(tensor[0, :, :40], 114 / 255, rtol=1e-6)
    np.testing.assert_allclose(tensor[0, :, 280:], 114 / 255, rtol=1e-6)
    np.testing.assert_allclose(tensor[0, :, 40:280], 0.0)


def test_letterbox_splits_odd_padding_like_ultralytics():
    # 100x36 -> 64x64: ratio 0.64, 64x23 inside, 41 rows of padding: 20 on top, 21 below.
    image = np.full((36, 100, 3), 200, dtype=np.uint8)
    pre = Preprocess(width=64, height=64, pad_value=0)
    tensor, transform = prepare_input(image, pre, _spec(64, 64, "NHWC", "uint8"))
    assert (transform.pad_x, transform.pad_y) == (0.0, 20.0)
    assert transform.scale_x == pytest.approx(0.64)
    assert transform.scale_y == pytest.approx(23 / 36)
    column = tensor[0, :, 32, 0]
    assert (column[:20] == 0).all() and (column[20:43] == 200).all() and (column[43:] == 0).all()


def test_letterbox_scales_up_small_frames():
    image = np.zeros((120, 160, 3), dtype=np.uint8)
    _, transform = prepare_input(image, Preprocess(width=320, height=320), _spec(320, 320))
    assert (transform.scale_x, transform.scale_y) == (2.0, 2.0)
    assert (transform.pad_x, transform.pad_y) == (0.0, 40.0)


@pytest.mark.parametrize("resize", ["letterbox", "stretch"])
@pytest.mark.parametrize(
    ("source_size", "target_size"),
    [
        ((640, 360), (320, 320)),
        ((360, 640), (320, 320)),
        ((1280, 720), (256, 192)),
        ((50, 200), (96, 64)),
    ],
)
def test_box_round_trip_through_the_real_image(resize, source_size, target_size):
    """A white box drawn in the frame is found in the tensor and mapped back onto itself."""
    source_w, source_h = source_size
    target_w, target_h = target_size
    box = np.array([[0.2 * source_w, 0.3 * source_h, 0.7 * source_w, 0.8 * source_h]])
    box = np.round(box).astype(np.float32)
    image = np.zeros((source_h, source_w, 3), dtype=np.uint8)
    x1, y1, x2, y2 = box[0].astype(int)
    image[y1:y2, x1:x2] = 255
    pre = Preprocess(width=target_w, height=target_h, resize=resize, pad_value=0)
    tensor, transform = prepare_input(image, pre, _spec(target_w, target_h, "NHWC", "uint8"))

    # The exact mapping is invertible.
    forward = transform.to_model(box)
    np.testing.assert_allclose(transform.to_source(forward), box, atol=1e-3)

    # The bright region of the tensor is where the forward mapping says it is ...
    ys, xs = np.nonzero(tensor[0, :, :, 0] >= 128)
    found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=np.float32)
    np.testing.assert_allclose(found, forward, atol=1.0)
    # ... and maps back onto the drawn box within one model pixel.
    tolerance = 1.0 / min(transform.scale_x, transform.scale_y) + 0.5
    np.testing.assert_allclose(transform.to_source(found), box, atol=tolerance)
    if resize == "letterbox":
        assert transform.scale_x == pytest.approx(transform.scale_y, rel=0.02)
    else:
        assert (transform.pad_x, transform.pad_y) == (0.0, 0.0)
        assert transform.scale_x == pytest.approx(target_w / source_w)


def test_to_source_clips_to_the_frame_and_points_are_mapped():
    transform = ImageTransform(0.5, 0.5, 0.0, 40.0, 640, 480)
    boxes = np.array([[-10.0, 30.0, 100.0, 300.0], [10.0, 50.0, 20.0, 60.0]])
    np.testing.assert_allclose(
        transform.to_source(boxes), [[0, 0, 200, 480], [20, 20, 40, 40]], atol=1e-5
    )
    points = np.array([[[10.0, 50.0], [0.0, 20.0]]])
    mapped = transform.points_to_source(points)
    assert mapped.shape == (1, 2, 2) and mapped.dtype == np.float32
    np.testing.assert_allclose(mapped, [[[20, 20], [0, -40]]])
    with pytest.raises(ValueError, match=r"xyxy must have shape \(N, 4\), got \(3,\)"):
        transform.to_source(np.zeros(3))
    with pytest.raises(ValueError, match="points must have shape"):
        transform.points_to_source(np.zeros((2, 3)))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("order", ["rgb", "bgr"])
def test_mean_std_channel_order_and_layout(layout, order):
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[:] = (10, 20, 30)  # B, G, R
    pre = Preprocess(width=8, height=8, mean=(1, 2, 3), std=(2, 4, 8), channel_order=order)
    tensor, _ = prepare_input(image, pre, _spec(8, 8, layout))
    assert tensor.dtype == np.float32 and tensor.flags.c_contiguous
    assert tensor.shape == ((1, 3, 8, 8) if layout == "NCHW" else (1, 8, 8, 3))
    pixel = _hwc(tensor, layout)[4, 4]
    ordered = (30, 20, 10) if order == "rgb" else (10, 20, 30)
    expected = [(ordered[c] - (1, 2, 3)[c]) / (2, 4, 8)[c] for c in range(3)]
    np.testing.assert_allclose(pixel, expected, rtol=1e-6)
    assert np.all(_hwc(tensor, layout) == pixel)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_float_tensor_matches_a_naive_reference(layout, dtype):
    image = _random_image(48, 64)
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    pre = Preprocess(width=64, height=48, resize="stretch", mean=mean, std=std)
    tensor, transform = prepare_input(image, pre, _spec(64, 48, layout, dtype))
    assert tensor.dtype == np.dtype(dtype) and tensor.flags.c_contiguous
    reference = (image[:, :, ::-1].astype(np.float64) - mean) / std
    tolerance = 1e-5 if dtype == "float32" else 5e-3
    np.testing.assert_allclose(_hwc(tensor, layout), reference, atol=tolerance)
    assert transform == ImageTransform(1.0, 1.0, 0.0, 0.0, 64, 48)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_uint8_without_quantization_is_raw_pixels_in_channel_order(layout):
    image = _random_image(32, 32)
    pre = Preprocess(width=32, height=32)
    tensor, _ = prepare_input(image, pre, _spec(32, 32, layout, "uint8"))
    assert tensor.dtype == np.uint8 and tensor.flags.c_contiguous
    np.testing.assert_array_equal(_hwc(tensor, layout), image[:, :, ::-1])
    bgr, _ = prepare_input(
        image, Preprocess(32, 32, channel_order="bgr"), _spec(32, 32, layout, "uint8")
    )
    np.testing.assert_array_equal(_hwc(bgr, layout), image)
    assert not np.shares_memory(bgr, image)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_int8_without_quantization_is_shifted_pixels(layout):
    image = _random_image(16, 16)
    tensor, _ = prepare_input(image, Preprocess(16, 16), _spec(16, 16, layout, "int8"))
    assert tensor.dtype == np.int8
    expected = image[:, :, ::-1].astype(np.int16) - 128
    np.testing.assert_array_equal(_hwc(tensor, layout).astype(np.int16), expected)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize(
    ("dtype", "quantization"), [("uint8", (1 / 128, 128)), ("int8", (0.0078125, -1))]
)
def test_quantized_inputs(layout, dtype, quantization):
    image = _random_image(16, 16, seed=3)
    pre = Preprocess(16, 16, mean=(127.5,) * 3, std=(127.5,) * 3, quantization=quantization)
    tensor, _ = prepare_input(image, pre, _spec(16, 16, layout, dtype))
    assert tensor.dtype == np.dtype(dtype) and tensor.flags.c_contiguous
    scale, zero_point = quantization
    value = (image[:, :, ::-1].astype(np.float64) - 127.5) / 127.5
    info = np.iinfo(dtype)
    expected = np.clip(np.round(value / scale + zero_point), info.min, info.max)
    np.testing.assert_array_equal(_hwc(tensor, layout).astype(np.float64), expected)
    # Spot check one value by hand: pixel 255 -> 1.0 -> 1 / scale + zero point (clipped).
    white = np.full((16, 16, 3), 255, dtype=np.uint8)
    top, _ = prepare_input(white, pre, _spec(16, 16, layout, dtype))
    assert int(top.flat[0]) == min(info.max, round(1 / scale + zero_point))


def test_dynamic_input_shape_is_accepted():
    spec = InputSpec(shape=(1, 3, -1, -1))
    tensor, _ = prepare_input(_random_image(10, 20), Preprocess(32, 16), spec)
    assert tensor.shape == (1, 3, 16, 32)


def test_bad_inputs_name_the_value():
    spec = _spec(32, 32)
    pre = Preprocess(32, 32)
    with pytest.raises(
        ValueError, match=r"image_bgr must be an \(H, W, 3\) uint8 array, got \(4, 4\)"
    ):
        prepare_input(np.zeros((4, 4), np.uint8), pre, spec)
    with pytest.raises(ValueError, match="float32"):
        prepare_input(np.zeros((4, 4, 3), np.float32), pre, spec)
    with pytest.raises(ValueError, match="numpy array"):
        prepare_input([[0, 0, 0]], pre, spec)
    with pytest.raises(ModelError, match=r"preprocess size 32x32 does not match input 'images'"):
        prepare_input(np.zeros((4, 4, 3), np.uint8), pre, _spec(64, 64))
    with pytest.raises(ModelError, match="3 channels"):
        prepare_input(np.zeros((4, 4, 3), np.uint8), pre, InputSpec(shape=(1, 1, 32, 32)))
