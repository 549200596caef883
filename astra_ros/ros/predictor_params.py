"""The predictor node's parameters and limits: one table that the node declares, ``--help`` prints and
``config/predictor.yaml`` lists (test/test_launch_and_config.py checks that they agree)."""

from __future__ import annotations

import numpy as np

from astra_ros.data.actions import MODALITIES
from astra_ros.ros.parameters import ParamSpec
from astra_ros.ros.predictor_core import RESIZE_MODES

NODE_NAME = "astra_predictor"
TWIST_SOURCES = ("twist", "odom")
INPUTS = ("image", "pose", "twist", "odom")
LOG_THROTTLE_S = 5.0  # [s] the same warning at most this often
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the model's inputs are float32
STAMP_JUMP_NS = 1_000_000_000  # [ns] a forward step this large is checked against the next stamp (a glitch?)
CLOCK_MISMATCH_NS = 1_000_000_000  # [ns] images this far from every state: the streams use different clocks
PUBLISH_MARGIN_S = 0.01  # [s] a published frame shows a time at least this far ahead (the way to a subscriber)
LOST_CHANGE_MAX = 100_000  # messages one lost-message event may report; more is a middleware's garbage
QUATERNION_NORM_TOLERANCE = 0.1  # a pose quaternion whose norm is further from 1 is refused, not normalised
TRACK_S = 5.0  # [s] feeding-stream states kept for catching forecasts up to now
STATE_HISTORY_S = 2.0  # [s] states kept for pairing: covers images that arrive this late (camera latency)



PARAMETERS: dict[str, ParamSpec] = {
    "profile": ParamSpec("", "robot profile YAML (config/robots/*.yaml, docs/ROBOT_PROFILE.md): its modality, topics, "
                         "twist signs, pose frame and intrinsics, as astra-train and astra-eval read them; it sets "
                         "action_modality, twist_source and twist_stamped and replaces the input remappings; "
                         "'' = none", read_only=True),
    "checkpoint": ParamSpec("default", "model checkpoint: 'default', a directory, or 'random:<preset>' "
                        "(random weights; random:tiny is 32x32 for tests)", read_only=True),
    "precision": ParamSpec("float32", "compute precision of the transformer: bfloat16 is ~1.2x faster on CPUs "
                       "with AVX512-BF16 (bench/profile_inference.py) at a mean change of under one grey level",
                       read_only=True, choices=("float32", "bfloat16")),
    "compile": ParamSpec(False, "torch.compile the codec and anchor decoder at startup: steps 1.3x faster at 64 px, "
                         "1.06x at 128 px (2 threads, docs/SPEED.md) for minutes of compiling the first time (seconds once torch's disk cache "
                         "holds them); frames within a grey level or two of the eager ones; if compiling fails here "
                         "the node runs eagerly and logs why", read_only=True),
    "action_modality": ParamSpec("twist", "actions fed to the model: camera (pose = camera optical frame in the world), "
                             "robot (pose = end-effector in the base frame), twist or keys (twist or odom)",
                             choices=MODALITIES),
    "twist_source": ParamSpec("twist", "where twist/keys actions come from: 'twist' (the twist topic) or 'odom' "
                          "(the odometry's twist)", choices=TWIST_SOURCES),
    "image_transport": ParamSpec("raw", "raw: sensor_msgs/Image on `image`; compressed: sensor_msgs/CompressedImage "
                                 "(jpeg, png) on `<image>/compressed` (image_transport's name, after remapping `image`)",
                                 read_only=True, choices=("raw", "compressed")),
    "twist_stamped": ParamSpec(False, "the twist topic is geometry_msgs/TwistStamped (else Twist, stamped on arrival)",
                           read_only=True),
    "context_frames": ParamSpec(4, "observed frames the model is started from (a multiple of the model's frames "
                                "per chunk)", (2, 64)),
    "horizon_s": ParamSpec(2.0, "each forecast covers at least this long [s] after its publication, while the model "
                           "runs faster than real time (/diagnostics warns when a forecast falls short)", (0.1, 30.0)),
    "publish_rate": ParamSpec(10.0, "at most this many forecasts per second [Hz]: the next starts as soon as the "
                              "previous is out and a newer frame exists, no sooner than 1/publish_rate after it",
                              (0.05, 30.0)),
    "max_catch_up_s": ParamSpec(3.0, "images older than this [s] against the node clock are not caught up to now "
                                "(another clock: replay bags with --clock and use_sim_time:=true); the forecast "
                                "then starts at the newest frame and /diagnostics warns", (0.0, 60.0)),
    "resize_mode": ParamSpec("crop", "how images of another aspect ratio reach the square model input: crop (centre "
                             "crop, intrinsics adjusted) or squash (resize as they are)", read_only=True,
                             choices=RESIZE_MODES),
    "device": ParamSpec("auto", "where the model runs: auto (cuda when available), cpu or cuda", read_only=True,
                        choices=("auto", "cpu", "cuda")),
    "num_threads": ParamSpec(0, "torch threads of each model thread (live loop, ~/imagine); 0: half the cores, "
                             "at least 1", (0, 256), read_only=True),
    "action_range_multiple": ParamSpec(3.0, "~/imagine refuses actions beyond this multiple of the speeds the model "
                                       "was trained on (0.7 m/s, 1.1 rad/s)", (1.0, 100.0)),
    "sync_slop_s": ParamSpec(0.05, "largest stamp difference [s] between an image and its nearest pose (the pose is "
                             "then interpolated to the image; twists are held as in training: the latest at or "
                             "before the image, zero once 0.5 s old)", (0.0, 2.0)),
    "sync_queue_size": ParamSpec(10, "images waiting for their pose/twist (older ones are dropped)", (1, 200)),
    "input_timeout_s": ParamSpec(2.0, "an input silent for longer than this [s] is reported", (0.1, 600.0)),
    "max_imagine_batch": ParamSpec(64, "largest batch an ~/imagine request may ask for (planners send 16-64 candidates)",
                               (1, 64)),
    "imagine_sub_batch": ParamSpec(0, "candidates the model runs at once; larger ~/imagine requests are split into "
                               "sub-batches run one after the other (same futures); 0: the model's memory estimate",
                               (0, 64)),
    "max_imagine_horizon": ParamSpec(16, "largest horizon an ~/imagine request may ask for", (1, 256)),
    "max_imagine_steps": ParamSpec(64, "most Euler steps per chunk an ~/imagine request may ask for (denoise_steps)",
                                   (1, 1024)),
    "imagine_timeout_s": ParamSpec(30.0, "longest an ~/imagine call waits for the model, queue and answer together; "
                                   "then it is cancelled; a request estimated to take longer is refused at once [s]",
                                   (0.1, 600.0)),
    "seed": ParamSpec(-1, "seed of the live predictions' noise; -1: the model's default stream seed", (-1, 2**31 - 1)),
    "guidance_scale": ParamSpec(0.0, "action-free guidance of the live predictions: 0 = the model's default (per action "
                                "kind where its config sets one), 1 = off (one model pass, about 2x faster)", (0.0, 20.0)),
    "key_linear_threshold": ParamSpec(0.05, "keys modality: speed [m/s] that presses forward/back/left/right", (1e-4, 100.0)),
    "key_angular_threshold": ParamSpec(0.15, "keys modality: yaw rate [rad/s] that presses a turn key", (1e-4, 100.0)),
}
