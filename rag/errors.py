"""Exception types. Every message says what failed (file, setting, collection) and what to do."""


class RagError(Exception):
    """Base class for errors shown to users as a one-line reason."""


class ConfigError(RagError):
    """A setting has a value that cannot work."""


class StoreError(RagError):
    """The vector store cannot be opened, is locked, or rejected an operation."""


class StoreLockedError(StoreError):
    """Another process holds the embedded store."""


class ModelMismatchError(RagError):
    """A collection was built with another embedding model or dimension."""


class ModelLoadError(RagError):
    """A model could not be loaded (missing files, no network to download it)."""


class ParseError(RagError):
    """A file could not be parsed into text."""


class LLMError(RagError):
    """The LLM endpoint failed (unreachable, timeout, HTTP error, malformed stream)."""


class EmptyQueryError(RagError):
    """The query has no searchable content."""
