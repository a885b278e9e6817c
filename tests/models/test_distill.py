"""Knowledge distillation: the losses, a distilled training run and its resume, bad teachers."""

import copy

import numpy as np
import pytest
from support import run_ubiq

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from ubiq.errors import ConfigError  # noqa: E402
from ubiq.models.toolchain.compress.distill import (  # noqa: E402
    DistillOptions,
    detection_kd_loss,
    load_teacher,
    logit_kd_loss,
)
from ubiq.models.toolchain.nets import ModelConfig, build_model  # noqa: E402
from ubiq.models.toolchain.train import trainer  # noqa: E402
from ubiq.models.toolchain.train.trainer import TrainingInterrupted, TrainOptions, train  # noqa: E402

DIGITS = tuple(str(digit) for digit in range(10))


def _digits_subset(out, names=DIGITS, per_class=24):
    """A small 32 px image folder of real digits (``per_class`` images of each class)."""
    from sklearn.datasets import load_digits

    from ubiq.models.datasets.classify import write_image_folder

    digits = load_digits()
    keep = np.concatenate([np.flatnonzero(digits.target == k)[:per_class] for k in range(10)])
    images = np.clip(digits.images[keep] * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    return write_image_folder(
        out, images, digits.target[keep], names, val_fraction=0.25, seed=0, size=32
    )


def _options(data, out, **changes):
    base = dict(
        task="classify",
        data=str(data),
        out=str(out),
        backbone="squeezenet1_1",
        width=0.25,
        epochs=1,
        imgsz=32,
        batch=16,
        threads=1,
        progress=False,
    )
    return TrainOptions(**{**base, **changes})


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return _digits_subset(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def teacher_checkpoint(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    return train(_options(digits, out, epochs=2, seed=7)).best


def test_logit_kd_loss_is_zero_for_equal_logits_and_matches_hinton():
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(6, 10, generator=generator)
    assert float(logit_kd_loss(teacher.clone(), teacher, 4.0)) == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(6, 10, generator=generator)
    expected_probs = torch.softmax(teacher / 3.0, 1)
    expected = (
        (expected_probs * (expected_probs.log() - torch.log_softmax(student / 3.0, 1))).sum(1)
    ).mean() * 9.0
    got = logit_kd_loss(student, teacher, temperature=3.0)
    assert float(got) > 0.01
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_logit_kd_loss_trains_the_student_only():
    student = torch.randn(4, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    logit_kd_loss(student, teacher).backward()
    assert teacher.grad is None
    assert student.grad is not None and float(student.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match=r"\(4, 5\) and \(4, 6\)"):
        logit_kd_loss(student, torch.zeros(4, 6))


def _detector():
    config = ModelConfig(
        task="detect", backbone="mobilenet_v2", labels=("a", "b", "c"), width=0.25, imgsz=(64, 64)
    )
    torch.manual_seed(0)
    return build_model(config).eval()


def test_detection_kd_loss_is_zero_for_a_copy_and_grows_with_perturbation():
    teacher = _detector()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        teacher_out = teacher(images)
    same = detection_kd_loss(teacher_out, teacher_out, score_threshold=0.0)
    assert float(same) == pytest.approx(0.0, abs=1e-5)

    student = copy.deepcopy(teacher).train()
    losses = []
    for scale in (0.05, 0.5):
        perturbed = copy.deepcopy(student)
        with torch.no_grad():
            for parameter in perturbed.head.parameters():
                parameter.add_(torch.randn_like(parameter) * scale)
        out = perturbed(images)
        losses.append(detection_kd_loss(out, teacher_out, temperature=2.0, score_threshold=0.0))
    assert 0.0 < float(losses[0].detach()) < float(losses[1].detach())
    losses[1].backward()
    gradients = [p.grad for p in perturbed.head.parameters() if p.grad is not None]
    assert gradients and sum(float(g.abs().sum()) for g in gradients) > 0


def test_detection_kd_loss_box_term_and_shape_check():
    points = torch.tensor([[4.0, 4.0], [12.0, 4.0]])
    strides = torch.tensor([8.0, 8.0])
    logits = torch.tensor([[[4.0, -6.0], [-6.0, -6.0]]])  # point 0 confident, 1 background
    teacher_distances = torch.full((1, 2, 4), 4.0)
    student_distances = teacher_distances.clone()
    student_distances[0, 1] = 1.0  # differs only where the teacher sees nothing
    teacher_out = (logits, teacher_distances, points, strides)
    quiet = detection_kd_loss((logits, student_distances, points, strides), teacher_out)
    assert float(quiet) == pytest.approx(0.0, abs=1e-6)
    student_distances[0, 0] = 1.0  # now off where the teacher is confident
    loud = detection_kd_loss((logits, student_distances, points, strides), teacher_out)
    assert float(loud) > 0.5
    with pytest.raises(ValueError, match="same image size"):
        detection_kd_loss((logits[:, :1], student_distances, points, strides), teacher_out)


def test_distill_options_and_train_options_reject_bad_values(digits, tmp_path):
    with pytest.raises(ConfigError, match="kd_temperature"):
        DistillOptions(temperature=0.0)
    with pytest.raises(ConfigError, match="kd_weight"):
        _options(digits, tmp_path, kd_weight=-1.0).check()
    with pytest.raises(ConfigError, match="teacher .* does not exist"):
        _options(digits, tmp_path, teacher=str(tmp_path / "missing.pt")).check()


def test_load_teacher_names_each_mismatch(teacher_checkpoint):
    student = ModelConfig(task="classify", backbone="mobilenet_v2", labels=DIGITS, imgsz=(32, 32))
    teacher = load_teacher(teacher_checkpoint, student)
    assert not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ConfigError, match="imgsz 32x32; the student trains at 64x64"):
        load_teacher(
            teacher_checkpoint,
            ModelConfig(task="classify", backbone="x", labels=DIGITS, imgsz=(64, 64)),
        )
    with pytest.raises(ConfigError, match="is a classify model; the student is detect"):
        load_teacher(
            teacher_checkpoint,
            ModelConfig(task="detect", backbone="x", labels=DIGITS, imgsz=(32, 32)),
        )
    with pytest.raises(ConfigError, match="segment"):
        load_teacher(
            teacher_checkpoint,
            ModelConfig(task="segment", backbone="x", labels=DIGITS, imgsz=(32, 32)),
        )


def test_distilled_run_logs_kd_and_resumes_with_its_teacher(
    digits, teacher_checkpoint, tmp_path, monkeypatch
):
    kd = dict(epochs=2, teacher=str(teacher_checkpoint), kd_weight=2.0, kd_temperature=3.0)
    straight = train(_options(digits, tmp_path / "straight", **kd))
    assert [row["epoch"] for row in straight.history] == [1, 2]
    assert all(row["train_kd"] > 0 for row in straight.history)
    header = (straight.out / "results.csv").read_text().splitlines()[0].split(",")
    assert "train_kd" in header and "train_ce" in header
    stored = torch.load(straight.last, weights_only=False)["options"]
    assert stored["teacher"] == str(teacher_checkpoint)
    assert (stored["kd_weight"], stored["kd_temperature"]) == (2.0, 3.0)

    plain = train(_options(digits, tmp_path / "plain", epochs=2))
    assert all("train_kd" not in row for row in plain.history)

    # Stop in the second epoch, then resume: the resumed run reloads the teacher from the
    # stored path and ends on the same weights as the straight run (without the teacher
    # it would end on the plain run's).
    original_epoch = trainer._Run.epoch

    def stop_in_second_epoch(run, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        original_epoch(run, epoch)

    monkeypatch.setattr(trainer._Run, "epoch", stop_in_second_epoch)
    with pytest.raises(TrainingInterrupted):
        train(_options(digits, tmp_path / "stopped", **kd))
    monkeypatch.setattr(trainer._Run, "epoch", original_epoch)
    resumed = train(_options(digits, tmp_path / "stopped", progress=False), resume=True)
    assert len(resumed.history) == 2 and resumed.history[1]["train_kd"] > 0
    a = torch.load(straight.last, weights_only=False)["model"]
    b = torch.load(resumed.last, weights_only=False)["model"]
    c = torch.load(plain.last, weights_only=False)["model"]
    for name, tensor in a.items():
        assert torch.allclose(tensor.float(), b[name].float(), atol=1e-5), name
    assert any(not torch.allclose(t.float(), c[n].float(), atol=1e-5) for n, t in a.items())


def test_cli_rejects_a_teacher_of_other_classes_in_one_line(teacher_checkpoint, tmp_path):
    letters = tuple("abcdefghij")
    other = _digits_subset(tmp_path / "letters", names=letters, per_class=4)
    result = run_ubiq(
        "train",
        "--task",
        "classify",
        "--data",
        str(other),
        "--out",
        str(tmp_path / "run"),
        "--backbone",
        "squeezenet1_1",
        "--width",
        "0.25",
        "--imgsz",
        "32",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--quiet",
        "--teacher",
        str(teacher_checkpoint),
        timeout=180,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--teacher" in lines[0] and "classes [0, 1, 2" in lines[0]
    assert "[a, b, c" in lines[0] and "same order" in lines[0]
    assert not (tmp_path / "run" / "weights" / "last.pt").exists()
