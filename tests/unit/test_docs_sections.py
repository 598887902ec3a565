"""The code and the docs cite docs/admin.md and docs/operations.md by section, `(docs/admin.md, "Dead letters")`,
and docs/CHANGES.md files its history under those files' headings. A section renamed or a paragraph reworded
leaves such a citation pointing at nothing; this reads every one, in well under a second. A section is a heading
(`## Dead letters`) or a paragraph's bold first words (`**Promotion**:`, `**What crosses tenants.**`); a citation
may give a heading's first words ("Tenants" for "Tenants: their users, and removing one").
Before: service/settings.py cited "One tenant's backlog" of operations.md, a section it does not have."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

from tests.conftest import REPO

CITED = ("docs/admin.md", "docs/operations.md")
# (docs/admin.md, "Dead letters"), docs/operations.md "One tenant's feedback backlog", (admin.md, "Promotion");
# a comment's quote may run over lines, each continued by `#`
_CITATION = re.compile(r'\.md,?\s+\(?"([^"]{3,120})"')  # the doc's name before it (a literal first: fast)
_SAME_DOC = re.compile(r'"([^"\n]{3,80})"[,)]?\s+\(?(below|above)\b')
_SECTION = re.compile(r"^#{1,6}\s+(.+?)\s*$|\*\*([^*\n]+?)\*\*", re.M)


def sections(text: str) -> list[tuple[int, str]]:
    """(offset, name) of each heading and bold run-in of a doc, in order; code blocks skipped."""
    text = re.sub(r"^```.*?^```", lambda m: re.sub(r"[^\n]", " ", m[0]), text, flags=re.S | re.M)
    return [(m.start(), (m[1] or m[2]).strip().rstrip(".:")) for m in _SECTION.finditer(text)]


def names(quote: str, name: str) -> bool:
    return name == quote or name.startswith(quote) and not name[len(quote)].isalnum()


def citing_files() -> list[Path]:
    roots = [REPO / d for d in ("pluralign", "service", "training", "tests", "benchmarks", "deploy", "docs")]
    files = [REPO / "README.md", REPO / "BENCHMARKS.md"]
    for root in roots:
        files += [p for p in root.rglob("*") if p.suffix in {".py", ".md", ".yaml", ".toml", ".html"} and p.is_file()]
    return files


def test_every_citation_of_admin_or_operations_names_a_section_there():
    docs = {name: sections((REPO / name).read_text()) for name in CITED}
    broken = []
    for path in citing_files():
        text = path.read_text(errors="replace")
        for m in _CITATION.finditer(text):
            doc = next((d for d in CITED if text.endswith(d.removeprefix("docs/"), 0, m.start() + 3)), None)
            quote = " ".join(re.sub(r"\n\s*#", " ", m[1]).split())
            if doc and not any(names(quote, name) for _, name in docs[doc]):
                broken.append(f"{path.relative_to(REPO)}:{text[: m.start()].count(chr(10)) + 1}: {doc}, {m[1]!r}")
    assert not broken, "cited sections no doc has:\n" + "\n".join(broken)


def test_a_quoted_section_below_or_above_is_there_in_that_direction():
    broken = []
    for doc in (*CITED, "README.md"):
        text = (REPO / doc).read_text()
        found = sections(text)
        for m in _SAME_DOC.finditer(text):
            at = [offset for offset, name in found if names(m[1], name)]
            if not any(offset > m.start() if m[2] == "below" else offset < m.start() for offset in at):
                broken.append(f"{doc}:{text[: m.start()].count(chr(10)) + 1}: {m[0]!r}")
    assert not broken, "\n".join(broken)


def test_changes_files_its_history_under_headings_the_docs_have():
    text = (REPO / "docs" / "CHANGES.md").read_text()
    doc, missing = None, []
    for line in text.splitlines():
        if line.startswith("## "):
            doc = line[3:].strip()
            headings = [n for _, n in sections((REPO / doc).read_text())]
        elif line.startswith("### "):
            assert doc is not None, line
            if line[4:].strip() not in headings:
                missing.append(f"{doc}: {line}")
    assert not missing, "\n".join(missing)


_NAME = r"(?:\d+|(?!review)[a-z][A-Za-z0-9_]*\d[A-Za-z0-9_]*)"  # `40`, `trial46a`, `i18n30`, `breakC62` (a branch named with a capital): "reviewdots54" is "review dots54"
_PART = rf"(?:review {_NAME}|{_NAME}(?: and its review)?)"
_ENTRY = re.compile(rf"- \*\*(?:commit [0-9a-f]{{8,40}}, \d{{4}}-\d\d-\d\d|{_PART}(?:(?:, | and ){_PART})*)\*\*: \S.{{20,}}")


def test_every_changes_entry_names_its_session_and_says_what_changed():
    """Each entry of docs/CHANGES.md is `- **<session, review X, or commit H, date>**: <what changed>`, as its opening
    says. Before: the docs/api.md part (apidocs55) held an entry `- **commit**: ` naming nothing and saying nothing (the
    remark it was to keep, an unload answered 404 no longer failing a DELETE, was in neither file), and four entries
    named a features version (`text-features-5`) where the session belongs."""
    lines = (REPO / "docs" / "CHANGES.md").read_text().splitlines()
    bad = [f"docs/CHANGES.md:{i}: {line[:100]}" for i, line in enumerate(lines, 1) if line.startswith("- ") and not _ENTRY.fullmatch(line)]
    assert not bad, "\n".join(bad)


# "until session 42", "since the review of session remote54" (wrapped over lines too), "(before session trial44, a file
# ... had", "...; before, it ...": a change told where a doc or the code's prose says what is done today
_HISTORY = re.compile(r"\b(?:until|since)\s+(?:the\s+)?(?:session|review)\b(?:\s+of\s+session)?"
                      r"|\(before\s+(?:the\s+review\s+of\s+)?session\s+[\w.]+,|(?:^|[.;:(]\s*)before,\s", re.I | re.M)


def prose(path: Path) -> list[tuple[int, str]]:
    """(first line, text) of what `path` says in words: a doc whole, a .py file's comments and triple-quoted strings
    (docstrings, help texts), not its code (`(before, upto)` is a tuple)."""
    text = path.read_text()
    if path.suffix != ".py":
        return [(1, text)]
    return [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(text).readline)
            if tok.type == tokenize.COMMENT or (tok.type == tokenize.STRING and tok.string.lstrip("rbfuRBFU")[:3] in ('"""', "'''"))]


def history_in(path: Path) -> list[str]:
    """`path:line: ...context...` of each history remark `_HISTORY` finds in what `path` says in words."""
    return [f"{path.relative_to(REPO)}:{line + text[: m.end()].count(chr(10))}: {text[max(0, m.start() - 40): m.end() + 40]!r}"
            for line, text in prose(path) for m in _HISTORY.finditer(text)]


def test_the_docs_state_today_s_behaviour_their_history_is_in_changes():
    """README.md, docs/*.md, deploy/*.md and the code's docstrings and comments (benchmarks/ too, which name the release
    whose code they measure: "releases before session 49") say what the code does today; when a
    behaviour changed ("until session 42 it ...", "since the review of session remote54", "(before session trial44,
    a file ... had ...)", "...; before, it ...") is docs/CHANGES.md's to say. A release named to say what it reads ("a
    release before session 46 reads `*.keys` only") is no history and stays. On main before docs57 it found 65 of the
    first two forms; before review docs57, a docs/library.md remark, 10 of the code's and 28 of benchmarks/."""
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "deploy").glob("*.md"))]
    docs += [p for root in ("pluralign", "service", "training", "benchmarks") for p in sorted((REPO / root).rglob("*.py"))]
    found = [remark for doc in docs if doc.name != "CHANGES.md" for remark in history_in(doc)]
    assert not found, "history to move to docs/CHANGES.md:\n" + "\n".join(found)


@pytest.mark.parametrize(("name", "text", "line"), [
    ("a.md", "Today it does X.\n\nIt did Y until\nsession 42.\n", 4),
    ("a.md", "X (since the review of session remote54) does Y.\n", 1),
    ("a.md", "Rows go to one split\n(before session trial44, a file had 12 in both).\n", 2),
    ("a.md", "A 400 names it; before, a 500.\n", 1),
    ("a.py", 'def f():\n    """Does X.\n\n    Before, it did Y."""\n    return (before, after)  # one split; before, two\n', 4),
])
def test_a_history_remark_is_found_wherever_it_stands(tmp_path, monkeypatch, name, text, line):
    monkeypatch.setattr("tests.unit.test_docs_sections.REPO", tmp_path)
    (tmp_path / name).write_text(text)
    found = history_in(tmp_path / name)
    assert found and found[0].startswith(f"{name}:{line}:"), found


def test_what_is_not_history_is_not_found(tmp_path, monkeypatch):
    monkeypatch.setattr("tests.unit.test_docs_sections.REPO", tmp_path)
    (tmp_path / "a.md").write_text("A release before session 46 reads `*.keys` only; run it before, not after.\n")
    (tmp_path / "a.py").write_text("users[u] = [*users.get(u, ()), (before, upto)]\nx = f(before, upto)\n")
    assert history_in(tmp_path / "a.md") == history_in(tmp_path / "a.py") == []
