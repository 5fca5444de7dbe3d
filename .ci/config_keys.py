#!/usr/bin/env python3
"""One configuration key, few places. `config/default.toml` is the source: every key with its
default and, in the comment above it, what it means. A new key is declared in four places: the
code (its section under src/settings/), config/default.toml, the chart's values.yaml and
values.schema.json. The chart renders every key of its `config` block as an environment variable
without a per-key line (templates/_helpers.tpl), and docs/configuration.md's table is generated
from config/default.toml. This script fails when any of them disagree:

- every key of config/default.toml is in values.yaml's `config` block (camelCase) with the same
  default, and in values.schema.json with a type that fits, and neither has a key more
  (except the keys the chart derives itself: role, listen addresses, the upstream URL);
- docs/configuration.md's table is what config/default.toml generates;
- no section is copied field by field: the typed sections that src/settings/ builds (its own
  `ApiSettings`, `Timeouts`, ... and the components' `BreakerConfig`, `RetryConfig`, ...) are handed
  to the component that owns them, so no other struct in src/ declares a field named for one of
  their keys with the same type (a copy is one more place a new key must be added, and can
  drift). Request parameters that share a key's name (`ms`, `fail_rate`) are not copies;
- every typed section with a field named for a key is declared in its section's file under
  src/settings/, beside the raw field and the rule that fill it: so a new key touches that one
  Rust file (plus the code that reads it), config/default.toml, values.yaml and values.schema.json,
  four files, and the table is regenerated.

(The code and config/default.toml cannot drift: the binary embeds the file, rejects keys it does
not know and fails to start without one it needs, which `cargo test` covers.)

Usage: python3 .ci/config_keys.py            check (CI)
       python3 .ci/config_keys.py --write    regenerate docs/configuration.md's table
"""

import json
import re
import sys
import tomllib
from pathlib import Path

import yaml
from harness import Checks

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = ROOT / "config/default.toml"
VALUES = ROOT / "helm/load-shed-api/values.yaml"
SCHEMA = ROOT / "helm/load-shed-api/values.schema.json"
DOCS = ROOT / "docs/configuration.md"
BEGIN = "<!-- generated from config/default.toml by .ci/config_keys.py --write: do not edit -->"
END = "<!-- end of generated table -->"

# Keys the chart sets itself, from the container ports, the role of each Deployment and
# api.upstreamUrl, rather than from its `config` block.
CHART_DERIVED = {"role", "api.listen", "api.upstream_url", "upstream.listen"}
# Request parameters, some named like the keys that give their defaults.
REQUEST_PARAMS = {Path("src/wire.rs"), Path("src/api/params.rs"), Path("src/upstream/params.rs")}


def camel(snake):
    head, *rest = snake.split("_")
    return head + "".join(word.capitalize() for word in rest)


def env_name(key):
    return "LOAD_SHED__" + key.upper().replace(".", "__")


def documented_keys():
    """[(keys sharing one comment, comment)], in file order. A key with no comment of its own
    shares the one above it."""
    rows, comment, section = [], [], ""
    for line in DEFAULTS.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section, comment = stripped[1:-1] + ".", []
        elif stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
        elif "=" in stripped:
            key = section + stripped.split("=", 1)[0].strip()
            if comment or not rows:
                rows.append(([key], " ".join(comment)))
            else:
                rows[-1][0].append(key)
            comment = []
        elif not stripped:
            comment = []
    return rows


def flat(table, prefix=""):
    out = {}
    for name, value in table.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{name}."))
        else:
            out[prefix + name] = value
    return out


def toml_literal(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def table():
    defaults = flat(tomllib.loads(DEFAULTS.read_text()))
    lines = [BEGIN, "", "| key | environment variable | default | meaning |", "|---|---|---|---|"]
    for keys, meaning in documented_keys():
        lines.append("| " + "<br>".join(f"`{k}`" for k in keys)
                     + " | " + "<br>".join(f"`{env_name(k)}`" for k in keys)
                     + " | " + "<br>".join(f"`{toml_literal(defaults[k])}`" for k in keys)
                     + " | " + meaning.replace("|", "\\|") + " |")
    lines += ["", END]
    return "\n".join(lines)


def same(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def fits(schema_type, value):
    types = schema_type if isinstance(schema_type, list) else [schema_type]
    if isinstance(value, bool):
        return "boolean" in types
    if isinstance(value, int):
        return "integer" in types or "number" in types
    if isinstance(value, float):
        return "number" in types
    return "string" in types


def rust_structs():
    """{struct name: (file, {field: type})} for every struct in src/, tests and comments left out."""
    found = {}
    for path in sorted((ROOT / "src").rglob("*.rs")):
        text = path.read_text().split("#[cfg(test)]", 1)[0]
        text = "\n".join(line for line in text.splitlines() if not line.strip().startswith("//"))
        for m in re.finditer(r"\bstruct\s+(\w+)(?:<[^>{;]*>)?\s*\{", text):
            depth, end = 1, m.end()
            while depth and end < len(text):
                depth += {"{": 1, "}": -1}.get(text[end], 0)
                end += 1
            body = text[m.end():end - 1]
            fields = dict(re.findall(r"^\s*(?:pub(?:\([\w:]+\))?\s+)?(\w+)\s*:\s*([^,\n]+),", body, re.MULTILINE))
            found[m.group(1)] = (path.relative_to(ROOT), {k: v.strip() for k, v in fields.items()})
    return found


def section_types(structs):
    """The typed sections: structs that src/settings/ builds from a raw section, and their own
    struct-typed fields (e.g. `SimulatorConfig.faults: Faults`)."""
    built = set()
    for path in (ROOT / "src/settings").glob("*.rs"):
        text = path.read_text().split("#[cfg(test)]", 1)[0]
        built |= set(re.findall(r"\b([A-Z]\w+)\s*\{\s*\n", text)) & set(structs)
    built -= {name for name in structs if name.startswith("Raw")} | {"Settings", "ConfigError"}
    for name in list(built):
        built |= {t for t in structs[name][1].values() if t in structs}
    return sorted(built)


def main():
    checks = Checks()
    defaults = {k: v for k, v in flat(tomllib.loads(DEFAULTS.read_text())).items() if k not in CHART_DERIVED}
    values = yaml.safe_load(VALUES.read_text())["config"]
    schema = json.loads(SCHEMA.read_text())["properties"]["config"]["properties"]
    print(f"configuration keys: {len(defaults)} in config/default.toml ({len(CHART_DERIVED)} set by the chart itself)")

    chart_keys = {f"{section}.{key}" for section, keys in values.items() for key in keys}
    expected = {f"{k.split('.')[0]}.{camel(k.split('.')[1])}": k for k in defaults}
    for chart_key, key in sorted(expected.items()):
        section, name = chart_key.split(".")
        problems = []
        if chart_key not in chart_keys:
            problems.append("missing from values.yaml")
        elif not same(values[section][name], defaults[key]):
            problems.append(f"values.yaml defaults to {values[section][name]!r}, "
                            f"config/default.toml to {defaults[key]!r}")
        prop = schema.get(section, {}).get("properties", {}).get(name)
        if prop is None:
            problems.append("missing from values.schema.json")
        elif "type" in prop and not fits(prop["type"], defaults[key]):
            problems.append(f"values.schema.json has type {prop['type']}, but the default is {defaults[key]!r}")
        checks.check(
            not problems,
            f"{key} = config.{chart_key} in values.yaml and values.schema.json"
            + (f": {'; '.join(problems)}" if problems else ""),
        )
    for chart_key in sorted(chart_keys - set(expected)):
        checks.fail(f"values.yaml: config.{chart_key} is no key of config/default.toml")
    schema_keys = {f"{s}.{k}" for s, body in schema.items() for k in body.get("properties", {})}
    for chart_key in sorted(schema_keys - set(expected)):
        checks.fail(f"values.schema.json: config.{chart_key} is no key of config/default.toml")

    structs = rust_structs()
    sections = section_types(structs)
    print(f"typed sections: {', '.join(sections)}")
    # A key's field is named for it, its unit suffix dropped when the type carries the unit.
    key_fields = {re.sub(r"_(ms|seconds)$", "", k.split(".")[-1]) for k in defaults} | {
        k.split(".")[-1] for k in defaults
    }
    for name in sections:
        home, fields = structs[name]
        copies = [
            f"{other}.{field} ({path})"
            for other, (path, theirs) in structs.items()
            if other not in sections and not other.startswith("Raw") and path not in REQUEST_PARAMS
            for field, ty in theirs.items()
            if field in key_fields and fields.get(field) == ty
        ]
        checks.check(
            not copies,
            f"{name} ({home}) is handed over, not copied field by field"
            + (f": copied as {', '.join(copies)}" if copies else ""),
        )
        named = sorted(field for field in fields if field in key_fields)
        if named:
            checks.check(
                str(home).startswith("src/settings/"),
                f"{name} (fields {', '.join(named)}) is declared under src/settings/ ({home}):"
                " a new key touches four files",
            )

    generated = table()
    docs = DOCS.read_text()
    current = re.search(re.escape(BEGIN) + ".*?" + re.escape(END), docs, re.DOTALL)
    if "--write" in sys.argv[1:]:
        DOCS.write_text(docs.replace(current.group(0), generated) if current else docs + "\n" + generated + "\n")
        print(f"wrote {DOCS.relative_to(ROOT)}")
    else:
        checks.check(
            current is not None and current.group(0) == generated,
            "docs/configuration.md's table is what config/default.toml generates"
            " (else: python3 .ci/config_keys.py --write)",
        )
    checks.finish("configuration keys")


if __name__ == "__main__":
    main()
