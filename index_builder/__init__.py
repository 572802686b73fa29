"""The offline index builder: source images -> embeddings (ONNX bundle or open_clip torch) -> hnswlib index.

    python -m index_builder build --source SRC --bundle BUNDLE --out DEST   # incremental, resumable
    python -m index_builder info DEST [--json]
    python -m index_builder verify DEST [--bundle BUNDLE]

Modules: :mod:`~index_builder.cli` (argument parsing, exit codes), :mod:`~index_builder.build` (the job),
:mod:`~index_builder.sources` (folder / S3 prefix / JSONL listing and reading), :mod:`~index_builder.pipeline`
(parallel read + hash + decode feeding the encoder), :mod:`~index_builder.backends` (ONNX / torch encoders),
:mod:`~index_builder.workdir` (lock, checkpoint shards), :mod:`~index_builder.publish` (versions, pointer,
pruning), :mod:`~index_builder.inspection` (info, verify). The throughput benchmark is ``bench.rebuild_run`` (not
shipped in the rebuild image).
"""
