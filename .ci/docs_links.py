#!/usr/bin/env python3
"""Every link a reader or an alert follows resolves: each alert rule's `runbook` annotation names
a heading of docs/runbooks.md, every relative link in the Markdown files (README.md, docs/,
the folder READMEs) points at a file that exists and, with a #fragment, at a heading in it, and
every section named in prose or a comment anywhere in the repository, as `README ("Heading")`,
`docs/security.md, "Heading"` and the like, is a heading of that file (a bare `README` is the
project's).

Usage: python3 .ci/docs_links.py
"""

import re
import subprocess
from pathlib import Path

import yaml
from harness import Checks

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "grafana/alerts/load-shed-api.rules.yaml"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# A file named in text, then within a few characters a quoted section of it.
# (Not a file name that is itself in quotes: that is code, not prose.)
SECTION_REF = re.compile(
    r'(?<!["\'\w/.-])((?:[\w.-]+/)*(?:README|[\w-]+\.md))\b(?:\.md)?(?!["\'])[ ,]*\(?"([A-Za-z][^"\n]{1,80})"'
)
TEXT_FILES = (".md", ".py", ".rs", ".toml", ".yaml", ".yml", ".tf", ".tpl", ".txt", ".json", ".sh")


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.MULTILINE)}


def main():
    checks = Checks()

    def resolve(source, target):
        path, _, fragment = target.partition("#")
        file = (source.parent / path).resolve() if path else source
        what = f"{source.relative_to(ROOT)}: {target}"
        if not file.exists():
            checks.fail(f"{what}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            checks.fail(f"{what}: no heading #{fragment}")
        else:
            checks.check(True, what)

    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            runbook = rule.get("annotations", {}).get("runbook")
            if runbook is None:
                checks.fail(f"{RULES.relative_to(ROOT)}: {rule['alert']} has no runbook annotation")
                continue
            # Runbook links are relative to the repository root.
            resolve(ROOT / "README.md", runbook)

    sources = [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted(p for p in ROOT.glob("*/README.md")),
        *sorted(ROOT.glob("helm/*/README.md")),
    ]
    for source in sources:
        text = re.sub(r"```.*?```", "", source.read_text(), flags=re.DOTALL)
        for target in LINK.findall(text):
            if not re.match(r"^[a-z]+:", target):
                resolve(source, target)

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in tracked.stdout.split():
        source = ROOT / name
        if (
            not (source.suffix in TEXT_FILES or name == ".ci/run")
            or not source.is_file()
            or source == Path(__file__).resolve()
        ):
            continue
        for m in SECTION_REF.finditer(source.read_text(errors="replace")):
            named, section = m.groups()
            named = named if named.endswith(".md") else named + ".md"
            target = next((p for p in (ROOT / named, source.parent / named) if p.is_file()), None)
            what = f'{name}: {named} "{section}"'
            if target is None:
                checks.fail(f"{what}: no such file")
            else:
                checks.check(
                    slug(section) in anchors(target),
                    f"{what}" + ("" if slug(section) in anchors(target) else ": no such heading"),
                )

    checks.finish("links")


if __name__ == "__main__":
    main()
