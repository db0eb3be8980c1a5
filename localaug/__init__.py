"""localaug: LLM2LLM data augmentation that never leaves the machine."""

__version__ = "0.1.0"
