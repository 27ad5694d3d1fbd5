"""The README's reading path is true: every file and line range it gives is where it says."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| (\d+) \| `([\w.]+)` \| (\d+)-(\d+)( \(all\))? \|", re.MULTILINE)


def reading_path():
    return [(f, int(a), int(b), bool(whole)) for _, f, a, b, whole in ROW.findall(
        (ROOT / "README.md").read_text().replace("\u2013", "-"))]


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


def test_the_stated_totals_add_up():
    text = (ROOT / "README.md").read_text()
    rows = reading_path()
    total = sum(end - start + 1 for _, start, end, _ in rows)
    assert f"{total:,} lines" in text, f"the README should state the total, {total:,} lines"
