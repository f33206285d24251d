"""sentictl: financial-sentiment classification with ONNX Runtime, from the command line."""

__version__ = "0.1.0"
