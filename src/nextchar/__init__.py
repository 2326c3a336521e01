"""nextchar: multilingual next-character prediction for text entry."""

__version__ = "0.1.0"
