"""Slim, torch-free runtime of the search function: tokenizer, preprocessing, ONNX encoders, HNSW lookup, API."""

__version__ = "0.1.0"
