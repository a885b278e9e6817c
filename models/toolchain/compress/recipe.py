"""Compression recipes: the steps of ``ubiq compress`` and their options, from YAML or flags.

```yaml
steps:
  - prune: {target_macs_ratio: 0.5, finetune_epochs: 8, lr: 0.003, distill: true}
  - distill: {teacher: runs/big/weights/best.pt, epochs: 6}
  - quantize: {method: int8}
data:
  train: data/photos/data.yaml     # fine-tuning and distillation
  calib: data/photos/data.yaml     # calibration images (its train split)
  val: data/heldout/data.yaml      # the metric of every artifact
max_drop: 1.0                      # points of mAP50 (or top-1) a step may lose
threads: 2
```

Unknown keys are errors that name the key and where it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ubiq.errors import ConfigError

__all__ = ["CompressRecipe", "load_recipe", "recipe_from_flags"]

STEP_NAMES = ("prune", "distill", "quantize")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PruneStep(_Strict):
    target_macs_ratio: float = Field(0.5, gt=0.0, lt=1.0, description="MACs kept (0..1)")
    finetune_epochs: int = Field(8, ge=0, description="fine-tuning epochs after pruning")
    lr: float = Field(3e-3, gt=0.0, description="fine-tuning learning rate")
    distill: bool = Field(True, description="fine-tune with the unpruned model as teacher")
    round_to: int = Field(8, ge=1, description="channel counts rounded to a multiple")


class DistillStep(_Strict):
    teacher: str = Field(description="teacher checkpoint (.pt) with the same classes")
    epochs: int = Field(6, ge=1, description="training epochs with the teacher")
    lr: float = Field(1e-3, gt=0.0, description="learning rate")
    weight: float = Field(1.0, ge=0.0, description="weight of the distillation loss")
    temperature: float = Field(4.0, gt=0.0, description="softmax temperature")


class QuantizeStep(_Strict):
    method: Literal["int8", "dynamic", "fp16"] = Field(
        "int8", description="int8: static, format chosen by measuring; dynamic; fp16"
    )
    calibration_images: int = Field(64, ge=1, description="calibration images used")


class DataPaths(_Strict):
    train: str | None = Field(None, description="training data for prune and distill")
    calib: str | None = Field(None, description="calibration images for int8")
    val: str | None = Field(None, description="validation data for the metric")


class CompressRecipe(_Strict):
    """Steps in order, the data they use and the gates."""

    steps: list[dict[str, Any]]
    data: DataPaths = DataPaths()
    max_drop: float = Field(1.0, ge=0.0, description="largest metric drop, in points")
    threads: int = Field(2, ge=1, description="inference threads for every measurement")

    @model_validator(mode="after")
    def _check_steps(self) -> CompressRecipe:
        if not self.steps:
            raise ValueError("steps must name at least one of prune, distill, quantize")
        parsed = []
        for index, step in enumerate(self.steps):
            if not isinstance(step, dict) or len(step) != 1:
                raise ValueError(f"steps[{index}] must be one mapping such as {{prune: {{}}}}")
            ((name, options),) = step.items()
            if name not in STEP_NAMES:
                raise ValueError(
                    f"steps[{index}]: unknown step {name!r} (known: {', '.join(STEP_NAMES)})"
                )
            kind = {"prune": PruneStep, "distill": DistillStep, "quantize": QuantizeStep}[name]
            try:
                parsed.append({name: kind(**(options or {}))})
            except ValidationError as error:
                raise ValueError(f"steps[{index}].{name}: {_first_error(error)}") from None
        self.steps = parsed
        return self

    def step_list(self) -> list[tuple[str, Any]]:
        """``[(name, options model), ...]`` in order."""
        return [next(iter(step.items())) for step in self.steps]


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def load_recipe(path: str | Path) -> CompressRecipe:
    """Reads and validates a recipe YAML file.

    Raises:
        ConfigError: If the file is missing, not YAML, or has an unknown step or key.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"recipe {path}: {error.strerror or error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"recipe {path} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must hold a mapping with 'steps'")
    return _validated(data, f"recipe {path}")


def _validated(data: dict[str, Any], where: str) -> CompressRecipe:
    try:
        return CompressRecipe(**data)
    except ValidationError as error:
        raise ConfigError(f"{where}: {_first_error(error)}") from None


def recipe_from_flags(
    *,
    prune: float | None,
    distill: str | None,
    quantize: str | None,
    train: str | None,
    calib: str | None,
    val: str | None,
    max_drop: float,
    threads: int,
) -> CompressRecipe:
    """The recipe that ``--prune R --distill TEACHER --quantize M`` describe (in that order)."""
    steps: list[dict[str, Any]] = []
    if prune is not None:
        steps.append({"prune": {"target_macs_ratio": prune}})
    if distill is not None:
        steps.append({"distill": {"teacher": distill}})
    if quantize is not None:
        steps.append({"quantize": {"method": quantize}})
    if not steps:
        raise ConfigError("nothing to do: give a recipe, or prune, distill or quantize")
    data = {"steps": steps, "data": {"train": train, "calib": calib, "val": val}}
    data.update({"max_drop": max_drop, "threads": threads})
    if max_drop < 0:
        raise ConfigError(f"max_drop must be >= 0 points, got {max_drop}")
    return _validated(data, "options")
