"""The README's reading path is true: every file and line range it gives is where it says, the
totals add up, and every name in "where each idea is taught" is defined in the file it names."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
ROW = re.compile(r"^\| (\d+) \| `([\w.]+)` \| (\d+)-(\d+)( \(all\))? \|", re.MULTILINE)


def reading_path():
    return [(f, int(a), int(b), bool(whole)) for _, f, a, b, whole in ROW.findall(README)]


def test_the_reading_path_names_real_line_ranges():
    rows = reading_path()
    assert len(rows) >= 8
    for file, start, end, whole in rows:
        lines = (ROOT / file).read_text().splitlines()
        if whole:
            assert (start, end) == (1, len(lines)), f"{file} has {len(lines)} lines, not {end}"
            continue
        assert 1 <= start <= end <= len(lines), (file, start, end)
        if end < len(lines):  # a range ends where a section does: the next line that is not blank starts one
            after = next(line for line in lines[end:] if line.strip())
            assert after.startswith("# ---"), f"{file}:{end + 1} does not start a section: {after!r}"
        before = lines[start - 2] if start > 1 else ""
        assert start == 1 or lines[start - 1].startswith("# ---") or before.startswith("# ---"), (file, start)


def test_the_stated_totals_add_up_and_keep_to_the_budget():
    rows = reading_path()
    total = sum(end - start + 1 for _, start, end, _ in rows)
    first = sum(end - start + 1 for _, start, end, _ in rows[:4])  # model, data, training, sampling
    assert f"That is {total:,} lines in all" in README, f"the README should state the total, {total:,}"
    assert f"steps 1-4 ({first:,} lines)" in README, f"the README should state the first reading, {first:,}"
    assert total <= 1700 and first <= 1050


def defined_names(path):
    """Every function and class of a file, and every method as Class.method."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f"{node.name}.{item.name}" for item in node.body
                      if isinstance(item, ast.FunctionDef)}
    return names


def test_every_name_where_an_idea_is_taught_is_defined_there():
    section = README.split("Where each idea is taught:")[1].split("\n## ")[0]
    checked = 0
    for line in section.splitlines():
        cells = line.split(" | ")
        if len(cells) < 2 or not cells[-1].startswith("`"):
            continue
        for part in cells[-1].rstrip(" |").split("; "):
            file, _, names = part.partition(": ")
            names = re.findall(r"`([\w.]+)`", names)
            defined = defined_names(ROOT / file.strip("`"))
            for name in names:
                assert name in defined, f"{name} is not defined in {file}"
                checked += 1
    assert checked >= 30


def test_every_citation_of_the_readme_or_the_docs_is_there():
    """A comment that sends the reader to (README, "Section") or to docs/page.md sends them
    somewhere that exists."""
    sections = set(re.findall(r"^## (.+)$", README, re.MULTILINE))
    files = [*ROOT.glob("*.py"), *ROOT.glob("ring/*.py"), *ROOT.glob("configs/*.py"),
             *ROOT.glob("docs/*.md"), ROOT / "README.md"]
    cited = 0
    for path in files:
        text = path.read_text()
        for title in re.findall(r'\(README, "([^"]+)"\)', text):
            assert title in sections, f'{path.name} cites README section "{title}"'
            cited += 1
        for page in re.findall(r"\bdocs/(\w+\.md)", text):
            assert (ROOT / "docs" / page).is_file(), f"{path.name} cites docs/{page}"
            cited += 1
    assert cited >= 10
