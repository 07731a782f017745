"""A presenter's script as a cue list (Qt-free values).

A script is a ``.txt`` or ``.md`` file a presenter prepares and rehearses:

- A **cue** is a paragraph: lines of text up to a blank line. Its lines are spoken as one text
  (joined by spaces); the speaker cuts it into sentences as it cuts any text.
- A line starting with ``#`` and a space (``#`` to ``######``, as Markdown headings) is a
  **section title**: shown, never spoken. It also ends the paragraph above it.
- A line starting with ``//`` (``// note``, or ``//note``) is a **presenter note**: shown
  with its cue, never spoken. A note inside a paragraph belongs to that paragraph's cue; notes
  standing in a paragraph of their own belong to the next cue (to the last one at the end of
  the script).
- In a Markdown script, inline formatting is not spoken (``**Welcome**`` is said "Welcome",
  ``[the site](https://…)`` is said "the site"), nor are list and quote markers; a line that is
  only a thematic break (``---``) separates paragraphs.

The parse keeps every line of the source as it was (line endings too), so a cue edited in place
is written back into its paragraph with the titles, notes and the rest of the file untouched:
``parse_script(text).source == text`` always.

Speaking time is estimated from the characters spoken and a rate in characters per second: the
voice's rate measured in the task log when there is one, else :data:`DEFAULT_CHARS_PER_S`.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Final

#: A presenter's speaking rate when the voice has not been measured yet (about 150 words a
#: minute, the usual pace of a keynote).
DEFAULT_CHARS_PER_S: Final = 14.0
#: Suffixes read as Markdown (anything else is plain text).
MARKDOWN_SUFFIXES: Final = frozenset({".md", ".markdown"})
#: Suffixes a script may have (File → Open script and the control API accept only these).
SCRIPT_SUFFIXES: Final = frozenset({".txt", ".text", *MARKDOWN_SUFFIXES})
#: The largest script read (a keynote is a few dozen kilobytes).
MAX_SCRIPT_BYTES: Final = 2_000_000

_TITLE = re.compile(r"^\s{0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t#]*$")
_NOTE = re.compile(r"^\s*//(.*)$")
_BREAK = re.compile(r"^\s{0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_BLOCK_MARKER = re.compile(r"^\s{0,3}(?:>[ \t]?)*(?:(?:[-*+]|\d{1,9}[.)])[ \t]+)?")
#: What can start inline Markdown in CommonMark (emphasis, code, links, images, autolinks and
#: inline HTML, entities, escapes) or be rewritten by its normalization (line breaks, NUL). A
#: line with none of these is its own plain text, so it needs neither the parser nor its
#: import (tens of milliseconds the first time): most lines of a script are such lines.
_INLINE_SYNTAX = re.compile(r"[*_`\[\]!<&\\\r\n\0]")


class ScriptError(ValueError):
    """A script that cannot be read (not text, too large, a suffix that is not a script's)."""


@dataclasses.dataclass(frozen=True)
class Cue:
    """One paragraph of the script."""

    #: Zero-based position in the cue list.
    index: int
    #: What is spoken: the paragraph's text lines, joined by spaces (Markdown formatting gone).
    text: str
    #: The paragraph's text lines as written (joined by newlines): what is edited in place.
    source: str
    #: The section title the cue is under, if any.
    section: str | None
    #: Presenter notes: shown with the cue, never spoken.
    notes: tuple[str, ...]
    #: Zero-based numbers of the source lines that hold the text.
    lines: tuple[int, ...]

    def estimate_s(self, chars_per_s: float) -> float:
        return estimate_s(self.text, chars_per_s)


@dataclasses.dataclass(frozen=True)
class Script:
    """A parsed script: its cues and every source line, kept as it was."""

    cues: tuple[Cue, ...]
    #: The source's lines with their line endings: ``"".join(lines)`` is the source.
    lines: tuple[str, ...]
    markdown: bool = False

    @property
    def source(self) -> str:
        return "".join(self.lines)

    @property
    def sections(self) -> tuple[str, ...]:
        """The section titles that have cues, in order."""
        return tuple(dict.fromkeys(c.section for c in self.cues if c.section is not None))

    def estimate_s(self, chars_per_s: float) -> float:
        return sum(cue.estimate_s(chars_per_s) for cue in self.cues)

    def with_cue_source(self, index: int, source: str) -> Script:
        """The script with cue ``index``'s text lines replaced by ``source``, parsed again.

        Notes and titles inside its paragraph stay where they were; a blank line in ``source``
        makes two cues of it; an empty ``source`` removes the cue (its notes stay, and go with
        the next cue).
        """
        cue = self.cues[index]
        eol = _line_ending(self.lines)
        new = [line.rstrip() for line in source.replace("\r\n", "\n").split("\n")]
        while new and not new[-1].strip():
            new.pop()
        while new and not new[0].strip():
            new.pop(0)
        first, last = cue.lines[0], cue.lines[-1]
        ends_file = last == len(self.lines) - 1 and not self.lines[last].endswith(("\n", "\r"))
        rendered = [line + eol for line in new]
        if rendered and ends_file:
            rendered[-1] = rendered[-1][: -len(eol)]
        lines = list(self.lines)
        for number in sorted(cue.lines[1:], reverse=True):
            del lines[number]
        lines[first : first + 1] = rendered
        return parse_script("".join(lines), markdown=self.markdown)


def estimate_s(text: str, chars_per_s: float) -> float:
    """Seconds to say ``text`` at ``chars_per_s`` (the default rate when that is not positive)."""
    rate = chars_per_s if chars_per_s > 0 else DEFAULT_CHARS_PER_S
    return len(text) / rate


def is_markdown(path: str | Path) -> bool:
    return Path(path).suffix.lower() in MARKDOWN_SUFFIXES


def read_script(path: Path) -> tuple[str, bool]:
    """The text of the script at ``path`` and whether it is Markdown; :class:`ScriptError` or
    ``OSError`` with a reason a person can act on when it cannot be a script."""
    if path.suffix.lower() not in SCRIPT_SUFFIXES:
        raise ScriptError(
            f"{path.name} is not a script: open a .txt or .md file "
            f"(one cue a paragraph, '# ' section titles, '// ' notes)."
        )
    size = path.stat().st_size
    if size > MAX_SCRIPT_BYTES:
        raise ScriptError(
            f"{path.name} is {size // 1000} kB; a script may be at most "
            f"{MAX_SCRIPT_BYTES // 1_000_000} MB."
        )
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ScriptError(
            f"{path.name} is not UTF-8 text; save it as UTF-8 and open it again."
        ) from None
    if "\0" in text:
        raise ScriptError(f"{path.name} is not a text file.")
    return text, is_markdown(path)


def parse_script(text: str, *, markdown: bool = False) -> Script:
    """Parse ``text`` into cues (see the module docs). Never raises for any string."""
    lines = tuple(text.splitlines(keepends=True))
    cues: list[Cue] = []
    section: str | None = None
    pending_notes: list[str] = []  # notes waiting for the next cue
    para_text: list[int] = []  # line numbers of the open paragraph's text
    para_notes: list[str] = []  # notes inside the open paragraph

    def close_paragraph() -> None:
        nonlocal para_text, para_notes
        if para_text:
            spoken = " ".join(
                s for s in (_spoken(lines[n], markdown) for n in para_text) if s
            ).strip()
            if spoken:
                cues.append(
                    Cue(
                        index=len(cues),
                        text=spoken,
                        source="\n".join(lines[n].rstrip("\r\n") for n in para_text),
                        section=section,
                        notes=(*pending_notes, *para_notes),
                        lines=tuple(para_text),
                    )
                )
                pending_notes.clear()
            else:  # only formatting, nothing to say: its notes wait for the next cue
                pending_notes.extend(para_notes)
        else:
            pending_notes.extend(para_notes)
        para_text, para_notes = [], []

    for number, raw in enumerate(lines):
        line = raw.rstrip("\r\n")
        if not line.strip() or (markdown and _BREAK.match(line)):
            close_paragraph()
            continue
        title = _TITLE.match(line)
        if title is not None:
            close_paragraph()
            heading = (title.group(2) or "").strip()
            section = _inline_text(heading) if markdown else heading
            section = section or None
            continue
        note = _NOTE.match(line)
        if note is not None:
            body = (note.group(1) or "").strip()
            if body:
                para_notes.append(body)
            continue
        para_text.append(number)
    close_paragraph()
    if pending_notes and cues:
        last = cues[-1]
        cues[-1] = dataclasses.replace(last, notes=(*last.notes, *pending_notes))
    return Script(cues=tuple(cues), lines=lines, markdown=markdown)


def _spoken(raw: str, markdown: bool) -> str:
    line = raw.strip()
    if not markdown:
        return " ".join(line.split())
    line = _BLOCK_MARKER.sub("", line, count=1)
    return " ".join(_inline_text(line).split())


def _line_ending(lines: Sequence[str]) -> str:
    for line in lines:
        if line.endswith("\r\n"):
            return "\r\n"
        if line.endswith("\n"):
            return "\n"
    return "\n"


def warm_up_markdown() -> None:
    """Import the Markdown parser in a thread of its own, once (its import takes tens of
    milliseconds: not on the GUI thread when a presenter opens a script)."""
    global _warming
    if _warming is None:
        _warming = threading.Thread(target=_markdown, name="markdown-import", daemon=True)
        _warming.start()


_warming: threading.Thread | None = None


@lru_cache(maxsize=1)
def _markdown() -> object:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark")


def _inline_text(text: str) -> str:
    """The plain text of one line of inline Markdown (emphasis, links, code, escapes)."""
    if _INLINE_SYNTAX.search(text) is None:
        return text
    return _parsed_inline_text(text)


def _parsed_inline_text(text: str) -> str:
    """:func:`_inline_text` by the Markdown parser, whatever the line holds."""
    parser = _markdown()
    tokens = parser.parseInline(text)  # type: ignore[attr-defined]
    out: list[str] = []
    for token in tokens:
        for child in token.children or ():
            if child.type in ("text", "code_inline"):
                out.append(child.content)
            elif child.type in ("softbreak", "hardbreak"):
                out.append(" ")
            elif child.type == "image":
                out.append(child.content)
    return "".join(out)


__all__ = [
    "DEFAULT_CHARS_PER_S",
    "Cue",
    "Script",
    "ScriptError",
    "estimate_s",
    "parse_script",
    "read_script",
]
