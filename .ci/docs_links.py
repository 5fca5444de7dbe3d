#!/usr/bin/env python3
"""Every link a reader or an alert follows resolves: each alert rule's `runbook` annotation names
a heading of docs/runbooks.md, and every relative link in the Markdown files (README.md, docs/,
the folder READMEs) points at a file that exists and, with a #fragment, at a heading in it.

Usage: python3 .ci/docs_links.py
"""

import re
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "loadtest"))
from harness import Checks  # shared with the load scripts

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "grafana/alerts/load-shed-api.rules.yaml"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


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

    sources = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
               *sorted(p for p in ROOT.glob("*/README.md")), *sorted(ROOT.glob("helm/*/README.md"))]
    for source in sources:
        text = re.sub(r"```.*?```", "", source.read_text(), flags=re.DOTALL)
        for target in LINK.findall(text):
            if not re.match(r"^[a-z]+:", target):
                resolve(source, target)

    checks.finish("links")


if __name__ == "__main__":
    main()
