"""kseg's version, declared once: ``kseg.__version__`` re-exports it, pyproject.toml reads it
statically, and kseg.config writes it into every run's identity without importing the package
``kseg`` (whose ``__init__`` imports kseg.config)."""

__version__ = "0.3.0"
