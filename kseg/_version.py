"""kseg's version, declared once: ``kseg.__version__`` re-exports it, pyproject.toml reads it
statically, and kseg.experiment.config writes it into every run's identity."""

__version__ = "0.3.0"
