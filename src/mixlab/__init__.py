"""mixlab: data mixing throughout LM development.

The Python API mirrors the CLI; each stage lives in its own subpackage:
``mixlab.data`` (records, sources, split, mix), ``mixlab.models``, ``mixlab.train``,
``mixlab.eval``, ``mixlab.runs``, ``mixlab.report`` and ``mixlab.mixopt``.
"""

__version__ = "0.1.0"
