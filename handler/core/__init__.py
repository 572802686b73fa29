"""The torch-free core shared by export/, index_builder/ and the service: errors, storage (local, S3, download
cache, atomic writes), the bundle and index formats, tokenizer, image preprocessing, onnxruntime encoders and the
runtime that ties them together. It imports nothing from the service (handler.*), export or index_builder."""

# The project's one version: pyproject.toml reads it; the Lambda images run the code uninstalled.
__version__ = "0.1.0"
