"""The repository explains itself: README.md links docs/architecture.md, and every link in README.md and docs/
leads to a file or a heading inside the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", heading).strip().lower().replace(" ", "-") for heading in headings}


def test_every_link_of_the_readme_and_docs_stays_inside_the_repository() -> None:
    broken = []
    for document in documents():
        text = document.read_text()
        for target in LINK.findall(text):
            path, _, anchor = target.partition("#")
            if "://" in path:
                broken.append(f"{document.name}: {target} leaves the repository")
                continue
            resolved = (document.parent / path).resolve() if path else document
            if ROOT.resolve() not in (resolved, *resolved.parents) or not resolved.exists():
                broken.append(f"{document.name}: {target} is not a file of the repository")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text()):
                broken.append(f"{document.name}: {target} names no heading")
    assert broken == []


def test_the_readme_links_the_architecture_and_it_names_only_files_that_exist() -> None:
    assert "](docs/architecture.md)" in (ROOT / "README.md").read_text()
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:plugin|supervisor|api|tests|bench|image)/[\w/.]+\.\w+)`", architecture))
    named |= {
        f"plugin/vms_plugin/{path}"
        for path in re.findall(r"`((?:worker|ops|layers|models|kernels)/\w+\.\w+)`", architecture)
    }
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert named and missing == []
