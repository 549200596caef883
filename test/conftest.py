"""Test-wide environment: headless rendering and DDS that never leaves this machine."""

import os
import random

os.environ.setdefault("MUJOCO_GL", "egl")
# Every process that may touch ROS 2 discovers only on localhost, on a domain of its own.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
