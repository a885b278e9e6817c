"""Lines and polygon zones in a frame, and the point of a box that rules test.

Coordinates are pixels, or fractions of the frame's width and height when every
coordinate of a shape lies in ``[0, 1]`` (``0.5,0,0.5,1`` is a vertical line through the
middle of any frame). Fractions become pixels with :meth:`Line.resolve` /
:meth:`Zone.resolve` once the frame size is known, which also checks the shape lies in the
frame.

The side of a point ``P`` of a line ``A -> B`` is the sign of
``(Bx - Ax)(Py - Ay) - (By - Ay)(Px - Ax)``: in image coordinates (y down) that is positive
to the right of the direction of travel from A to B. A crossing from negative to positive
is ``"in"``, from positive to negative ``"out"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ubiq.errors import ConfigError

ANCHORS = ("center", "bottom")


def anchor_points(xyxy: np.ndarray, anchor: str = "center") -> np.ndarray:
    """``(N, 2)`` points of ``(N, 4)`` boxes: their centre, or the middle of their bottom
    edge (``bottom``: where a person's feet or a car's wheels touch the ground).

    Raises:
        ConfigError: If ``anchor`` is not one of :data:`ANCHORS`.
    """
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    if anchor == "center":
        return np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2], axis=1)
    if anchor == "bottom":
        return np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, xyxy[:, 3]], axis=1)
    raise ConfigError(f"anchor must be one of {', '.join(ANCHORS)}, got {anchor!r}")


def _points(name: str, values: Sequence[float] | Sequence[Sequence[float]]) -> np.ndarray:
    try:
        points = np.asarray(values, np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected x,y pairs of numbers, got {values!r}") from None
    if not np.isfinite(points).all():
        raise ConfigError(f"{name}: coordinates must be finite numbers, got {values!r}")
    return points


def _resolve(name: str, points: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    width, height = frame_size
    if (points >= 0).all() and (points <= 1).all():
        return points * np.array([width, height], np.float64)
    outside = (
        (points[:, 0] < 0) | (points[:, 0] > width) | (points[:, 1] < 0) | (points[:, 1] > height)
    )
    if outside.any():
        x, y = points[np.flatnonzero(outside)[0]]
        raise ConfigError(f"{name}: point ({x:g}, {y:g}) is outside the {width}x{height} frame")
    return points


@dataclass(frozen=True)
class Line:
    """A counting line from ``a`` to ``b`` (pixels or frame fractions).

    Raises:
        ConfigError: If the line has zero length.
    """

    name: str
    a: tuple[float, float]
    b: tuple[float, float]

    def __post_init__(self) -> None:
        points = _points(f"line {self.name!r}", [self.a, self.b])
        if len(points) != 2:
            raise ConfigError(f"line {self.name!r}: needs two points, got {len(points)}")
        if np.allclose(points[0], points[1]):
            raise ConfigError(f"line {self.name!r} has zero length: both ends are {self.a}")
        object.__setattr__(self, "a", tuple(float(v) for v in points[0]))
        object.__setattr__(self, "b", tuple(float(v) for v in points[1]))

    @classmethod
    def parse(cls, text: str, name: str = "line") -> Line:
        """``"X1,Y1,X2,Y2"`` -> a line.

        Raises:
            ConfigError: If the text is not four numbers.
        """
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            values = []
        if len(values) != 4:
            raise ConfigError(f"line {name!r} must be X1,Y1,X2,Y2, got {text!r}")
        return cls(name, (values[0], values[1]), (values[2], values[3]))

    def resolve(self, frame_size: tuple[int, int]) -> Line:
        """This line in pixels of a ``(width, height)`` frame.

        Raises:
            ConfigError: If an end lies outside the frame.
        """
        points = _resolve(f"line {self.name!r}", np.array([self.a, self.b]), frame_size)
        return Line(self.name, tuple(points[0]), tuple(points[1]))

    def side(self, points: np.ndarray) -> np.ndarray:
        """``(N,)`` signed values of ``(Bx-Ax)(Py-Ay) - (By-Ay)(Px-Ax)`` (see the module)."""
        ax, ay = self.a
        bx, by = self.b
        points = np.asarray(points, np.float64).reshape(-1, 2)
        return (bx - ax) * (points[:, 1] - ay) - (by - ay) * (points[:, 0] - ax)

    def along(self, points: np.ndarray) -> np.ndarray:
        """``(N,)`` position of each point's projection on the line: 0 at A, 1 at B."""
        a = np.array(self.a)
        direction = np.array(self.b) - a
        points = np.asarray(points, np.float64).reshape(-1, 2)
        return (points - a) @ direction / float(direction @ direction)


@dataclass(frozen=True)
class Zone:
    """A polygon zone (pixels or frame fractions), at least 3 points and a non-zero area.

    Raises:
        ConfigError: If it has fewer than 3 points or no area.
    """

    name: str
    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        points = _points(f"zone {self.name!r}", self.points)
        if len(points) < 3:
            raise ConfigError(f"zone {self.name!r} needs at least 3 points, got {len(points)}")
        x, y = points[:, 0], points[:, 1]
        area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
        if area <= 0:
            raise ConfigError(f"zone {self.name!r} has no area: its points lie on one line")
        object.__setattr__(self, "points", tuple((float(px), float(py)) for px, py in points))

    @classmethod
    def parse(cls, text: str, name: str = "zone") -> Zone:
        """``"X1,Y1,X2,Y2,X3,Y3,..."`` -> a zone.

        Raises:
            ConfigError: If the text is not an even count of numbers.
        """
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            values = [float("nan")]
        if len(values) % 2 or not all(np.isfinite(values)):
            raise ConfigError(f"zone {name!r} must be X1,Y1,X2,Y2,X3,Y3,..., got {text!r}")
        return cls(name, tuple(zip(values[::2], values[1::2], strict=True)))

    def resolve(self, frame_size: tuple[int, int]) -> Zone:
        """This zone in pixels of a ``(width, height)`` frame.

        Raises:
            ConfigError: If a point lies outside the frame.
        """
        points = _resolve(f"zone {self.name!r}", np.array(self.points), frame_size)
        return Zone(self.name, tuple(map(tuple, points)))

    def contains(self, points: np.ndarray) -> np.ndarray:
        """``(N,)`` True for points inside the polygon (even-odd rule)."""
        polygon = np.asarray(self.points, np.float64)
        points = np.asarray(points, np.float64).reshape(-1, 2)
        x, y = points[:, 0:1], points[:, 1:2]
        x1, y1 = polygon[:, 0], polygon[:, 1]
        x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
        straddles = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            crossing_x = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        return (straddles & (x < crossing_x)).sum(axis=1) % 2 == 1
