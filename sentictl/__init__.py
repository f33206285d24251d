"""sentictl: financial-sentiment classification with ONNX Runtime, from the command line or Python.

    import sentictl
    clf = sentictl.load()                      # the model the CLI would choose; prints nothing
    results = clf.classify(["Profit rose.", "Losses widened."])
    results[0].label, results[0].score

docs/python-api.md describes the API; importing this package loads no model and no ONNX Runtime.
"""

__version__ = "0.1.0"

from .api import DEFAULT_CACHE, CacheDefault, Classifier, ModelMismatch, Result, load  # noqa: E402
from .errors import SentictlError  # noqa: E402

__all__ = [
    "DEFAULT_CACHE",
    "CacheDefault",
    "Classifier",
    "ModelMismatch",
    "Result",
    "SentictlError",
    "__version__",
    "load",
]
