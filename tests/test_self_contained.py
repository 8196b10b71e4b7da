"""The repository is self-contained: a fresh clone needs nothing beside it.

Design notes and format references used to live in a team folder next to the checkout; a user
who clones the repository does not have it. Everything a tracked file cites must therefore be
inside the repository (``docs/``), and every relative link in the documentation must resolve to
a tracked file. The patterns are assembled so that this file does not match them itself.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The team folder's name, kept apart from the patterns so this file does not match itself.
TEAM = "sha" + "red"

#: References to a team folder outside the repository, with the form each one catches.
OUTSIDE_REFERENCES: dict[str, re.Pattern[str]] = {
    "a parent-folder team path": re.compile(r"\.\./" + TEAM + r"\b"),
    "a team sub-folder": re.compile(r"\b" + TEAM + r"/(?:reference|data|DESIGN|STYLE|hooks)\b"),
    "an absolute team path": re.compile(r"/work/(?:shared|main|wt)\b"),
    "a path built from the checkout's parent": re.compile(
        r"""parent\s*/\s*["']shared["']|parents\[1\]\.parent\b"""
    ),
    "the team folder by name": re.compile(r"\bteam'?s\s+shared\b", re.IGNORECASE),
}

#: Markdown files whose relative links must resolve inside the repository.
DOC_GLOBS: tuple[str, ...] = ("README.md", "docs/*.md", "data/sample/*.md")

#: ``[text](target)`` / ``![alt](target)`` and reference definitions ``[label]: target``.
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
FENCED_CODE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//|#)", re.IGNORECASE)


def tracked_files() -> list[str]:
    result = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    return sorted(name for name in result.stdout.decode("utf-8").split("\0") if name)


def read_text(path: Path) -> str | None:
    """The file as text, or None for binaries (NUL bytes or not UTF-8)."""
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def outside_references(text: str) -> list[str]:
    """``"line N: <kind>: <line>"`` for every line that points outside the repository."""
    hits = []
    for number, line in enumerate(text.splitlines(), start=1):
        for kind, pattern in OUTSIDE_REFERENCES.items():
            if pattern.search(line):
                hits.append(f"line {number}: {kind}: {line.strip()[:120]}")
    return hits


def relative_links(markdown: str) -> list[str]:
    """Link targets that are paths (no scheme, not a bare anchor), code spans ignored."""
    prose = INLINE_CODE.sub("", FENCED_CODE.sub("", markdown))
    targets = INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose)
    return [t for t in targets if not EXTERNAL.match(t)]


def test_the_scanners_catch_each_outside_form_and_leave_plain_english_alone() -> None:
    dots = ".."
    offending = [
        f"Architecture: [DESIGN]({dots}/{TEAM}" + "/DESIGN.md)",
        "see " + "shared" + "/reference/chexpert/SPEC.md",
        'DEFAULT_SOURCES = ROOT.parent / "' + 'shared" / "data"',
        "SHARED = Path(__file__).parents[1]" + ".parent",
        "copied from /work/" + TEAM + "/data",
        "as recorded in the team's " + "shared folder",
    ]
    for line in offending:
        assert outside_references(line), line
    for line in ("the encoder shared by every task", "Helpers shared by the dataset adapters"):
        assert outside_references(line) == [], line
    links = relative_links(
        "[a](docs/a.md) [b](https://x.org) [c](#anchor) `[d](not/a/link.md)`\n"
        '```\n[e](in/code.md)\n```\n![f](img/f.png "title")\n[g]: ref/g.md\n'
    )
    assert links == ["docs/a.md", "img/f.png", "ref/g.md"]


def test_no_tracked_file_refers_to_a_folder_outside_the_repository() -> None:
    offenders: dict[str, list[str]] = {}
    scanned = 0
    for name in tracked_files():
        text = read_text(REPO / name)
        if text is None:
            continue
        scanned += 1
        hits = outside_references(text)
        if hits:
            offenders[name] = hits
    assert scanned > 100, f"only {scanned} text files scanned: is this a git checkout?"
    report = "\n".join(
        f"{name}:\n  " + "\n  ".join(hits) for name, hits in sorted(offenders.items())
    )
    assert not offenders, (
        f"{len(offenders)} tracked file(s) refer to a folder outside the repository; "
        f"cite docs/ instead:\n{report}"
    )


def test_every_relative_link_in_the_documentation_resolves_to_a_tracked_file() -> None:
    tracked = tracked_files()
    tracked_set = set(tracked)
    tracked_dirs = {str(Path(name).parent) for name in tracked}
    tracked_dirs |= {str(parent) for name in tracked for parent in Path(name).parents}
    documents = sorted({p for pattern in DOC_GLOBS for p in REPO.glob(pattern)})
    assert REPO / "docs" / "README.md" in documents
    broken, checked = [], 0
    for document in documents:
        if str(document.relative_to(REPO)) not in tracked_set:
            broken.append(f"{document.relative_to(REPO)}: the document itself is not tracked")
            continue
        for target in relative_links(document.read_text(encoding="utf-8")):
            checked += 1
            path = target.split("#", 1)[0].split("?", 1)[0]
            resolved = (document.parent / path).resolve()
            where = f"{document.relative_to(REPO)} → {target}"
            if not resolved.is_relative_to(REPO):
                broken.append(f"{where}: outside the repository")
                continue
            relative = str(resolved.relative_to(REPO))
            if relative not in tracked_set and relative not in tracked_dirs:
                broken.append(f"{where}: no tracked file or folder {relative}")
    assert checked >= 20, f"only {checked} relative links found in {len(documents)} documents"
    assert not broken, "broken documentation links:\n" + "\n".join(broken)


def test_the_readme_points_to_the_documentation() -> None:
    links = relative_links((REPO / "README.md").read_text(encoding="utf-8"))
    assert "docs/README.md" in links
    assert "docs/architecture.md" in links
