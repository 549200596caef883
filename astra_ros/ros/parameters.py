"""Declared ROS 2 parameters shared by the nodes: a spec per parameter, its descriptor, its checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: default, description, optional (low, high) range, read-only after start, choices."""

    default: Any
    description: str
    range: tuple[float, float] | None = None
    read_only: bool = False
    choices: tuple[str, ...] = ()

    def violation(self, value: Any) -> str | None:
        """Why ``value`` breaks this spec's choices or range (None when it does not)."""
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}, got {value!r}"
        if self.range is not None and not self.range[0] <= value <= self.range[1]:
            return f"must be in [{self.range[0]}, {self.range[1]}], got {value}"
        return None


def parameter_usage(parameters: dict[str, ParamSpec]) -> str:
    """The parameters as ``--help`` lists them: name, default, range or choices, description."""
    lines = []
    for name, spec in parameters.items():
        limits = f", in [{spec.range[0]}, {spec.range[1]}]" if spec.range is not None else ""
        fixed = ", read-only after start" if spec.read_only else ""
        choices = f" (one of: {', '.join(spec.choices)})" if spec.choices else ""
        lines.append(f"  {name} (default {spec.default!r}{limits}{fixed})\n      {spec.description}{choices}")
    return "\n".join(lines)


def descriptor(name: str, spec: ParamSpec) -> ParameterDescriptor:
    """The descriptor rclpy declares: description (with the choices), read-only flag, typed range."""
    description = spec.description + (f" (one of: {', '.join(spec.choices)})" if spec.choices else "")
    result = ParameterDescriptor(name=name, description=description, read_only=spec.read_only)
    if spec.range is not None:
        low, high = spec.range
        if isinstance(spec.default, int) and not isinstance(spec.default, bool):
            result.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
        else:
            result.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
    return result
