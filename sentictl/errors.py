"""Errors whose message is meant for the user; the CLI prints them and exits 1."""


class SentictlError(Exception):
    """Base class: the message says what went wrong and what to do about it."""


class ModelNotFound(SentictlError):
    """No usable model directory where one was expected."""


class ManifestError(SentictlError):
    """A model directory whose manifest is missing, malformed or does not match its files."""


class ExportError(SentictlError):
    """Exporting a checkpoint failed (download, conversion or parity)."""


class CacheError(SentictlError):
    """The result cache file cannot be opened or used."""


class InputError(SentictlError):
    """Input that cannot be read at all (as opposed to one bad record in a stream)."""


class OutputError(SentictlError):
    """An output that cannot be written: the same file as an input, a missing directory, a full disk."""


class IntegrityError(ManifestError):
    """A model file whose bytes do not match the sha256 its manifest records (edited or corrupt)."""
