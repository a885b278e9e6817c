"""Draws a :class:`~ubiq.pipelines.rules.rules.Rules` stage's lines (with their in/out
arrows and counts) and zones (with their occupancy) on each frame."""

from __future__ import annotations

import cv2
import numpy as np

from ubiq.pipelines.sinks.annotate import draw_label, line_thickness
from ubiq.types import FrameResult

LINE_COLOR = (0, 220, 255)
ZONE_COLOR = (255, 160, 0)
ALERT_COLOR = (0, 0, 255)


class RulesAnnotator:
    """Lines with arrows (``in`` points to the positive side, see
    :mod:`~ubiq.pipelines.rules.geometry`) and live counts, zones with occupancy; a zone
    turns red while it holds an intrusion."""

    def __init__(self, rules) -> None:
        self.rules = rules

    def __call__(self, canvas: np.ndarray, result: FrameResult) -> np.ndarray:
        thickness = line_thickness(canvas)
        intruded = {e.payload.get("zone") for e in result.events if e.kind == "zone.intrusion"}
        for rule in self.rules.zone_rules:
            polygon = np.round(np.asarray(rule.zone.points)).astype(np.int32)
            color = ALERT_COLOR if rule.zone.name in intruded else ZONE_COLOR
            cv2.polylines(canvas, [polygon], True, color, thickness, cv2.LINE_AA)
            occupancy = rule.occupancy()
            text = f"{rule.zone.name}: " + (
                ", ".join(f"{label} {n}" for label, n in occupancy.items()) or "empty"
            )
            x, y = polygon[:, 0].min(), polygon[:, 1].min()
            draw_label(canvas, text, (int(x), int(y)), color)
        for rule in self.rules.line_rules:
            a = np.array(rule.line.a)
            b = np.array(rule.line.b)
            cv2.line(
                canvas,
                tuple(np.round(a).astype(int)),
                tuple(np.round(b).astype(int)),
                LINE_COLOR,
                thickness + 1,
                cv2.LINE_AA,
            )
            direction = b - a
            normal = np.array([-direction[1], direction[0]]) / np.linalg.norm(direction)
            middle = (a + b) / 2
            size = max(12.0, 0.04 * max(canvas.shape[:2]))
            for sign, word in ((1, "in"), (-1, "out")):
                start = (
                    middle
                    - sign * normal * size * 0.2
                    + direction / np.linalg.norm(direction) * size * 0.6 * sign
                )
                end = start + sign * normal * size
                cv2.arrowedLine(
                    canvas,
                    tuple(np.round(start).astype(int)),
                    tuple(np.round(end).astype(int)),
                    LINE_COLOR,
                    thickness,
                    cv2.LINE_AA,
                    tipLength=0.35,
                )
                cv2.putText(
                    canvas,
                    word,
                    tuple(np.round(end + sign * normal * 4).astype(int)),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 + thickness * 0.1,
                    LINE_COLOR,
                    1,
                    cv2.LINE_AA,
                )
            totals = {"in": 0, "out": 0}
            for per_label in rule.counts.values():
                totals["in"] += per_label["in"]
                totals["out"] += per_label["out"]
            text = f"{rule.line.name}: in {totals['in']} out {totals['out']}"
            draw_label(canvas, text, tuple(np.round(a).astype(int)), LINE_COLOR)
        return canvas
