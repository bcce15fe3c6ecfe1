"""Named rule presets: the decisions, kept apart from the taggers' attributes.

Each preset is a YAML file in this folder holding a list of rules (comments say where the
thresholds come from). A rule is a mapping with a unique ``name`` and exactly one of:

* ``remove_if``: a DuckDB SQL boolean expression over attribute columns
  (``gopher__word_count < 50``) that is true when the document is REMOVED;
* ``remove_spans``: the name of a span attribute (``list[struct{start, end}]``, see
  ``taggers.base.SPAN``) whose character ranges are deleted from the document's text.

Changing a threshold is an edit here; no tagger reruns.
"""

from __future__ import annotations

from pathlib import Path

import yaml

__all__ = ["PRESETS_DIR", "RULE_KINDS", "available_presets", "load_preset"]

#: The folder holding the ``<name>.yaml`` presets.
PRESETS_DIR = Path(__file__).parent
#: The keys that say what a rule does; each rule has exactly one of them.
RULE_KINDS = ("remove_if", "remove_spans")
_ALLOWED_KEYS = {"name", *RULE_KINDS}


def available_presets() -> list[str]:
    """The preset names, sorted (the ``.yaml`` file names without extension)."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def load_preset(name: str) -> list[dict[str, str]]:
    """The rules of preset ``name``, in file order, validated as the module docstring says.

    Raises ``ValueError`` for an unknown name (listing the available ones) or a malformed rule
    (naming the preset and the rule).
    """
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file() or name != path.stem:
        raise ValueError(
            f"unknown rule preset {name!r}; available presets: {', '.join(available_presets())}"
        )
    rules = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(rules, list) or not rules:
        raise ValueError(f"preset {name!r} ({path}) must be a non-empty YAML list of rules")
    names: set[str] = set()
    for index, rule in enumerate(rules):
        where = f"preset {name!r}, rule {index}"
        if not isinstance(rule, dict):
            raise ValueError(f"{where}: expected a mapping, got {rule!r}")
        unknown = set(rule) - _ALLOWED_KEYS
        if unknown:
            raise ValueError(
                f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_ALLOWED_KEYS)}"
            )
        if not isinstance(rule.get("name"), str) or not rule["name"]:
            raise ValueError(f"{where}: needs a non-empty string 'name'")
        kinds = [kind for kind in RULE_KINDS if kind in rule]
        if len(kinds) != 1 or not isinstance(rule[kinds[0]], str) or not rule[kinds[0]]:
            raise ValueError(
                f"{where} ({rule['name']}): needs exactly one of {RULE_KINDS} as a non-empty string"
            )
        if rule["name"] in names:
            raise ValueError(f"{where}: duplicate rule name {rule['name']!r}")
        names.add(rule["name"])
    return rules
