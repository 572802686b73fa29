"""The torch-free core shared by export/, index_builder/ and the service. It imports nothing from the service
(handler.*), export or index_builder (tests/test_import_graph.py checks).

Modules: errors; uri (the one location parser); hashing (file sha256); cpus (usable CPU count); logs (JSON
log lines, EMF metrics, CLI messages); storage (base, local, s3: stores, download cache, atomic writes);
bundle (bundle format and manifest reader); index_format (pointer, manifest), search (SearchIndex) and index
(loading); tokenizer; images (decoding, limits, ImageOptions) and preprocess (open_clip's transform);
encoders (onnxruntime sessions); runtime (the Embedder tying them together)."""

# The project's one version: pyproject.toml reads it; the Lambda images run the code uninstalled.
__version__ = "0.1.0"
