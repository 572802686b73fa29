"""The torch-free core shared by export/, index_builder/ and the service: errors, storage (local, S3, download
cache, atomic writes), the bundle and index formats, tokenizer, image preprocessing, onnxruntime encoders and the
runtime that ties them together. It imports nothing from the service (handler.*), export or index_builder."""
