"""The package version, in a module of its own so any layer can stamp it without importing the
``circuits`` facade (which imports every layer lazily, the registry included)."""

__version__ = "0.1.0"
