"""Development tooling: the parity matrix (`dev.parity`) and the demo (`dev.demo`).

Nothing in the runtime, the exporters or the reference models imports this package; the CLI imports its
tools inside the `parity` and `demo` commands only. This module holds what both walk over, derived from the
tables that define it: the exporters' front ends and io_spec's export tasks.
"""

from __future__ import annotations

from ..exporters import FRONT_ENDS
from ..artifact.io_spec import TASKS as EXPORT_TASKS

FRAMEWORKS = tuple(FRONT_ENDS)
# (export task, with_past) rows: every task once, then the tasks that take past key/values again with them
# (text-generation and text-generation +past close the table). A task whose graph is another's (rerank) adds
# no row: its graph is compared under that task. sentence-embeddings exports sentence-transformers
# directories, which the matrix's random checkpoints are not.
TASK_ROWS = tuple(
    (task.name, with_past)
    for task in sorted(EXPORT_TASKS.values(), key=lambda task: task.can_use_past)
    if task.is_head_graph
    for with_past in ((False, True) if task.can_use_past else (False,))
)
# Geometries of the parity matrix's random checkpoints (`onnxport parity --size`).
SIZES = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                 max_position_embeddings=40, type_vocab_size=2, vocab_size=99, initializer_range=0.2),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 max_position_embeddings=514, type_vocab_size=2, vocab_size=32000, initializer_range=0.02),
}
