"""Pruning: structured channel pruning (DepGraph) that makes a model faster, and unstructured
magnitude pruning that only makes it sparse.

Structured pruning removes whole channels. Torch-Pruning's dependency graph (DepGraph, Fang
et al. 2023) finds every layer coupled to a channel (the next convolution's input, the batch
norm, both sides of a residual add, the neck's fused levels) and removes it everywhere, so
the result is an ordinary smaller model that exports to ONNX and runs faster on a dense
runtime. :func:`prune_structured` searches the per-group channel ratio until the
multiply-accumulates (MACs, see :mod:`ubiq.models.toolchain.backbones.profile`) fall to a
target share of the original, rounding channel counts to a multiple of ``round_to`` (8 suits
the SIMD kernels of onnxruntime and LiteRT).

What is never pruned: the input of the first convolution (the image), and the output layers
whose channel counts are the model's contract: the detector's per-level predictors (class
logits and box distances), the classifier's last linear layer, the segmenter's classifiers.

```python
result = prune_structured(model, (1, 3, 256, 256), target_macs_ratio=0.5)
result.macs_ratio, result.model          # about 0.5, a smaller Detector
```

:func:`~ubiq.models.toolchain.compress.prune_checkpoint.prune_checkpoint` prunes a ``ubiq train``
checkpoint and fine-tunes it (``ubiq compress --prune``).

Unstructured pruning (:func:`prune_unstructured`) zeroes the smallest weights. The tensors
keep their shapes, so onnxruntime and LiteRT do the same work: it saves no time (see
:data:`DENSE_RUNTIME_NOTE`).
"""

from __future__ import annotations

import copy
import functools
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ubiq.errors import ConfigError, ModelError
from ubiq.models.toolchain.backbones.profile import count_macs, count_parameters

__all__ = [
    "DENSE_RUNTIME_NOTE",
    "IMPORTANCES",
    "LayerChange",
    "PruneResult",
    "UnstructuredReport",
    "count_macs_params",
    "default_ignored_layers",
    "prune_structured",
    "prune_unstructured",
]

log = logging.getLogger(__name__)

IMPORTANCES = ("magnitude", "l1", "bn_scale", "lamp", "fpgm", "random")
DENSE_RUNTIME_NOTE = (
    "unstructured pruning only sets weights to zero: every tensor keeps its shape, so a dense "
    "runtime (onnxruntime, LiteRT) does the same multiply-accumulates and runs no faster; only "
    "a compressed copy of the file gets smaller. Use structured pruning for speed."
)
_PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_MAX_CHANNEL_RATIO = 0.9
_SEARCH_STEPS = 12
_SEARCH_TOLERANCE = 0.02  # stop once the MACs are within 2% below the target


@dataclass(frozen=True)
class LayerChange:
    """One convolution or linear layer whose channels changed.

    Attributes:
        name: Dotted module name, such as ``backbone.stages.0.0.block.0.0``.
        kind: Module class name (``Conv2d``, ``Linear``).
        in_before: Input channels (features) before pruning.
        out_before: Output channels (features) before pruning.
        in_after: Input channels after pruning.
        out_after: Output channels after pruning.
    """

    name: str
    kind: str
    in_before: int
    out_before: int
    in_after: int
    out_after: int


@dataclass(frozen=True)
class PruneResult:
    """A structurally pruned model and what it cost.

    Attributes:
        model: The pruned model (a new module; the input model is not changed), in the
            training mode of the input.
        macs_before: MACs of one forward pass of the input model.
        macs_after: MACs of the pruned model.
        params_before: Parameters of the input model.
        params_after: Parameters of the pruned model.
        channel_ratio: The per-group share of channels removed that the search chose.
        input_shape: The input shape the MACs were counted at.
        layers: Every convolution and linear layer whose channels changed.
    """

    model: nn.Module
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    channel_ratio: float
    input_shape: tuple[int, ...]
    layers: tuple[LayerChange, ...] = ()

    @property
    def macs_ratio(self) -> float:
        """MACs after over MACs before (the achieved ratio)."""
        return self.macs_after / max(1, self.macs_before)

    @property
    def params_ratio(self) -> float:
        """Parameters after over parameters before."""
        return self.params_after / max(1, self.params_before)

    def summary(self, limit: int = 12) -> str:
        """A few lines for a log or a terminal: totals, then the first ``limit`` layers."""
        lines = [
            f"MACs {self.macs_before / 1e6:.1f}M -> {self.macs_after / 1e6:.1f}M "
            f"({self.macs_ratio:.2f}x), params {self.params_before / 1e6:.3f}M -> "
            f"{self.params_after / 1e6:.3f}M ({self.params_ratio:.2f}x), "
            f"{self.channel_ratio:.3f} of each group's channels removed, "
            f"{len(self.layers)} layers changed"
        ]
        for change in self.layers[:limit]:
            lines.append(
                f"  {change.name}: {change.in_before}->{change.in_after} in, "
                f"{change.out_before}->{change.out_after} out"
            )
        if len(self.layers) > limit:
            lines.append(f"  ... {len(self.layers) - limit} more")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form without the model."""
        return {
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "macs_ratio": self.macs_ratio,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "params_ratio": self.params_ratio,
            "channel_ratio": self.channel_ratio,
            "input_shape": list(self.input_shape),
            "layers": [asdict(change) for change in self.layers],
        }


@dataclass(frozen=True)
class UnstructuredReport:
    """What :func:`prune_unstructured` zeroed.

    Attributes:
        amount: The requested share of weights to zero.
        zero_weights: Weights that are zero after pruning (over the pruned tensors).
        total_weights: Weights in the pruned tensors.
        layers: ``(name, sparsity)`` of every pruned tensor.
        note: Why this does not make a dense runtime faster.
    """

    amount: float
    zero_weights: int
    total_weights: int
    layers: tuple[tuple[str, float], ...]
    note: str = DENSE_RUNTIME_NOTE

    @property
    def sparsity(self) -> float:
        """Share of zero weights over all pruned tensors."""
        return self.zero_weights / max(1, self.total_weights)

    def summary(self) -> str:
        return (
            f"{self.sparsity:.1%} of {self.total_weights} conv/linear weights are zero "
            f"(asked {self.amount:.1%}); note: {self.note}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "amount": self.amount,
            "sparsity": self.sparsity,
            "zero_weights": self.zero_weights,
            "total_weights": self.total_weights,
            "layers": {name: sparsity for name, sparsity in self.layers},
            "note": self.note,
        }


def count_macs_params(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, int]:
    """Returns ``(MACs, parameters)`` of ``model`` for one input of ``input_shape``.

    Args:
        model: The model; its forward must accept one tensor.
        input_shape: Input shape with the batch, such as ``(1, 3, 256, 256)``.

    Raises:
        ValueError: If ``input_shape`` has a non-positive size.
    """
    return count_macs(model, tuple(int(size) for size in input_shape)), count_parameters(model)


def default_ignored_layers(model: nn.Module) -> list[nn.Module]:
    """The layers whose output channels :func:`prune_structured` keeps by default.

    The first convolution (the stem, whose input is the image) and the output layers:
    ``Detector``: ``head.predictors``; ``Classifier`` with a ``ClassifyHead``:
    ``head.linear``; ``Segmenter``: ``head.low_classifier`` and ``head.high_classifier``;
    any other model: its last convolution or linear layer.

    Args:
        model: The model.

    Returns:
        The modules, first convolution first.
    """
    from ubiq.models.toolchain.heads.classify import ClassifyHead
    from ubiq.models.toolchain.nets import Classifier, Detector, Segmenter

    layers = [module for module in model.modules() if isinstance(module, _PRUNABLE)]
    if not layers:
        return []
    ignored = [layers[0]]
    if isinstance(model, Detector):
        ignored += list(model.head.predictors)
    elif isinstance(model, Classifier) and isinstance(model.head, ClassifyHead):
        ignored.append(model.head.linear)
    elif isinstance(model, Segmenter):
        ignored += [model.head.low_classifier, model.head.high_classifier]
    else:
        ignored.append(layers[-1])
    return ignored


def _check_ratio(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise ConfigError(f"{name} must be between 0 and 1 (exclusive), got {value!r}")
    return float(value)


def _importance(name: str):
    import torch_pruning as tp

    importances = {
        "magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "bn_scale": tp.importance.BNScaleImportance,
        "lamp": tp.importance.LAMPImportance,
        "fpgm": tp.importance.FPGMImportance,
        "random": tp.importance.RandomImportance,
    }
    if name not in importances:
        raise ConfigError(f"importance must be one of {', '.join(IMPORTANCES)}, got {name!r}")
    return importances[name]()


def _layer_names(model: nn.Module, layers: Iterable[nn.Module | str]) -> list[str]:
    """Dotted names of ``layers`` (modules of ``model`` or names), so copies can find them."""
    names_by_id = {id(module): name for name, module in model.named_modules()}
    known = set(names_by_id.values())
    names = []
    for layer in layers:
        name = layer if isinstance(layer, str) else names_by_id.get(id(layer))
        if name is None or name not in known:
            raise ConfigError(f"ignored layer {layer!r} is not a module of the model")
        names.append(name)
    return names


def _channels(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.in_channels, module.out_channels


def _layer_changes(before: nn.Module, after: nn.Module) -> tuple[LayerChange, ...]:
    pruned = dict(after.named_modules())
    changes = []
    for name, module in before.named_modules():
        if not isinstance(module, _PRUNABLE) or name not in pruned:
            continue
        old, new = _channels(module), _channels(pruned[name])
        if old != new:
            changes.append(LayerChange(name, type(module).__name__, *old, *new))
    return tuple(changes)


def _output_shapes(output: Any) -> list[tuple[int, ...]]:
    if isinstance(output, torch.Tensor):
        return [tuple(output.shape)]
    if isinstance(output, (list, tuple)):
        return [shape for item in output for shape in _output_shapes(item)]
    return []


def _refresh_channel_attributes(model: nn.Module, example: torch.Tensor) -> None:
    """Updates ``out_channels`` (and ``LiteFPN.channels``) that ubiq modules keep as plain
    attributes, so ``model.backbone.out_channels`` tells the pruned truth."""
    from ubiq.models.toolchain.heads.neck import LiteFPN

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        current = getattr(module, "out_channels", None)
        if isinstance(current, tuple) and isinstance(output, (list, tuple)):
            module.out_channels = tuple(int(tensor.shape[1]) for tensor in output)
        elif isinstance(current, int) and isinstance(output, torch.Tensor):
            module.out_channels = int(output.shape[1])
        if isinstance(module, LiteFPN):
            module.channels = int(output[0].shape[1])

    handles = [
        module.register_forward_hook(hook)
        for module in model.modules()
        if (type(module).__module__.startswith("ubiq.") and hasattr(module, "out_channels"))
        or isinstance(module, LiteFPN)
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()


@functools.cache
def _pruner_class():
    """Torch-Pruning's ``BasePruner`` with kept channel counts rounded to the nearest multiple.

    Torch-Pruning rounds the channels a group keeps down to a multiple of ``round_to``: removing
    one channel of a 16-channel bottleneck keeps 8, and a 32-channel one at ratio 0.28 keeps 16,
    so the thin layers that carry the residual sums lose half their width at small ratios.
    Rounding to the nearest multiple (never below ``round_to``, never above the current count)
    keeps the widths close to ``1 - ratio`` of the original.
    """
    import torch_pruning as tp

    class NearestRoundingPruner(tp.pruner.BasePruner):
        def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
            if current_channels <= round_to:
                return 0
            kept = (current_channels - n_pruned) / round_to
            kept = max(1, math.floor(kept + 0.5)) * round_to
            return max(current_channels - min(kept, current_channels), 0)

    return NearestRoundingPruner


def _prune_copy(
    model: nn.Module,
    example: torch.Tensor,
    channel_ratio: float,
    ignored_names: Sequence[str],
    round_to: int,
    importance: str,
    iterative_steps: int,
    global_pruning: bool,
) -> nn.Module:
    candidate = copy.deepcopy(model)
    modules = dict(candidate.named_modules())
    pruner = _pruner_class()(
        candidate,
        example,
        importance=_importance(importance),
        pruning_ratio=channel_ratio,
        iterative_steps=iterative_steps,
        ignored_layers=[modules[name] for name in ignored_names],
        round_to=round_to,
        global_pruning=global_pruning,
    )
    for _ in range(iterative_steps):
        pruner.step()
    return candidate


def prune_structured(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    target_macs_ratio: float = 0.5,
    ignored_layers: Iterable[nn.Module | str] | None = None,
    round_to: int = 8,
    importance: str = "magnitude",
    iterative_steps: int = 5,
    global_pruning: bool = False,
) -> PruneResult:
    """Removes channels until the MACs are at most ``target_macs_ratio`` of the original.

    A bisection over the share of channels removed from every prunable group (the same share
    in each, ranked by ``importance`` within the group; Torch-Pruning's ``pruning_ratio``)
    finds the smallest share whose MACs meet the target; each try prunes a fresh copy in
    ``iterative_steps`` steps.

    Args:
        model: A ``Detector``, ``Classifier`` or ``Segmenter`` of
            :mod:`ubiq.models.toolchain.nets` (or any module whose forward takes one tensor).
            It is not changed.
        input_shape: Input shape with the batch, such as ``(1, 3, 256, 256)``; used to trace
            the model and count MACs.
        target_macs_ratio: MACs kept, in (0, 1).
        ignored_layers: More layers (modules of ``model`` or dotted names) whose output
            channels are kept, besides :func:`default_ignored_layers`.
        round_to: Channel counts of pruned layers are multiples of this.
        importance: Channel ranking: one of :data:`IMPORTANCES` (``magnitude``: L2 norm of
            the group's weights).
        iterative_steps: Steps in which the channels are removed.
        global_pruning: Rank channels across groups instead of removing the same share in
            every group (uneven widths; magnitude scales differ between layers).

    Returns:
        The pruned copy, MACs and parameters before and after, and the changed layers.

    Raises:
        ConfigError: If ``target_macs_ratio`` is not in (0, 1), another option is invalid, or
            the target cannot be reached with the ignored layers kept.
        ModelError: If pruning changed the shape of the model's outputs.
    """
    target_macs_ratio = _check_ratio("target_macs_ratio", target_macs_ratio)
    if int(round_to) < 1:
        raise ConfigError(f"round_to must be a positive channel count, got {round_to}")
    if int(iterative_steps) < 1:
        raise ConfigError(f"iterative_steps must be positive, got {iterative_steps}")
    _importance(importance)  # validate the name before any work
    input_shape = tuple(int(size) for size in input_shape)
    was_training = model.training
    base = copy.deepcopy(model).eval()
    ignored_names = _layer_names(base, default_ignored_layers(base))
    ignored_names += _layer_names(model, ignored_layers or ())
    macs_before, params_before = count_macs_params(base, input_shape)
    first = next(base.parameters())
    example = torch.rand(input_shape, generator=torch.Generator().manual_seed(0))
    example = example.to(device=first.device, dtype=first.dtype)
    with torch.no_grad():
        expected_shapes = _output_shapes(base(example))

    def attempt(channel_ratio: float) -> tuple[nn.Module, int]:
        candidate = _prune_copy(
            base,
            example,
            channel_ratio,
            ignored_names,
            int(round_to),
            importance,
            int(iterative_steps),
            global_pruning,
        )
        return candidate, count_macs(candidate, input_shape)

    target = target_macs_ratio * macs_before
    best, best_macs = attempt(_MAX_CHANNEL_RATIO)
    if best_macs > target:
        raise ConfigError(
            f"target_macs_ratio {target_macs_ratio} is out of reach: removing "
            f"{_MAX_CHANNEL_RATIO:.0%} of every prunable group keeps "
            f"{best_macs / macs_before:.2f} of the MACs (the ignored layers hold the rest)"
        )
    best_ratio, low, high = _MAX_CHANNEL_RATIO, 0.0, _MAX_CHANNEL_RATIO
    for _ in range(_SEARCH_STEPS):
        middle = (low + high) / 2
        candidate, macs = attempt(middle)
        log.debug("channel ratio %.4f keeps %.3f of the MACs", middle, macs / macs_before)
        if macs <= target:
            best, best_macs, best_ratio, high = candidate, macs, middle, middle
            if macs >= target * (1 - _SEARCH_TOLERANCE):
                break
        else:
            low = middle
    with torch.no_grad():
        shapes = _output_shapes(best(example))
    if shapes != expected_shapes:
        raise ModelError(
            f"pruning changed the output shapes from {expected_shapes} to {shapes}; "
            "add the output layers to ignored_layers"
        )
    _refresh_channel_attributes(best, example)
    best.train(was_training)
    result = PruneResult(
        model=best,
        macs_before=macs_before,
        macs_after=best_macs,
        params_before=params_before,
        params_after=count_parameters(best),
        channel_ratio=best_ratio,
        input_shape=input_shape,
        layers=_layer_changes(base, best),
    )
    log.info("pruned: %s", result.summary(limit=0))
    return result


def prune_unstructured(model: nn.Module, amount: float) -> UnstructuredReport:
    """Zeroes the ``amount`` smallest-magnitude conv and linear weights, in place.

    The ranking is global over every convolution and linear weight (L1 magnitude,
    ``torch.nn.utils.prune.global_unstructured``) and the masks are made permanent, so the
    model keeps ordinary parameters and exports as before. Biases and batch norms are kept.
    A dense runtime does not run the result faster: see :data:`DENSE_RUNTIME_NOTE`.

    Args:
        model: The model to sparsify (changed in place).
        amount: Share of the weights to zero, in (0, 1).

    Returns:
        The sparsity reached, per layer and overall.

    Raises:
        ConfigError: If ``amount`` is not in (0, 1) or the model has no conv/linear layer.
    """
    from torch.nn.utils import prune

    amount = _check_ratio("amount", amount)
    layers = [
        (name, module) for name, module in model.named_modules() if isinstance(module, _PRUNABLE)
    ]
    if not layers:
        raise ConfigError("the model has no convolution or linear layer to prune")
    prune.global_unstructured(
        [(module, "weight") for _, module in layers],
        pruning_method=prune.L1Unstructured,
        amount=amount,
    )
    per_layer, zeros, total = [], 0, 0
    for name, module in layers:
        prune.remove(module, "weight")
        layer_zeros = int((module.weight == 0).sum())
        zeros += layer_zeros
        total += module.weight.numel()
        per_layer.append((name, layer_zeros / module.weight.numel()))
    report = UnstructuredReport(amount, zeros, total, tuple(per_layer))
    log.info("%s", report.summary())
    return report


def __getattr__(name: str):
    # prune_checkpoint moved to its own module; keep the old import path working
    if name in ("prune_checkpoint", "PruneCheckpointResult"):
        from ubiq.models.toolchain.compress import prune_checkpoint as module

        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
