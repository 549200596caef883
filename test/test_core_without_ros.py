"""The core (model and data) imports with rclpy unavailable (DESIGN §1)."""

import subprocess
import sys


def test_model_core_imports_without_rclpy():
    code = (
        "import sys; sys.modules['rclpy'] = None\n"  # any 'import rclpy' now raises ImportError
        "import astra_ros.model, astra_ros.model.world_model, astra_ros.data.bags, astra_ros.data.clips, astra_ros.data.record\n"
        "assert 'rclpy' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
