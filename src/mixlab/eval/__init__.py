"""The evaluation engine: tasks as data, batched scoring, metrics, sandboxed code, judging."""
