"""Robot profiles: one YAML file describing a robot's data, read by astra-train, astra-eval and the predictor.

A profile names the robot's action ``modality``, its ``topics`` and how its conventions differ from the
model's (axis signs of its commands, the frame its pose topic describes, intrinsics when it publishes no
camera_info). Example (``config/robots/`` holds this project's scenes)::

    modality: twist                # camera | robot | twist | keys
    topics:                        # absolute topic names as recorded
      image: /front_cam/image      # sensor_msgs/Image or CompressedImage (required)
      camera_info: /front_cam/info # sensor_msgs/CameraInfo
      twist: /base/twist           # Twist, TwistStamped or Odometry (twist/keys; or give odom alone)
    twist_stamped: true            # the twist topic is TwistStamped (the node subscribes with that type)
    twist_signs:                   # -1 flips an axis to REP-103 (x forward, y left, z up; +yaw turns left)
      angular: [1, 1, -1]
    intrinsics: {width: 80, height: 60, fx: 69.3, fy: 69.3, cx: 40.0, cy: 30.0}   # when no camera_info

Every error is a :class:`ProfileError` (a ``ValueError``) naming the file and the bad key. Every topic a
profile names must be in every bag read through it; :meth:`RobotProfile.check_bags` lists all that are
missing, in all bags, in one error. No rclpy here: the node maps the fields onto its own parameters.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable

import yaml

from astra_ros.data.yaml_files import DuplicateKeyError, load_yaml_unique_keys

from astra_ros.data.actions import MODALITIES
from astra_ros.data.bag_files import BagError, bag_topics
from astra_ros.data.bags import BagTopics
from astra_ros.data.conventions import POSE_FRAMES, BagConventions
from astra_ros.data.geometry import PinholeIntrinsics

PROFILE_KEYS = ("name", "modality", "topics", "twist_stamped", "twist_signs", "pose_frame", "camera_in_base",
                "intrinsics")
TOPIC_KEYS = ("image", "camera_info", "pose", "ee_pose", "gripper", "twist", "odom")
INTRINSICS_KEYS = ("width", "height", "fx", "fy", "cx", "cy")
BAG_LISTING_LIMIT = 20  # bags listed by name in a missing-topics error; the rest are counted


class ProfileError(BagError):
    """A profile file is unusable, or bags lack topics it names. A BagError (so a ValueError): the
    command-line tools report it as they report a bad bag."""


@dataclass(frozen=True)
class ProfileTopics:
    """The topics a profile names; None where the robot has no such topic."""

    image: str
    camera_info: str | None = None  # sensor_msgs/CameraInfo
    pose: str | None = None  # the camera's pose in the world (see pose_frame): camera modality
    ee_pose: str | None = None  # end-effector pose in the base frame: robot modality
    gripper: str | None = None  # std_msgs/Float32 or Float64 opening [m]: robot modality
    twist: str | None = None  # Twist, TwistStamped or Odometry command: twist and keys modalities
    odom: str | None = None  # nav_msgs/Odometry of a mobile base

    def named(self) -> dict[str, str]:
        """``{key: topic}`` of the topics the profile names."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class RobotProfile:
    """A robot's data as one profile file describes it. Built by :func:`load_profile`."""

    name: str
    modality: str  # camera | robot | twist | keys
    topics: ProfileTopics
    twist_stamped: bool  # the twist topic's type is geometry_msgs/TwistStamped (else Twist)
    conventions: BagConventions  # axis signs, pose frame, camera on the base, fallback intrinsics
    path: str | None = None  # the file it was read from

    @property
    def twist_source(self) -> str:
        """Where twist/keys actions come from: ``odom`` (the odometry's twist) when the profile names odometry
        and no twist topic, else ``twist`` (the twist topic)."""
        return "odom" if self.topics.twist is None and self.topics.odom is not None else "twist"

    def bag_topics(self) -> BagTopics:
        """The names :func:`astra_ros.data.bags.read_episode` reads. Topics the profile does not name get
        an empty name, which no bag has (so an optional one is simply absent)."""
        t = self.topics
        twist = t.twist if t.twist is not None else t.odom  # odometry's twist stands in for commands
        return BagTopics(image=t.image, camera_info=t.camera_info or "", camera_pose=t.pose or "",
                         ee_pose=t.ee_pose or "", gripper=t.gripper or "", twist=twist or "", odom=t.odom or "")

    def reading(self) -> dict[str, Any]:
        """What decides the actions read from a bag (modality, topic names, conventions), as JSON types:
        two profiles that read bags alike give equal readings, whatever their names or files."""
        return json.loads(json.dumps({"modality": self.modality, "topics": asdict(self.bag_topics()),
                                      "conventions": asdict(self.conventions)}))

    def missing_topics(self, available: dict[str, str]) -> list[str]:
        """The problems of one bag (``{topic: msgtype}``): topics it lacks, and a twist topic whose type is
        not the one ``twist_stamped`` says (the node would subscribe with the wrong type and hear nothing)."""
        problems = [f"{topic} ({key})" for key, topic in self.topics.named().items() if topic not in available]
        twist = self.topics.twist
        if twist in available and available[twist] in ("geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistStamped"):
            stamped = available[twist] == "geometry_msgs/msg/TwistStamped"
            if stamped != self.twist_stamped:
                problems.append(f"{twist} is {available[twist]} but the profile says twist_stamped: "
                                f"{str(self.twist_stamped).lower()}")
        return problems

    def check_bags(self, bags: Iterable[Path | str]) -> None:
        """Raise one :class:`ProfileError` listing every topic of this profile missing from any of ``bags``
        (and every twist type that disagrees with ``twist_stamped``); nothing when all bags have them."""
        bad: list[str] = []
        count = 0
        for bag in bags:
            count += 1
            problems = self.missing_topics(bag_topics(bag))
            if problems:
                bad.append(f"  {bag}: {', '.join(problems)}")
        if bad:
            shown = bad[:BAG_LISTING_LIMIT] + ([f"  ... and {len(bad) - BAG_LISTING_LIMIT} more bags"]
                                               if len(bad) > BAG_LISTING_LIMIT else [])
            raise ProfileError(f"profile {self.path or self.name}: {len(bad)} of {count} bags lack topics it names "
                               "(fix the topics in the profile, or drop those it names but the robot does not "
                               "record):\n" + "\n".join(shown))

    def node_parameters(self) -> dict[str, Any]:
        """The predictor node's parameters this profile sets: ``action_modality``, ``twist_source``,
        ``twist_stamped``. Topic names are in :meth:`node_remappings`, signs in :attr:`conventions`."""
        return {"action_modality": self.modality, "twist_source": self.twist_source,
                "twist_stamped": self.twist_stamped}

    def node_remappings(self) -> dict[str, str]:
        """``{node input: topic}`` for the predictor's inputs ``image``, ``camera_info``, ``pose``, ``twist``
        and ``odom`` that the profile names; ``pose`` is the camera pose, or the end-effector pose for the
        robot modality (the node's one pose input)."""
        t = self.topics
        pose = t.ee_pose if self.modality == "robot" else t.pose
        named = {"image": t.image, "camera_info": t.camera_info, "pose": pose, "twist": t.twist, "odom": t.odom}
        return {key: topic for key, topic in named.items() if topic is not None}


def load_profile(path: Path | str) -> RobotProfile:
    """Read and check a profile file; raises :class:`ProfileError` naming the file and the bad key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ProfileError(f"profile {path} does not exist") from err
    except (IsADirectoryError, UnicodeDecodeError) as err:
        raise ProfileError(f"profile {path} is not a readable YAML text file ({err})") from err
    try:
        data = load_yaml_unique_keys(text)
    except yaml.YAMLError as err:
        raise ProfileError(f"profile {path}: invalid YAML: {err}") from err
    except DuplicateKeyError as err:
        raise ProfileError(f"profile {path}: {err}") from err
    try:
        return profile_from_dict(data, default_name=path.stem, path=str(path))
    except ProfileError as err:
        raise ProfileError(f"profile {path}: {err}") from err


def profile_from_dict(data: Any, default_name: str = "robot", path: str | None = None) -> RobotProfile:
    """A :class:`RobotProfile` from a profile's parsed YAML; raises :class:`ProfileError` naming the key."""
    if not isinstance(data, dict):
        raise ProfileError(f"a profile must be a mapping with at least 'modality' and 'topics', got {_kind(data)}")
    unknown = sorted(set(map(str, data)) - set(PROFILE_KEYS))
    if unknown:
        raise ProfileError(f"unknown keys {unknown}; known: {list(PROFILE_KEYS)}")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise ProfileError(f"'name' must be a non-empty string, got {name!r}")
    modality = data.get("modality")
    if modality not in MODALITIES:
        raise ProfileError(f"'modality' must be one of {', '.join(MODALITIES)}, got {modality!r}")
    topics = _topics(data.get("topics"), modality)
    twist_stamped = data.get("twist_stamped", False)
    if not isinstance(twist_stamped, bool):
        raise ProfileError(f"'twist_stamped' must be true or false, got {twist_stamped!r}")
    if "twist_signs" in data and topics.twist is None and topics.odom is None:
        raise ProfileError("'twist_signs' is given but 'topics' names no twist or odom topic it would apply to")
    pose_frame = data.get("pose_frame", "camera_optical")
    if pose_frame not in POSE_FRAMES:
        raise ProfileError(f"'pose_frame' must be one of {', '.join(POSE_FRAMES)}, got {pose_frame!r}")
    camera_in_base = _camera_in_base(data.get("camera_in_base"))
    if pose_frame == "base" and camera_in_base is None:
        raise ProfileError("'pose_frame: base' needs 'camera_in_base' (the camera optical frame in the base frame)")
    if pose_frame != "base" and camera_in_base is not None:
        raise ProfileError(f"'camera_in_base' is only used with 'pose_frame: base', not {pose_frame!r}")
    conventions = BagConventions(twist_signs=_twist_signs(data.get("twist_signs")), pose_frame=pose_frame,
                                 camera_in_base=camera_in_base, intrinsics=_intrinsics(data.get("intrinsics")))
    return RobotProfile(name, modality, topics, twist_stamped, conventions, path)


def _kind(value: Any) -> str:
    return "nothing (an empty file?)" if value is None else f"{type(value).__name__} {value!r}"[:80]


def _topics(raw: Any, modality: str) -> ProfileTopics:
    if not isinstance(raw, dict):
        raise ProfileError(f"'topics' must be a mapping of {', '.join(TOPIC_KEYS)} to topic names, got {_kind(raw)}")
    unknown = sorted(set(map(str, raw)) - set(TOPIC_KEYS))
    if unknown:
        raise ProfileError(f"unknown keys {unknown} in 'topics'; known: {list(TOPIC_KEYS)}")
    for key, topic in raw.items():
        if not isinstance(topic, str) or not topic.startswith("/") or len(topic) < 2 or any(c.isspace() for c in topic):
            raise ProfileError(f"'topics.{key}' must be an absolute topic name such as /camera/image_raw, got {topic!r}")
    if "image" not in raw:
        raise ProfileError("'topics.image' is missing: every modality needs the camera images")
    topics = ProfileTopics(**raw)
    needed = {"camera": ("pose",), "robot": ("ee_pose",), "twist": ("twist", "odom"), "keys": ("twist", "odom")}[modality]
    if all(getattr(topics, key) is None for key in needed):
        raise ProfileError(f"modality {modality!r} needs 'topics.{needed[0]}'"
                           + (f" (or 'topics.{needed[1]}', whose twist is then used)" if len(needed) > 1 else ""))
    return topics


def _numbers(raw: Any, count: int, key: str) -> tuple[float, ...]:
    if (not isinstance(raw, (list, tuple)) or len(raw) != count
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in raw)):
        raise ProfileError(f"'{key}' must be a list of {count} finite numbers, got {raw!r}")
    return tuple(float(v) for v in raw)


def _twist_signs(raw: Any) -> tuple[float, float, float, float, float, float]:
    if raw is None:
        return (1.0,) * 6
    if not isinstance(raw, dict) or set(map(str, raw)) - {"linear", "angular"}:
        raise ProfileError(f"'twist_signs' must be a mapping with 'linear' and/or 'angular' [x, y, z] signs, got {raw!r}")
    signs = []
    for part in ("linear", "angular"):
        values = _numbers(raw.get(part, [1, 1, 1]), 3, f"twist_signs.{part}")
        if any(v not in (1.0, -1.0) for v in values):
            raise ProfileError(f"'twist_signs.{part}' must hold 1 or -1 per axis, got {list(values)}")
        signs += values
    return tuple(signs)  # type: ignore[return-value]


def _camera_in_base(raw: Any) -> tuple[float, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(map(str, raw)) != {"translation", "quaternion_xyzw"}:
        raise ProfileError("'camera_in_base' must be a mapping of 'translation' [x, y, z] (m) and "
                           f"'quaternion_xyzw' [qx, qy, qz, qw], got {raw!r}")
    translation = _numbers(raw["translation"], 3, "camera_in_base.translation")
    quaternion = _numbers(raw["quaternion_xyzw"], 4, "camera_in_base.quaternion_xyzw")
    norm = math.sqrt(sum(v * v for v in quaternion))
    if abs(norm - 1.0) > 1e-3:  # a typo, not rounding: a unit quaternion written to 3 decimals is within this
        raise ProfileError(f"'camera_in_base.quaternion_xyzw' must be a unit quaternion, got norm {norm:.4f}")
    return translation + tuple(v / norm for v in quaternion)


def _intrinsics(raw: Any) -> PinholeIntrinsics | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(map(str, raw)) != set(INTRINSICS_KEYS):
        raise ProfileError(f"'intrinsics' must be a mapping of exactly {', '.join(INTRINSICS_KEYS)} (px), got {raw!r}")
    for key in INTRINSICS_KEYS:
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ProfileError(f"'intrinsics.{key}' must be a finite number > 0, got {value!r}")
    for key in ("width", "height"):
        if raw[key] != int(raw[key]):
            raise ProfileError(f"'intrinsics.{key}' must be a whole number of pixels, got {raw[key]!r}")
    return PinholeIntrinsics(int(raw["width"]), int(raw["height"]), float(raw["fx"]), float(raw["fy"]),
                             float(raw["cx"]), float(raw["cy"]))
