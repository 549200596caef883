"""The Astra world model in PyTorch (no ROS imports here)."""

from .checkpoint import CheckpointError
from .config import CONTRACT_MODALITIES, AstraConfig, CodecConfig, ConfigError, preset
from .loading import RANDOM_PREFIX, load_world_model
from .world_model import WorldModel

__all__ = ["AstraConfig", "CodecConfig", "CheckpointError", "ConfigError", "CONTRACT_MODALITIES", "RANDOM_PREFIX", "WorldModel",
           "load_world_model", "preset"]
