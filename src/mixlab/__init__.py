"""mixlab: data mixing throughout LM development.

The Python API mirrors the CLI; each stage lives in its own subpackage:
``mixlab.data`` (records, sources, split, mix), ``mixlab.models``, ``mixlab.train``,
``mixlab.eval``, ``mixlab.runs``, ``mixlab.report`` and ``mixlab.mixopt``.
"""

__version__ = "0.1.0"

import warnings as _warnings

# peft (0.21) asks transformers (5.x) a deprecated question on every LoRA load; the answer is right and
# the FutureWarning, printed once per process, is noise in every LoRA run and sweep worker.
_warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*deprecated", category=FutureWarning)
