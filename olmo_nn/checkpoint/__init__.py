"""Checkpoint formats (unsharded safetensors here; sharded DCP with the trainer)."""

from olmo_nn.checkpoint.integrity import CheckpointError
from olmo_nn.checkpoint.unsharded import load_checkpoint_config, load_model, save_checkpoint

__all__ = ["CheckpointError", "load_checkpoint_config", "load_model", "save_checkpoint"]
