"""The engine every door stands on: model loading, records, cache, batching, typed results.

Import-light: tokenizers, onnxruntime, numpy, orjson and sqlite3 only — never torch,
transformers or optimum (a test checks ``sys.modules`` after a `score` run).
"""

from .cache import ResultCache
from .core import Engine
from .manifest import MANIFEST, read_manifest
from .model import Model, load
from .records import REASONS, BadRecord, Record, Verdict
from .results import ResultDict

__all__ = [
    "BadRecord",
    "Engine",
    "MANIFEST",
    "Model",
    "REASONS",
    "Record",
    "ResultDict",
    "ResultCache",
    "Verdict",
    "load",
    "read_manifest",
]
