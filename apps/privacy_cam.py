"""``privacy-cam``: blurs faces (BlazeFace) or people (person segmentation) in every frame
before any output sees it: the video, the window, the live view and snapshots only ever
get the blurred frame, and nothing is drawn on it.

``blur: faces`` runs the face detector named by ``model`` (default ``blazeface``);
``blur: person`` or ``blur: background`` runs the segmenter named by ``model`` (default
``selfie-seg``). Defaults: ``privacy_cam.yaml``.
"""

from __future__ import annotations

from ubiq.apps.app import App
from ubiq.errors import ConfigError

TARGETS = ("faces", "person", "background")


class PrivacyCamApp(App):
    name = "privacy-cam"

    def check(self) -> None:
        if self.config.blur not in TARGETS:
            raise ConfigError(f"blur must be one of {', '.join(TARGETS)}, got {self.config.blur!r}")
        if any(camera.lines or camera.zones for camera in self.config.cameras):
            raise ConfigError("privacy-cam has no lines or zones: remove them from cameras")

    def _model_name(self) -> str:
        model = self.config.model
        if model == "ubiq-det-mnv2":  # the shared default means "this app's default"
            return "blazeface" if self.config.blur == "faces" else "selfie-seg"
        return model

    def load_model(self, streams: int = 1):
        from ubiq.hardware.accelerators import parse_device

        config = self.config
        options = dict(
            backend=config.backend,
            num_threads=config.threads,
            device=parse_device(config.device),
            streams=streams,
        )
        if config.blur == "faces":
            from ubiq.models.runtime.model import DetectionModel

            return DetectionModel.load(self._model_name(), confidence_threshold=0.5, **options)
        from ubiq.models.runtime.segment import Segmenter

        return Segmenter.load(self._model_name(), **options)

    def check_model(self, model) -> None:
        if self.config.blur == "person" and "person" not in tuple(model.labels):
            raise ConfigError(
                f"blur person: {model.path.name} has no class 'person' "
                f"(classes: {', '.join(model.labels)})"
            )

    def stages(self, model, camera, source, position: int) -> list:
        from ubiq.pipelines.segment import Blur, Segment

        if self.config.blur == "faces":
            return [Blur("faces", detector=model)]
        return [Segment(model), Blur(self.config.blur, labels=tuple(model.labels))]

    def annotators(self, position: int) -> list:
        return []  # the blurred frame is the picture: no boxes, no masks
