"""The fine-tuning API under its earlier name: ``from mixlab.train.sft import FinetuneConfig, finetune``.

Fine-tuning lives in :mod:`mixlab.train.finetune`; this module re-exports its public names so that
scripts written against ``mixlab.train.sft`` keep working.
"""

from mixlab.train.finetune import METHODS, FinetuneConfig, Method, finetune, format_plan, is_complete, load_finetune_config, prepare
from mixlab.train.finetune.base import apply_lora, load_base, merge_lora, resolve_base
from mixlab.train.finetune.config import EarlyStopSection, LoraSection, ModelSection, TrainSection
from mixlab.train.finetune.run import EarlyStopper, FinetuneResult, aggregate, baseline_dir, flat_scores
from mixlab.train.finetune.sft import FinetunePrepared

__all__ = ["METHODS", "EarlyStopSection", "EarlyStopper", "FinetuneConfig", "FinetunePrepared", "FinetuneResult",
           "LoraSection", "Method", "ModelSection", "TrainSection", "aggregate", "apply_lora", "baseline_dir",
           "finetune", "flat_scores", "format_plan", "is_complete", "load_base", "load_finetune_config",
           "merge_lora", "prepare", "resolve_base"]
