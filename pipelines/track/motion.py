"""Global camera motion between frames, for trackers on a moving camera (BoT-SORT's idea).

Corners are found on a downscaled grey frame and followed into the next with pyramidal
Lucas-Kanade optical flow; a partial affine transform (rotation, uniform scale,
translation) fitted with RANSAC is the camera's motion, which the tracker applies to its
predicted boxes before matching. Points inside the previous frame's detections are left
out, so walking people do not pull the estimate along with them.
"""

from __future__ import annotations

import cv2
import numpy as np

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


class CameraMotion:
    """Estimates the 2x3 affine that maps the previous frame's pixels onto the current one's.

    Args:
        downscale: Work on frames shrunk so the longer side is at most this many pixels.
        max_corners: Corners followed per frame.

    Raises:
        ValueError: If ``downscale`` or ``max_corners`` is not positive.
    """

    def __init__(self, *, downscale: int = 320, max_corners: int = 200) -> None:
        if downscale < 32:
            raise ValueError(f"downscale must be >= 32, got {downscale}")
        if max_corners < 8:
            raise ValueError(f"max_corners must be >= 8, got {max_corners}")
        self.downscale = downscale
        self.max_corners = max_corners
        self._previous: np.ndarray | None = None
        self._previous_points: np.ndarray | None = None
        self._factor = 1.0

    def reset(self) -> None:
        self._previous = None
        self._previous_points = None

    def estimate(self, image: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
        """Returns the motion from the previous frame to ``image`` (identity for the first).

        Args:
            image: ``(H, W, 3)`` BGR or ``(H, W)`` grey frame.
            boxes: ``(N, 4)`` boxes in this frame's pixels whose corners are left out of
                the next estimate (the objects that move by themselves).
        """
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        height, width = grey.shape
        factor = min(1.0, self.downscale / max(height, width))
        if factor < 1.0:
            grey = cv2.resize(
                grey, (round(width * factor), round(height * factor)), interpolation=cv2.INTER_AREA
            )
        motion = IDENTITY.copy()
        previous, points = self._previous, self._previous_points
        if (
            previous is not None
            and points is not None
            and len(points) >= 8
            and (previous.shape == grey.shape)
        ):
            moved, status, _ = cv2.calcOpticalFlowPyrLK(
                previous, grey, points, None, winSize=(15, 15), maxLevel=3
            )
            good = status.reshape(-1) == 1
            if good.sum() >= 8:
                affine, inliers = cv2.estimateAffinePartial2D(
                    points[good], moved[good], method=cv2.RANSAC, ransacReprojThreshold=1.0
                )
                if affine is not None and inliers is not None and inliers.sum() >= 6:
                    motion = affine.astype(np.float64)
                    motion[:, 2] /= factor
        mask = None
        if boxes is not None and len(boxes):
            mask = np.full(grey.shape, 255, np.uint8)
            for x1, y1, x2, y2 in np.asarray(boxes, np.float64) * factor:
                mask[
                    max(int(y1), 0) : max(int(np.ceil(y2)), 0),
                    max(int(x1), 0) : max(int(np.ceil(x2)), 0),
                ] = 0
        self._previous = grey
        self._previous_points = cv2.goodFeaturesToTrack(
            grey, self.max_corners, qualityLevel=0.01, minDistance=8, mask=mask, blockSize=3
        )
        return motion


def apply_motion(mean: np.ndarray, motion: np.ndarray) -> None:
    """Moves Kalman means ``(N, 4, 2)`` (``cx, cy, w, h`` and velocities) by a 2x3 affine,
    in place: centres are transformed, sizes and velocities scaled and rotated."""
    if not len(mean) or np.allclose(motion, IDENTITY):
        return
    linear = motion[:, :2]
    scale = float(np.sqrt(abs(np.linalg.det(linear))))
    centres = mean[:, :2, 0]
    mean[:, :2, 0] = centres @ linear.T + motion[:, 2]
    mean[:, :2, 1] = mean[:, :2, 1] @ linear.T
    mean[:, 2:, :] *= scale
