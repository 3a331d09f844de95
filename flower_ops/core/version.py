"""The package version, in one place (``flower_ops.__version__``, the API index)."""

__version__ = "0.1.0"
