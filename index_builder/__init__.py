"""The offline index builder: source images -> embeddings (ONNX bundle or open_clip torch) -> hnswlib index.

    python -m index_builder build --source SRC --bundle BUNDLE --out DEST   # incremental, resumable
    python -m index_builder build ... --parallel N     # plan -> N embed worker processes -> publish
    python -m index_builder info DEST [--json]
    python -m index_builder verify DEST [--bundle BUNDLE]

Modules: :mod:`~index_builder.cli` (sub-commands, exit codes; ``build``'s options in
:mod:`~index_builder.cli_build`, its output in :mod:`~index_builder.cli_report`), :mod:`~index_builder.errors`
(the user-facing errors), :mod:`~index_builder.build` (the job), :mod:`~index_builder.sources`
(``open_source``: folder / S3 prefix / JSONL listing and reading, one ``source_*`` module each),
:mod:`~index_builder.pipeline`
(parallel read + hash + decode feeding the encoder), :mod:`~index_builder.backends` (ONNX / torch encoders),
:mod:`~index_builder.workdir` (lock, checkpoint shards), :mod:`~index_builder.publish` (versions, pointer,
pruning), :mod:`~index_builder.inspection` (info, verify); the step-wise build:
:mod:`~index_builder.steps` (plan, embed one batch, publish), :mod:`~index_builder.lock` (one build per index,
S3 conditional writes), :mod:`~index_builder.parallel` (local process pool),
:mod:`~index_builder.sfn_handlers` (the Step Functions Lambda handlers). The throughput benchmark is
``bench.rebuild_run`` (not shipped in the rebuild image).
"""
