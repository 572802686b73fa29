"""Slim, torch-free runtime of the search function: tokenizer, preprocessing, ONNX encoders, HNSW lookup,
API."""

from handler.core import __version__

__all__ = ["__version__"]
