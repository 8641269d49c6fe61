"""`moorage finetune`: trains a LoRA adapter on local base weights and a local or pre-pulled dataset.

Needs the `finetune` extra (torch, transformers, peft, datasets); imports them only when training.
"""

from moorage.jobs.finetune.cli import main

__all__ = ["main"]
