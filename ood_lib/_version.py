"""The package version (one place: the package, its results files and its machine records read it here)."""

__version__ = "0.1.0"
