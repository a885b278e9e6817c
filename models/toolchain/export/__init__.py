"""Export of trained models to ONNX and TFLite with their manifests (torch side)."""
