"""Rule sets as YAML: `dump` writes what `show` prints, `load` reads a file back and refuses it
with every problem found, each naming its line and the fix.

    version: 3                          # these four are assigned by `publish`: ignored on input
    published_by: alice
    published_at: '2026-11-30T09:12:44+00:00'
    reason: payroll day: more payments per minute are normal
    rules:
      velocity:
        enabled: true
        severity: medium                # low | medium | high | critical
        parameters:
          velocity_count: 12
          velocity_window_s: 60.0
      ...                               # every rule, every parameter: a version is complete

Files are strict (a missing or unknown rule or parameter is an error, so what is published is
exactly what was reviewed). A stored version runs only when complete (`check_stored`); tools that
only show one read it leniently (`RuleSet.from_document`).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
import yaml.constructor
import yaml.nodes
from yaml.nodes import Node

from consumer.rulesets.model import (
    PARAMETERS,
    RULE_NAMES,
    SHARED,
    ParameterSpec,
    RuleConfig,
    RuleSet,
    StateLimits,
    Value,
    parameters_of,
)
from utils.config import ConsumerSettings, RuleThresholds
from utils.errors import TxmonError
from utils.models import SEVERITIES

__all__ = ["METADATA", "Problem", "RuleSetInvalid", "check_stored", "dump", "load"]

METADATA = ("version", "published_by", "published_at", "reason")
_RULE_KEYS = ("enabled", "severity", "parameters")


@dataclass(frozen=True, slots=True)
class Problem:
    line: int  # 1-based, as editors count
    column: int
    path: str  # where in the document, e.g. rules.velocity.parameters.velocity_count
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"line {self.line}, column {self.column}: {where}{self.message}. Fix: {self.fix}"


class RuleSetInvalid(TxmonError):
    """A rule-set document that cannot be published; `problems` says where and how to fix it."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def dump(rule_set: RuleSet) -> str:
    """The rule set as YAML that `load` reads back to an equal set."""
    if rule_set.version is None:
        header = (
            "# Not published yet: the environment's settings (ALERT_*), in force until the first\n"
            "# `python -m consumer.rulesets publish FILE --reason TEXT`, which stores them as version 1.\n"
        )
    else:
        header = (
            "# Rule set version {v}: edit, then `python -m consumer.rulesets publish FILE --reason TEXT`.\n"
        )
        header = header.format(v=rule_set.version)
    data: dict[str, Any] = {
        "version": rule_set.version,
        "published_by": rule_set.published_by,
        "published_at": None if rule_set.published_at is None else rule_set.published_at.isoformat(),
        "reason": rule_set.reason,
        **rule_set.document(),
    }
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def load(text: str, reference: RuleThresholds | None = None, limits: StateLimits | None = None) -> RuleSet:
    """The rule set in `text`, or RuleSetInvalid listing every problem. `reference` supplies the
    values that fixes suggest (default: the code's defaults); `limits` how far back the
    consumers' account windows reach (default: the code's defaults)."""
    limits = limits or StateLimits.from_settings(ConsumerSettings())
    reader = _Reader(RuleSet.from_thresholds(reference or RuleThresholds()), limits)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise RuleSetInvalid(
            [Problem(line, column, "", f"not valid YAML: {exc.problem or exc}", "correct the syntax here")]
        ) from None
    except yaml.YAMLError as exc:
        raise RuleSetInvalid([Problem(1, 1, "", f"not valid YAML: {exc}", "correct the syntax")]) from None
    rule_set = reader.document(root)
    if reader.problems or rule_set is None:
        raise RuleSetInvalid(reader.problems)
    return rule_set


def _suggest(word: str, known: Iterable[str]) -> str:
    known = list(known)
    close = difflib.get_close_matches(word, known, n=1)
    listed = ", ".join(known)
    return f"did you mean {close[0]!r}? (known: {listed})" if close else f"use one of: {listed}"


class _Reader:
    """Walks the composed YAML nodes (which carry line numbers) and collects problems."""

    def __init__(self, reference: RuleSet, limits: StateLimits) -> None:
        self.reference = reference
        self.limits = limits
        self.problems: list[Problem] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def problem(self, node: Node, path: str, message: str, fix: str) -> None:
        mark = node.start_mark
        self.problems.append(Problem(mark.line + 1, mark.column + 1, path, message, fix))

    def scalar(self, node: Node, path: str) -> tuple[bool, Any]:
        if not isinstance(node, yaml.nodes.ScalarNode):
            self.problem(node, path, "expected a single value, found a list or mapping", "write one value")
            return False, None
        try:
            return True, self._constructor.construct_object(node)
        except yaml.constructor.ConstructorError as exc:
            self.problem(node, path, f"unreadable value: {exc.problem}", "write a plain number or text")
            return False, None

    def mapping(self, node: Node | None, path: str) -> Iterator[tuple[str, Node, Node]]:
        """(key, key node, value node) of a mapping; problems for anything else or repeated keys.
        Problems about a key point at the key's line, problems about a value at the value's."""
        if not isinstance(node, yaml.nodes.MappingNode):
            if node is not None:
                self.problem(node, path, "expected a mapping (key: value lines)", "indent the keys under it")
            return
        seen: set[str] = set()
        for key_node, value_node in node.value:
            ok, key = self.scalar(key_node, path)
            if not ok:
                continue
            if not isinstance(key, str):
                self.problem(key_node, path, f"key {key!r} is not a name", "use a name as the key")
            elif key in seen:
                self.problem(key_node, _join(path, key), "appears twice", "keep one of them")
            else:
                seen.add(key)
                yield key, key_node, value_node

    def document(self, root: Node | None) -> RuleSet | None:
        if root is None:
            first = Problem(1, 1, "", "the file is empty", "start from `python -m consumer.rulesets show`")
            self.problems.append(first)
            return None
        found: dict[str, tuple[Node, Node]] = {}
        for key, key_node, node in self.mapping(root, ""):
            if key in ("rules", SHARED):
                found[key] = (key_node, node)
            elif key not in METADATA:  # `show` prints the metadata, `publish` assigns it
                known = (*METADATA, "rules", SHARED)
                self.problem(key_node, key, f"unknown key {key!r}", _suggest(key, known))
        if not isinstance(root, yaml.nodes.MappingNode):
            return None
        if "rules" not in found:
            self.problem(root, "", "no 'rules' section", "add `rules:` with every rule (see `show`)")
            return None
        rules = self.rules(*found["rules"])
        shared = self.parameters(SHARED, SHARED, *found.get(SHARED, (root, None)))
        if rules is None or shared is None:
            return None
        return RuleSet(rules=rules, shared=shared)

    def rules(self, at: Node, node: Node) -> dict[str, RuleConfig] | None:
        configs: dict[str, RuleConfig | None] = {}
        for name, key_node, rule_node in self.mapping(node, "rules"):
            path = _join("rules", name)
            if name in RULE_NAMES:
                configs[name] = self.rule(name, path, key_node, rule_node)
                continue
            owner = PARAMETERS[name].rule if name in PARAMETERS else None
            fix = f"move it under rules.{owner}.parameters" if owner else _suggest(name, RULE_NAMES)
            self.problem(key_node, path, f"unknown rule {name!r}", fix)
        for name in RULE_NAMES:
            if name not in configs:
                off = f"to turn it off write `enabled: false` under rules.{name}"
                self.problem(at, "rules", f"rule {name!r} is missing", f"add it (copy it from `show`); {off}")
        complete = {name: c for name, c in configs.items() if c is not None}
        if len(complete) != len(RULE_NAMES):
            return None
        return {name: complete[name] for name in RULE_NAMES}

    def rule(self, name: str, path: str, at: Node, node: Node) -> RuleConfig | None:
        before = len(self.problems)
        found: dict[str, tuple[Node, Node]] = {}
        for key, key_node, value_node in self.mapping(node, path):
            if key in _RULE_KEYS:
                found[key] = (key_node, value_node)
            elif key in PARAMETERS:
                where = f"move it under {path}.parameters"
                self.problem(key_node, _join(path, key), f"{key!r} sits directly under the rule", where)
            else:
                self.problem(key_node, _join(path, key), f"unknown key {key!r}", _suggest(key, _RULE_KEYS))
        for key in _RULE_KEYS:
            if key not in found:
                fix = f"add `{key}:` under {path} ({_RULE_KEY_HELP[key]})"
                self.problem(at, path, f"'{key}' is missing", fix)
        enabled = self.choice(found.get("enabled"), _join(path, "enabled"), (True, False), "true or false")
        severity = self.choice(found.get("severity"), _join(path, "severity"), SEVERITIES, "severity")
        parameters = self.parameters(name, _join(path, "parameters"), *found.get("parameters", (at, None)))
        if len(self.problems) > before or parameters is None:
            return None
        return RuleConfig(bool(enabled), str(severity), parameters)

    def choice(self, entry: tuple[Node, Node] | None, path: str, allowed: Sequence[Any], what: str) -> Any:
        if entry is None:
            return None
        ok, value = self.scalar(entry[1], path)
        # `is`: 1 == True in Python, and YAML's 1 is not a boolean
        if ok and not any(value is a or (isinstance(a, str) and value == a) for a in allowed):
            if what == "severity":
                self.problem(entry[1], path, f"unknown severity {value!r}", _suggest(str(value), allowed))
            else:
                self.problem(entry[1], path, f"{value!r} is not {what}", f"write {what}")
        return value

    def parameters(self, owner: str, path: str, at: Node, node: Node | None) -> dict[str, Value] | None:
        specs = {spec.name: spec for spec in parameters_of(owner)}
        if node is None and not specs:
            return {}
        values: dict[str, Value] = {}
        before = len(self.problems)
        for key, key_node, value_node in self.mapping(node, path):
            spec = specs.get(key)
            if spec is None:
                self.unknown_parameter(key, owner, key_node, path, specs)
                continue
            ok, value = self.scalar(value_node, _join(path, key))
            wrong = spec.problem(value) if ok else None
            beyond = self.limits.problem(key, value) if ok and not wrong else None
            if wrong:
                self.problem(value_node, _join(path, key), wrong, self.fix(spec))
            elif beyond:
                self.problem(value_node, _join(path, key), beyond[0], f"write {beyond[1]}")
            elif ok:
                values[key] = spec.coerce(value)
        reported = _reported(self.problems[before:], path)
        for name in specs.keys() - values.keys() - reported:
            fix = f"add `{name}: {self.reference_value(specs[name])}` under {path} (the value of {specs[name].env})"
            self.problem(at, path, f"parameter {name!r} is missing", fix)
        if len(self.problems) == before:
            self.check_together(owner, values, at, path)
        return values if len(self.problems) == before else None

    def unknown_parameter(
        self, key: str, owner: str, node: Node, path: str, specs: dict[str, ParameterSpec]
    ) -> None:
        if key in PARAMETERS:
            other = PARAMETERS[key].rule
            where = SHARED if other == SHARED else f"rules.{other}.parameters"
            message = f"{key!r} is a parameter of {other}, not {owner}"
            self.problem(node, _join(path, key), message, f"move it under {where}")
        elif specs:
            message = f"unknown parameter {key!r} of {owner}"
            self.problem(node, _join(path, key), message, _suggest(key, specs))
        else:
            self.problem(node, _join(path, key), f"{owner} takes no parameters", "remove it")

    def check_together(self, owner: str, values: dict[str, Value], at: Node, path: str) -> None:
        """Values that are each fine but impossible together."""
        if owner == "unusual_hour_high_value" and values["unusual_hour_start"] == values["unusual_hour_end"]:
            hours = f"[{values['unusual_hour_start']}, {values['unusual_hour_end']})"
            self.problem(
                at,
                path,
                f"the window {hours} is empty: the rule could never fire",
                "choose two different hours, or write `enabled: false` to turn the rule off",
            )

    def reference_value(self, spec: ParameterSpec) -> str:
        owner = self.reference.shared if spec.rule == SHARED else self.reference.rules[spec.rule].parameters
        return yaml.safe_dump(owner[spec.name], default_flow_style=True).splitlines()[0]

    def fix(self, spec: ParameterSpec) -> str:
        return f"write {spec.expected()}, e.g. {self.reference_value(spec)} (the value of {spec.env})"


_RULE_KEY_HELP = {
    "enabled": "true or false",
    "severity": " | ".join(SEVERITIES),
    "parameters": "every parameter of the rule",
}


def _reported(problems: list[Problem], path: str) -> set[str]:
    """Parameters under `path` that already have a problem (not to be called missing too)."""
    prefix = path + "."
    return {p.path[len(prefix) :] for p in problems if p.path.startswith(prefix)}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_REPUBLISH = (
    "publish the set again with every rule and parameter (`python -m consumer.rulesets show > set.yaml`, "
    "review what it filled in from your ALERT_* settings, `publish set.yaml --reason TEXT`), or activate "
    "a complete version"
)


def check_stored(stored: object, reference: RuleThresholds, limits: StateLimits) -> RuleSet:
    """A stored version as a consumer would run it, or RuleSetInvalid. It must be complete: a rule
    or parameter the code has and the version lacks (the code gained it since publication, or the
    row was written around `publish`) is refused, never taken from `reference`, this member's
    ALERT_* settings, or members with different settings would run "the same version"
    differently. One the code lost is dropped. Then held to every check a file passes: a wrong
    type or an impossible value never reaches the rules. Problems name their path; their line is
    that of a one-line JSON text."""
    complete = RuleSet.from_thresholds(reference).document()
    if not isinstance(stored, dict) or not isinstance(stored.get("rules"), dict):
        fix = "publish a valid set or activate an earlier version"
        raise RuleSetInvalid([Problem(1, 1, "", "the stored document has no 'rules' mapping", fix)])
    missing: list[Problem] = []
    for name, rule in complete["rules"].items():
        given = stored["rules"].get(name)
        if not isinstance(given, dict):
            missing.append(Problem(1, 1, f"rules.{name}", "the stored version has no such rule", _REPUBLISH))
            continue
        rule.update({k: given[k] for k in ("enabled", "severity") if k in given})
        params = given.get("parameters")
        for key in rule["parameters"]:
            if not isinstance(params, dict) or key not in params:
                missing.append(
                    Problem(
                        1,
                        1,
                        f"rules.{name}.parameters.{key}",
                        "the stored version has no such parameter",
                        _REPUBLISH,
                    )
                )
        _merge_known(rule["parameters"], params)
    if SHARED in complete:
        shared = stored.get(SHARED)
        for key in complete[SHARED]:
            if not isinstance(shared, dict) or key not in shared:
                missing.append(
                    Problem(1, 1, f"{SHARED}.{key}", "the stored version has no such parameter", _REPUBLISH)
                )
        _merge_known(complete[SHARED], shared)
    if missing:
        raise RuleSetInvalid(missing)
    return load(json.dumps(complete), reference, limits)


def _merge_known(into: dict[str, Any], given: object) -> None:
    if isinstance(given, dict):
        into.update({k: v for k, v in given.items() if k in into})
