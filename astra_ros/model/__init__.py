"""The Astra world model in PyTorch (no ROS imports here)."""

from .checkpoint import CheckpointError
from .config import CONTRACT_MODALITIES, AstraConfig, CodecConfig, ConfigError, preset
from .world_model import WorldModel

__all__ = ["AstraConfig", "CodecConfig", "CheckpointError", "ConfigError", "CONTRACT_MODALITIES", "WorldModel", "preset"]
