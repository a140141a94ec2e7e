"""ptl-projhead: an SSL algorithm with a projection head, written against docs/plugins only."""

__version__ = "0.1.0"
