"""The rebuild as three plain steps - **plan -> embed (one call per batch, in parallel) -> publish** - that
any engine can drive: Step Functions' Distributed Map (:mod:`index_builder.sfn_handlers`), a local process
pool (:mod:`index_builder.parallel`, ``index_builder build --parallel N``), or Ray / AWS Batch later.

All state lives in the index store under ``.rebuild/`` (see :mod:`index_builder.steps.work`), never in a
worker's ``/tmp``, so any step can run on any machine and be retried.
"""

from index_builder.steps.embed import BatchIncomplete, embed_batch
from index_builder.steps.plan import plan
from index_builder.steps.publish_step import publish_run

__all__ = ["BatchIncomplete", "embed_batch", "plan", "publish_run"]
