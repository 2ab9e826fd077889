"""CrissCross: self-supervised audio-visual learning with relaxed temporal synchronicity."""

__version__ = "0.1.0"
