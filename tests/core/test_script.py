"""Scripts as cue lists: paragraphs are cues, titles and notes are never spoken, the source is
kept line for line, and an edit touches only its cue."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avaturn_desktop.core import script as script_module
from avaturn_desktop.core.script import (
    DEFAULT_CHARS_PER_S,
    ScriptError,
    estimate_s,
    parse_script,
    read_script,
)

KEYNOTE = """\
# Opening
// smile, wait for the room
Good evening, everyone.
Welcome to the launch.

// slower here
Tonight we will show you three things.

# The product
The first thing is speed.
// click for the chart
It is twice as fast.

The second thing is price.
// last note
"""


def test_a_keynote_becomes_cues_with_sections_and_notes() -> None:
    script = parse_script(KEYNOTE)
    assert [c.text for c in script.cues] == [
        "Good evening, everyone. Welcome to the launch.",
        "Tonight we will show you three things.",
        "The first thing is speed. It is twice as fast.",
        "The second thing is price.",
    ]
    assert [c.section for c in script.cues] == ["Opening", "Opening", "The product", "The product"]
    assert [c.notes for c in script.cues] == [
        ("smile, wait for the room",),
        ("slower here",),
        ("click for the chart",),
        ("last note",),
    ]
    assert script.sections == ("Opening", "The product")
    assert [c.index for c in script.cues] == [0, 1, 2, 3]
    assert script.source == KEYNOTE


def test_markdown_formatting_is_not_spoken() -> None:
    text = (
        "## Part *one*\n"
        "- Say **this** and `that`, see [the site](https://example.com).\n"
        "> A quote\\* here.\n"
        "***\n"
        "1. Then the list.\n"
    )
    script = parse_script(text, markdown=True)
    assert [c.text for c in script.cues] == [
        "Say this and that, see the site. A quote* here.",
        "Then the list.",
    ]
    assert script.cues[0].section == "Part one"
    # the same text as plain text keeps every character
    assert parse_script(text).cues[0].text.startswith("- Say **this**")


def test_plain_lines_of_a_markdown_script_need_no_markdown_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Opening a script must not hold the window for the parser's import (tens of ms the
    first time): lines with no inline syntax are read without it."""

    def no_parser() -> object:
        raise AssertionError("the Markdown parser was used for plain lines")

    monkeypatch.setattr(script_module, "_markdown", no_parser)
    script = parse_script(KEYNOTE.replace("Tonight", "1. Tonight, at 8:30 -"), markdown=True)
    assert script.sections == ("Opening", "The product")
    assert script.cues[1].text == "Tonight, at 8:30 - we will show you three things."


# every character inline Markdown treats specially, and whitespace and separators that are not
_INLINE_ALPHABET = st.sampled_from(list("*_`[]!<>&\\\r\n\0()#:-+~=\t \u00a0\u2028\x0bab7é"))


@settings(max_examples=400, deadline=None)
@given(st.text(_INLINE_ALPHABET, max_size=30) | st.text(max_size=30))
def test_a_line_read_without_the_parser_reads_as_the_parser_reads_it(line: str) -> None:
    assert script_module._inline_text(line) == script_module._parsed_inline_text(line)


def test_hashtags_and_slashes_inside_text_are_spoken() -> None:
    script = parse_script("#1 priority is you.\nhttps://example.com // not a note\n")
    assert script.cues[0].text == "#1 priority is you. https://example.com // not a note"


def test_estimates_follow_the_rate() -> None:
    script = parse_script("abcdefghij\n\nabcde\n")
    assert script.estimate_s(5.0) == pytest.approx(3.0)
    assert script.cues[0].estimate_s(10.0) == pytest.approx(1.0)
    assert estimate_s("x" * 28, 0) == pytest.approx(28 / DEFAULT_CHARS_PER_S)


def test_an_edit_keeps_notes_titles_and_line_endings() -> None:
    source = KEYNOTE.replace("\n", "\r\n")
    script = parse_script(source)
    edited = script.with_cue_source(2, "Speed comes first.\nIt is three times as fast.")
    assert [c.text for c in edited.cues][2] == "Speed comes first. It is three times as fast."
    assert edited.cues[2].notes == ("click for the chart",)
    assert "\r\n// click for the chart\r\n" in edited.source
    assert edited.source.count("\n") == edited.source.count("\r\n")
    assert [c.text for c in edited.cues][:2] == [c.text for c in script.cues][:2]
    # a blank line splits a cue; an empty text removes it, its notes go with the next cue
    split = script.with_cue_source(1, "One.\n\nTwo.")
    assert [c.text for c in split.cues][1:3] == ["One.", "Two."]
    gone = script.with_cue_source(1, "")
    assert len(gone.cues) == 3
    assert gone.cues[1].notes == ("slower here", "click for the chart")


def test_reading_a_file(tmp_path: Path) -> None:
    good = tmp_path / "talk.md"
    good.write_bytes(b"\xef\xbb\xbf# Hi\n**Hello** there.\n")
    text, markdown = read_script(good)
    assert markdown and parse_script(text, markdown=markdown).cues[0].text == "Hello there."
    for name, data, why in (
        ("talk.pdf", b"x", "not a script"),
        ("bad.txt", b"\xff\xfe\x00", "not UTF-8"),
        ("nul.txt", b"a\x00b", "not a text file"),
    ):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ScriptError, match=why):
            read_script(path)


# -- properties ---------------------------------------------------------------------------------

_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC,.!?'é", min_size=1, max_size=8)
_line = st.lists(_word, min_size=1, max_size=6).map(" ".join)
_note = st.lists(_word, min_size=1, max_size=4).map(lambda w: "// " + " ".join(w))
_title = st.tuples(st.integers(1, 6), st.lists(_word, min_size=1, max_size=3)).map(
    lambda t: "#" * t[0] + " " + " ".join(t[1])
)


@dataclasses.dataclass
class Block:
    kind: str  # "cue", "notes", "title"
    lines: list[str]
    before: list[str] = dataclasses.field(default_factory=list)  # notes inside, before the text
    after: list[str] = dataclasses.field(default_factory=list)  # notes inside, after the text


_cue_block = st.builds(
    lambda lines, before, after: Block("cue", lines, before, after),
    st.lists(_line, min_size=1, max_size=4),
    st.lists(_note, max_size=2),
    st.lists(_note, max_size=2),
)
_notes_block = st.lists(_note, min_size=1, max_size=3).map(lambda n: Block("notes", n))
_title_block = _title.map(lambda t: Block("title", [t]))
_blocks = st.lists(st.one_of(_cue_block, _cue_block, _notes_block, _title_block), max_size=12)


def render(blocks: list[Block], eol: str, gaps: list[int]) -> str:
    out: list[str] = []
    for n, block in enumerate(blocks):
        out += [*block.before, *block.lines, *block.after]
        out += [""] * max(1, gaps[n % len(gaps)])
    return eol.join(out)


def expected(blocks: list[Block]) -> list[tuple[str, str | None, tuple[str, ...]]]:
    cues: list[tuple[str, str | None, tuple[str, ...]]] = []
    section: str | None = None
    pending: list[str] = []
    for block in blocks:
        if block.kind == "title":
            section = block.lines[0].lstrip("#").strip()
        elif block.kind == "notes":
            pending += [n[3:] for n in block.lines]
        else:
            notes = tuple(pending + [n[3:] for n in block.before + block.after])
            pending = []
            cues.append((" ".join(block.lines), section, notes))
    if pending and cues:
        text, section_of_last, notes = cues[-1]
        cues[-1] = (text, section_of_last, (*notes, *pending))
    return cues


@settings(max_examples=150, deadline=None)
@given(_blocks, st.sampled_from(["\n", "\r\n"]), st.lists(st.integers(1, 3), min_size=1))
def test_cues_are_exactly_the_paragraphs_and_nothing_of_notes_or_titles(
    blocks: list[Block], eol: str, gaps: list[int]
) -> None:
    text = render(blocks, eol, gaps)
    for markdown in (False, True):
        script = parse_script(text, markdown=markdown)
        assert [(c.text, c.section, c.notes) for c in script.cues] == expected(blocks)
        spoken = " ".join(c.text for c in script.cues)
        for block in blocks:
            for line in [*block.before, *block.after] + (
                block.lines if block.kind != "cue" else []
            ):
                assert line not in spoken
        assert script.source == text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400), st.booleans())
def test_any_text_parses_and_is_kept_line_for_line(text: str, markdown: bool) -> None:
    script = parse_script(text, markdown=markdown)
    assert script.source == text
    for cue in script.cues:
        assert cue.text and cue.text == cue.text.strip()
        assert all(not text_line.strip().startswith("//") for text_line in cue.source.split("\n"))
        assert cue.estimate_s(DEFAULT_CHARS_PER_S) > 0
    assert [c.index for c in script.cues] == list(range(len(script.cues)))


@settings(max_examples=150, deadline=None)
@given(_blocks, st.data())
def test_an_edit_changes_its_cue_only(blocks: list[Block], data: st.DataObject) -> None:
    script = parse_script(render(blocks, "\n", [1]))
    if not script.cues:
        return
    index = data.draw(st.integers(0, len(script.cues) - 1))
    new = data.draw(st.lists(_line, min_size=1, max_size=3))
    edited = script.with_cue_source(index, "\n".join(new))
    before = [(c.text, c.section, c.notes) for c in script.cues]
    after = [(c.text, c.section, c.notes) for c in edited.cues]
    assert len(after) == len(before)
    assert after[index] == (" ".join(new), before[index][1], before[index][2])
    assert after[:index] == before[:index] and after[index + 1 :] == before[index + 1 :]
    # editing it back gives the same cues again
    restored = edited.with_cue_source(index, script.cues[index].source)
    assert [(c.text, c.section, c.notes) for c in restored.cues] == before
