"""YAML config files validated by pydantic, with errors that name file and line.

Every config file llmmesh reads (routing, static discovery, mock behaviour,
agent profiles) goes through `load_yaml_model`, so a bad file always fails
the same way: `ConfigError("routing.yaml:12: models.gpt.provider: ...")`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from services.common.settings import ConfigError

_M = TypeVar("_M", bound=BaseModel)
Position = tuple[str | int, ...]


class ConfigProblem(Exception):  # noqa: N818 - reads as "raise ConfigProblem(path, message)"
    """Raised by a model's cross-field validators to blame one path of the file.

    Pydantic passes non-ValueError exceptions through, so the path survives
    and `parse_yaml_model` can name the line it came from.
    """

    def __init__(self, path: Position, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def load_yaml_model(model: type[_M], path: str | Path) -> _M:
    """Reads and validates a YAML file, or raises ConfigError naming file, line and problem."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{name}: cannot read: {error.strerror}") from None
    return parse_yaml_model(model, text, name)


def load_packaged_yaml_model(model: type[_M], package: str, resource: str) -> _M:
    """Reads an embedded default shipped inside a package."""
    text = resources.files(package).joinpath(resource).read_text(encoding="utf-8")
    return parse_yaml_model(model, text, f"<embedded {package}/{resource}>")


def parse_yaml_model(model: type[_M], text: str, name: str) -> _M:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{name}{where}: not valid YAML: {error.problem}") from None
    lines: dict[Position, int] = {}
    try:
        data = _to_python(node, (), lines, yaml.SafeLoader("")) if node is not None else {}
    except _DuplicateKeyError as error:
        raise ConfigError(f"{name}:{error.line}: key {error.key!r} appears twice") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = []
        for issue in error.errors():
            location: Position = tuple(issue["loc"])
            line = _closest_line(location, lines)
            where = ".".join(str(part) for part in location) or "(top level)"
            problems.append(f"{name}:{line}: {where}: {issue['msg']}")
        raise ConfigError("\n".join(problems)) from None
    except ConfigProblem as problem:
        where = ".".join(str(part) for part in problem.path)
        raise ConfigError(f"{name}:{_closest_line(problem.path, lines)}: {where}: {problem.message}") from None


class _DuplicateKeyError(Exception):
    def __init__(self, line: int, key: Any) -> None:
        self.line = line
        self.key = key


def _to_python(node: yaml.Node, position: Position, lines: dict[Position, int], loader: yaml.SafeLoader) -> Any:
    """Builds plain data from the node tree, recording the line of every path."""
    lines[position] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in result:
                raise _DuplicateKeyError(key_node.start_mark.line + 1, key)
            lines[(*position, key)] = key_node.start_mark.line + 1
            result[key] = _to_python(value_node, (*position, key), lines, loader)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, (*position, index), lines, loader) for index, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _closest_line(location: Position, lines: dict[Position, int]) -> int:
    for end in range(len(location), -1, -1):
        line = lines.get(location[:end])
        if line is not None:
            return line
    return 1
