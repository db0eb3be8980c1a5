"""localaug: LLM2LLM data augmentation that never leaves the machine."""

from . import offline

offline.enforce()  # before anything can import transformers / huggingface_hub / datasets

__version__ = "0.1.0"
