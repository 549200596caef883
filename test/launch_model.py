"""launch/predictor.launch.py read as source (its AST), without any launch library.

``launch`` and ``launch_ros`` have no PyPI wheels, so ``ros2 launch`` cannot run on pip-only machines, and a
stand-in launch library would only check the file against itself. Instead the file's
``generate_launch_description`` is evaluated here for the few constructs it uses (each one's import path
is checked to be the real launch / launch_ros module), substitutions are resolved against a real install
space, and each Node becomes the command line launch_ros would run. A construct this model does not know
fails loudly, so a change to the launch file cannot slip past the checks.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def setup_py_console_scripts() -> dict[str, str]:
    """setup.py's console scripts: {name: "module:function"} (read from its AST)."""
    scripts = {}
    for node in ast.walk(ast.parse((REPO / "setup.py").read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.match(r"^[\w-]+ = [\w.]+:\w+$", node.value):
            name, target = (part.strip() for part in node.value.split("="))
            scripts[name] = target
    return scripts


# The launch constructs the file may use, and the real modules that define them.
KNOWN = {
    "LaunchDescription": "launch",
    "DeclareLaunchArgument": "launch.actions",
    "IfCondition": "launch.conditions",
    "LaunchConfiguration": "launch.substitutions",
    "PathJoinSubstitution": "launch.substitutions",
    "Node": "launch_ros.actions",
    "ParameterValue": "launch_ros.parameter_descriptions",
    "FindPackageShare": "launch_ros.substitutions",
}


@dataclass
class Construct:
    """One call of a launch class: its name and (unresolved) arguments."""

    name: str
    args: list[Any]
    kwargs: dict[str, Any]


@dataclass
class Argument:
    name: str
    default: Any
    description: str


@dataclass
class NodeCommand:
    """A launch_ros Node resolved for one set of launch arguments."""

    package: str
    executable: str
    name: str
    namespace: str
    parameter_files: list[Path]
    parameters: dict[str, Any]
    remappings: list[tuple[str, str]]
    condition: bool
    used_configurations: set[str] = field(default_factory=set)

    def ros_args(self) -> list[str]:
        """``--ros-args`` as launch_ros passes them (dict parameters as -p, as its temporary file would)."""
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            args += ["-r", f"__ns:=/{self.namespace.strip('/')}"]
        for path in self.parameter_files:
            args += ["--params-file", str(path)]
        for key, value in self.parameters.items():
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            args += ["-p", f"{key}:={text}"]
        for source, target in self.remappings:
            args += ["-r", f"{source}:={target}"]
        return args


class LaunchModel:
    """``generate_launch_description`` of ``path``, evaluated symbolically."""

    def __init__(self, path: Path) -> None:
        tree = ast.parse(path.read_text(), filename=str(path))
        self.imports = {alias.name: node.module for node in tree.body if isinstance(node, ast.ImportFrom)
                        for alias in node.names}
        for name, module in self.imports.items():
            if KNOWN.get(name) != module:
                raise AssertionError(f"{path.name} imports {name} from {module}; this check knows "
                                     f"{', '.join(f'{k} from {v}' for k, v in KNOWN.items())}")
        functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description"]
        if len(functions) != 1:
            raise AssertionError(f"{path.name} has no generate_launch_description()")
        scope: dict[str, Any] = {}
        description = None
        for statement in functions[0].body:
            if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
                continue  # docstring
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name):
                scope[statement.targets[0].id] = self._eval(statement.value, scope)
            elif isinstance(statement, ast.Return):
                description = self._eval(statement.value, scope)
            else:
                raise AssertionError(f"{path.name}:{statement.lineno}: a statement this check does not model")
        if not (isinstance(description, Construct) and description.name == "LaunchDescription"):
            raise AssertionError(f"{path.name}: generate_launch_description() does not return a LaunchDescription")
        (entities,) = description.args
        self.arguments = {}
        self.nodes: list[Construct] = []
        for entity in entities:
            if entity.name == "DeclareLaunchArgument":
                (name,) = entity.args
                self.arguments[name] = Argument(name, entity.kwargs.get("default_value"), entity.kwargs.get("description", ""))
            elif entity.name == "Node":
                self.nodes.append(entity)
            else:
                raise AssertionError(f"{path.name}: launch entity {entity.name} is not modelled")

    def _eval(self, node: ast.AST, scope: dict[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            values = [self._eval(element, scope) for element in node.elts]
            return values if isinstance(node, ast.List) else tuple(values)
        if isinstance(node, ast.Dict):
            return {self._eval(k, scope): self._eval(v, scope) for k, v in zip(node.keys, node.values)}
        if isinstance(node, ast.Name):
            if node.id in scope:
                return scope[node.id]
            if node.id in ("bool", "str", "int", "float"):
                return node.id
            raise AssertionError(f"line {node.lineno}: unknown name {node.id}")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self._eval(node.left, scope) + self._eval(node.right, scope)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in KNOWN:
            if node.func.id not in self.imports:
                raise AssertionError(f"line {node.lineno}: {node.func.id} is used but not imported")
            return Construct(node.func.id, [self._eval(a, scope) for a in node.args],
                             {k.arg: self._eval(k.value, scope) for k in node.keywords})
        raise AssertionError(f"line {getattr(node, 'lineno', '?')}: {ast.dump(node)[:80]} is not modelled")

    # ------------------------------------------------------------------ resolving
    def resolve(self, value: Any, arguments: dict[str, str], share_dir, used: set[str]) -> Any:
        """``value`` with substitutions replaced: launch arguments from ``arguments`` (else their defaults),
        FindPackageShare(pkg) by ``share_dir(pkg)``."""
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        if isinstance(value, list):
            return [self.resolve(v, arguments, share_dir, used) for v in value]
        if isinstance(value, tuple):
            return tuple(self.resolve(v, arguments, share_dir, used) for v in value)
        if isinstance(value, dict):
            return {k: self.resolve(v, arguments, share_dir, used) for k, v in value.items()}
        if value.name == "LaunchConfiguration":
            (name,) = value.args
            if name not in self.arguments:
                raise AssertionError(f"LaunchConfiguration({name!r}) names no declared launch argument")
            used.add(name)
            raw = arguments.get(name, self.arguments[name].default)
            return self.resolve(raw, arguments, share_dir, used)
        if value.name == "PathJoinSubstitution":
            (parts,) = value.args
            return os.path.join(*(str(self.resolve(p, arguments, share_dir, used)) for p in parts))
        if value.name == "FindPackageShare":
            (package,) = value.args
            return str(share_dir(package))
        if value.name == "ParameterValue":
            text = self.resolve(value.args[0], arguments, share_dir, used)
            typed = yaml.safe_load(text)
            expected = value.kwargs.get("value_type")
            if expected == "bool" and not isinstance(typed, bool):
                raise AssertionError(f"ParameterValue({text!r}, value_type=bool) is not a bool")
            return typed
        if value.name == "IfCondition":
            text = str(self.resolve(value.args[0], arguments, share_dir, used)).lower()
            if text not in ("true", "false", "1", "0"):
                raise AssertionError(f"IfCondition of {text!r}: launch accepts true/false/1/0")
            return text in ("true", "1")
        raise AssertionError(f"{value.name} cannot be resolved here")

    def node_commands(self, arguments: dict[str, str], share_dir) -> list[NodeCommand]:
        unknown = set(arguments) - set(self.arguments)
        if unknown:
            raise AssertionError(f"launch arguments {sorted(unknown)} are not declared")
        commands = []
        for node in self.nodes:
            used: set[str] = set()
            kwargs = {k: self.resolve(v, arguments, share_dir, used) for k, v in node.kwargs.items()}
            files, parameters = [], {}
            for entry in kwargs.get("parameters", []):
                if isinstance(entry, dict):
                    parameters.update(entry)
                else:
                    files.append(Path(entry))
            commands.append(NodeCommand(
                package=kwargs["package"], executable=kwargs["executable"], name=kwargs["name"],
                namespace=kwargs.get("namespace", "") or "", parameter_files=files, parameters=parameters,
                remappings=[tuple(r) for r in kwargs.get("remappings", [])], condition=kwargs.get("condition", True),
                used_configurations=used))
        return commands
