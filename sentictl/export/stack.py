"""The export stack (torch, transformers, optimum, onnx): is it installed, and keeping its chatter off the user's screen."""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import ExportError

# What the export imports, and the package a user installs to get it (the export extra pulls them all).
MODULES = (
    ("torch", "torch"),
    ("transformers", "transformers"),
    ("onnx", "onnx"),
    ("optimum.exporters.onnx", "optimum-onnx"),
)
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
INSTALL_COMMAND = f"pip install 'sentictl[export]' --extra-index-url {TORCH_CPU_INDEX}"
INSTALL_HINT = (
    f"{INSTALL_COMMAND}   (the extra index gives PyTorch's CPU build; without it pip fetches the multi-GB CUDA one)"
)

# Third-party lines that name nothing the user can act on: optimum asks for accelerate to check for
# tied weights (a BERT classifier has none worth deduplicating), transformers complains about the
# keyword optimum passes it. Matched as substrings of the log message.
_NOISE = ("`torch_dtype` is deprecated", "requires accelerate", "Please install accelerate")
_EMITTERS = (
    "transformers.configuration_utils",
    "transformers.modeling_utils",
    "optimum.exporters.onnx.base",
    "optimum.exporters.onnx.convert",
    "optimum.exporters.tasks",
)


def missing_message(missing: str) -> str:
    """The one-paragraph error for an export without its extra installed."""
    return f"`sentictl export` needs the export extra ({missing} is not installed): {INSTALL_HINT}"


def require() -> None:
    """Raise ExportError naming the install command unless torch, transformers, onnx and optimum can be imported.

    Cheap (finds the modules, imports none of the heavy ones): it runs before the hub is asked for
    anything, so a plain install hears "install the export extra", not a download error.
    """
    for module, dist in MODULES:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package missing, or a module without a spec
            found = False
        if not found:
            raise ExportError(missing_message(dist))


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        return not any(pattern in message for pattern in _NOISE)


@contextmanager
def quiet_third_party() -> Iterator[None]:
    """For the length of an export: hide the warnings torch, transformers and optimum print about themselves.

    TracerWarnings (ONNX tracing of constant tensors, with a site-packages path), deprecation and
    future warnings, and the known log lines above. Errors still show, and so does any other
    warning they log (e.g. transformers' about a checkpoint whose classifier head is untrained).
    Everything is restored on exit: nothing is changed at import or for the rest of the process.
    """
    drop = _DropNoise()
    # Filters on the loggers that emit the lines (a logger's filter sees its own records), so the
    # order in which transformers and optimum set up their handlers does not matter.
    emitters = [logging.getLogger(name) for name in _EMITTERS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        try:
            from torch.jit._trace import TracerWarning  # where it is defined (torch.jit does not export it)

            warnings.simplefilter("ignore", TracerWarning)
        except ImportError:  # pragma: no cover - require() runs first
            pass
        for logger in emitters:
            logger.addFilter(drop)
        try:
            yield
        finally:
            for logger in emitters:
                logger.removeFilter(drop)
