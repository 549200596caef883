"""MJCF building blocks shared by the scenes: random colours and textures, lights, a room with posters and objects.

Every random choice is drawn from the caller's generator, so a scene is a function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from astra_ros.data.scenes.types import SimSettings


def _rgb(rng: np.random.Generator, low: float = 0.1, high: float = 0.95) -> str:
    return " ".join(f"{value:.3f}" for value in rng.uniform(low, high, size=3))


def _vivid_rgba(rng: np.random.Generator) -> str:
    """A saturated colour so objects stand out from the textures."""
    hue = rng.uniform(0.0, 1.0)
    channels = np.clip(np.abs((hue * 6.0 + np.array([0.0, 4.0, 2.0])) % 6.0 - 3.0) - 1.0, 0.0, 1.0)
    value = rng.uniform(0.55, 1.0)
    saturation = rng.uniform(0.55, 1.0)
    colour = value * (1.0 - saturation + saturation * channels)
    return " ".join(f"{c:.3f}" for c in colour) + " 1"


def _random_texture(rng: np.random.Generator, name: str, size: int = 256) -> str:
    """A 2D builtin texture (checker, gradient or random marks) with seed-dependent colours."""
    builtin = rng.choice(["checker", "gradient", "checker", "flat"])
    mark = rng.choice(["none", "edge", "random", "cross"]) if builtin != "flat" else "random"
    extra = f' random="{rng.uniform(0.02, 0.15):.3f}" markrgb="{_rgb(rng)}"' if mark == "random" else ""
    if mark in ("edge", "cross"):
        extra = f' markrgb="{_rgb(rng)}"'
    return (
        f'<texture name="{name}" type="2d" builtin="{builtin}" rgb1="{_rgb(rng)}" rgb2="{_rgb(rng)}" '
        f'mark="{mark}"{extra} width="{size}" height="{size}"/>'
    )


def _look_at_xyaxes(position: np.ndarray, target: np.ndarray) -> str:
    """MJCF ``xyaxes`` of a camera at ``position`` looking at ``target`` with the world z axis up."""
    forward = target - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return " ".join(f"{v:.5f}" for v in np.concatenate([right, up]))


def _lights(rng: np.random.Generator, half_x: float, half_y: float, height: float) -> str:
    lights = []
    for index in range(int(rng.integers(1, 4))):
        position = (rng.uniform(-half_x, half_x) * 0.7, rng.uniform(-half_y, half_y) * 0.7, height * 0.95)
        diffuse = rng.uniform(0.35, 0.8)
        lights.append(
            f'<light name="light{index}" pos="{position[0]:.3f} {position[1]:.3f} {position[2]:.3f}" dir="0 0 -1" '
            f'diffuse="{diffuse:.3f} {diffuse:.3f} {diffuse:.3f}" castshadow="false"/>'
        )
    return "\n".join(lights)


@dataclass(frozen=True)
class _Obstacle:
    x: float
    y: float
    radius: float  # [m] footprint radius used to keep the moving camera out of it


def _room_mjcf(
    rng: np.random.Generator, half_x: float, half_y: float, height: float, settings: SimSettings
) -> tuple[str, str]:
    """Assets and world-body MJCF of a textured room (floor, 4 walls, ceiling) centred on the origin."""
    assets = "\n".join(
        [
            _random_texture(rng, "floor_tex"),
            _random_texture(rng, "wall_tex"),
            _random_texture(rng, "ceiling_tex"),
            f'<material name="floor_mat" texture="floor_tex" texrepeat="{rng.uniform(1, 4):.2f} {rng.uniform(1, 4):.2f}" texuniform="true"/>',
            f'<material name="wall_mat" texture="wall_tex" texrepeat="{rng.uniform(1.5, 4):.2f} {rng.uniform(1.5, 4):.2f}" texuniform="true"/>',
            '<material name="ceiling_mat" texture="ceiling_tex" texrepeat="1 1" texuniform="true"/>',
        ]
    )
    thickness = 0.1
    walls = [
        ("wall_n", 0.0, half_y + thickness, half_x + thickness, thickness),
        ("wall_s", 0.0, -half_y - thickness, half_x + thickness, thickness),
        ("wall_e", half_x + thickness, 0.0, thickness, half_y + thickness),
        ("wall_w", -half_x - thickness, 0.0, thickness, half_y + thickness),
    ]
    bodies = [
        f'<geom name="floor" type="plane" size="{half_x + 1:.3f} {half_y + 1:.3f} 0.1" material="floor_mat"/>',
        f'<geom name="ceiling" type="box" pos="0 0 {height + thickness:.3f}" size="{half_x:.3f} {half_y:.3f} {thickness}" material="ceiling_mat"/>',
    ]
    for name, x, y, size_x, size_y in walls:
        bodies.append(
            f'<geom name="{name}" type="box" pos="{x:.3f} {y:.3f} {height / 2:.3f}" '
            f'size="{size_x:.3f} {size_y:.3f} {height / 2:.3f}" material="wall_mat"/>'
        )
    bodies.append(_wall_posters_mjcf(rng, half_x, half_y, height))
    bodies.append(_lights(rng, half_x, half_y, height))
    return assets, "\n".join(bodies)


def _wall_posters_mjcf(rng: np.random.Generator, half_x: float, half_y: float, height: float) -> str:
    """Flat coloured panels on the walls, so every view of a wall has landmarks."""
    panels = []
    for index in range(int(rng.integers(8, 16))):
        wall = int(rng.integers(4))
        half_width = rng.uniform(0.15, 0.6)
        half_height = rng.uniform(0.15, 0.6)
        z = rng.uniform(half_height + 0.1, height - half_height - 0.1)
        along = rng.uniform(-1.0, 1.0)
        if wall < 2:
            x, y = along * (half_x - half_width), (half_y - 0.01) * (1 if wall == 0 else -1)
            size = f"{half_width:.3f} 0.01 {half_height:.3f}"
        else:
            x, y = (half_x - 0.01) * (1 if wall == 2 else -1), along * (half_y - half_width)
            size = f"0.01 {half_width:.3f} {half_height:.3f}"
        panels.append(
            f'<geom name="poster{index}" type="box" pos="{x:.3f} {y:.3f} {z:.3f}" size="{size}" '
            f'rgba="{_vivid_rgba(rng)}" contype="0" conaffinity="0"/>'
        )
    return "\n".join(panels)


def _room_objects_mjcf(
    rng: np.random.Generator, half_x: float, half_y: float, count: int, keep_clear_radius: float
) -> tuple[str, str, list[_Obstacle]]:
    """Static coloured boxes, cylinders and spheres on the floor, away from the start area at the origin."""
    assets = []
    geoms = []
    obstacles: list[_Obstacle] = []
    for index in range(count):
        for _ in range(50):
            x = rng.uniform(-half_x + 0.4, half_x - 0.4)
            y = rng.uniform(-half_y + 0.4, half_y - 0.4)
            radius = rng.uniform(0.12, 0.4)
            clear_of_start = np.hypot(x, y) > keep_clear_radius + radius
            clear_of_others = all(np.hypot(x - o.x, y - o.y) > o.radius + radius + 0.1 for o in obstacles)
            if clear_of_start and clear_of_others:
                break
        else:
            continue
        kind = rng.choice(["box", "cylinder", "sphere", "box", "cylinder"])
        material = ""
        if rng.uniform() < 0.35:
            assets.append(_random_texture(rng, f"object_tex{index}", size=64))
            assets.append(f'<material name="object_mat{index}" texture="object_tex{index}" texrepeat="2 2"/>')
            material = f' material="object_mat{index}"'
        rgba = _vivid_rgba(rng)
        if kind == "box":
            half_height = rng.uniform(0.1, 0.8)
            size = f"{radius * 0.7:.3f} {radius * 0.7:.3f} {half_height:.3f}"
            z = half_height
            yaw = rng.uniform(0.0, np.pi)
            geoms.append(
                f'<geom name="object{index}" type="box" pos="{x:.3f} {y:.3f} {z:.3f}" euler="0 0 {yaw:.3f}" '
                f'size="{size}" rgba="{rgba}"{material}/>'
            )
        elif kind == "cylinder":
            half_height = rng.uniform(0.1, 0.9)
            geoms.append(
                f'<geom name="object{index}" type="cylinder" pos="{x:.3f} {y:.3f} {half_height:.3f}" '
                f'size="{radius:.3f} {half_height:.3f}" rgba="{rgba}"{material}/>'
            )
        else:
            geoms.append(
                f'<geom name="object{index}" type="sphere" pos="{x:.3f} {y:.3f} {radius:.3f}" '
                f'size="{radius:.3f}" rgba="{rgba}"{material}/>'
            )
        obstacles.append(_Obstacle(float(x), float(y), float(radius)))
    return "\n".join(assets), "\n".join(geoms), obstacles


def _mjcf_document(assets: str, worldbody: str, settings: SimSettings, extra: str = "") -> str:
    return f"""<mujoco model="astra_scene">
  <compiler angle="radian" autolimits="true"/>
  <visual>
    <global offwidth="{max(settings.image_width, 64)}" offheight="{max(settings.image_height, 64)}"/>
    <headlight ambient="0.3 0.3 0.3" diffuse="0.3 0.3 0.3"/>
    <quality shadowsize="0"/>
  </visual>
  <asset>
{assets}
  </asset>
{extra}
  <worldbody>
{worldbody}
  </worldbody>
</mujoco>"""
