"""langbench: compare implementations of the same service across languages."""

__version__ = "0.1.0"
