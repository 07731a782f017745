"""Cut text into sentences, one avatar task each, whole or as it arrives in pieces.

The same rules serve a pasted text (:func:`split_sentences`) and an LLM stream
(:class:`SentenceChunker`): feeding any split of a text piece by piece gives exactly the chunks of
the whole text, and each chunk is handed out as soon as it is certain.

Rules
-----
* Whitespace is normalised: every run of whitespace (``str.isspace``) becomes one space, leading
  and trailing whitespace is dropped. A run that holds a line break (``\\n``, ``\\r``, ``\\v``,
  ``\\f``, ``\\x1c``-``\\x1e``, ``\\x85``, ``\\u2028``, ``\\u2029``) always ends a sentence.
* Sentences are only ever cut at whitespace, so decimals, versions, times and URLs (``3.14``,
  ``v2.0.1``, ``12:30``, ``example.com``) are never cut. Text without spaces after its
  punctuation (including CJK text) is not split into sentences; only the length bound cuts it.
* A word whose end (after closing quotes and brackets, see ``CLOSERS``) is ``.``, ``!``,
  ``?`` or ``‽`` ends its sentence; the closing marks stay with it. Exceptions:

  - titles and other abbreviations that never end a sentence: ``Mr. Mrs. Ms. Dr. Prof. St. vs.
    e.g. i.e. cf. ...`` (see ``NEVER_END``);
  - initials: one capital letter and a dot (``J. R. R. Tolkien``), except ``I.``, and dotted
    capitals without spaces (``J.R.R. Tolkien``) unless listed in ``MAYBE_END``;
  - abbreviations that may end a sentence (``etc. a.m. p.m. Inc. Jr. U.S. U.K.`` and every
    other dotted abbreviation such as ``Ph.D.``) end it only when the next word starts with a
    capital letter (opening quotes and brackets skipped): ``at 5 p.m. and`` stays,
    ``etc. Then`` cuts;
  - a list number at the start of a sentence (``1. First``) does not end it, nor does a word
    without a letter or digit at the start of a sentence (a lone ``...``).

* Ellipses (``...``, two or more dots, or ``…``) and a terminator followed by closing quotes or
  brackets (``"Stop!" she said``) end the sentence unless the next word starts with a lower-case
  letter: ``Wait... what?`` is one chunk, ``Wait... What?`` two.
* A sentence longer than ``max_chars`` is cut at the last ``,``/``;``/``:`` followed by a space
  within the bound, if that keeps at least half the bound; else at the last space within the
  bound; a single word longer than the bound is cut hard, by code points, every ``max_chars``.

Invariant (tested with hypothesis): let ``N = " ".join(text.split())``. Walking the chunks in
order, each chunk is the next slice of ``N``; between two chunks ``N`` has either one space (a
soft cut, the space is dropped) or nothing (a hard cut, only inside a word longer than the
bound, right after a chunk of exactly ``max_chars`` characters without a space). So no text is
lost, added or reordered, and when no word is longer than the bound, ``" ".join(chunks) == N``.
Every chunk is non-empty, has no leading or trailing whitespace, no line break and no run of
spaces, and is at most ``max_chars`` long.

A sentence is handed out as soon as it is certain: when the whitespace after a definite end
(``.``, ``!``, ``?``) or a line break arrives; for ellipses and abbreviations, when the next
word's first letter arrives; and at :meth:`SentenceChunker.flush`.

Cost: each piece is scanned once with a regular expression; the buffer never holds more than
about ``max_chars`` characters plus the word being read, so a stream costs O(n) overall.
"""

from __future__ import annotations

import re
from enum import Enum, auto
from typing import Final

DEFAULT_MAX_CHARS: Final = 400

_TOKEN: Final = re.compile(r"\s+|\S+")
_LINE_BREAK: Final = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
_ALNUM: Final = re.compile(r"[^\W_]")
#: Opening quotes and brackets, typographic ones included.
OPENERS: Final = "\"'\u201c\u2018\u201e\u201a\u00ab\u2039([{\u00bf\u00a1"
#: Closing quotes and brackets, typographic ones included.
CLOSERS: Final = "\"'\u201d\u2019\u00bb\u203a)]}"
_OPENER_RUN: Final = re.compile("[" + re.escape(OPENERS) + "]*")
_TERMINATORS: Final = ".!?‽"
#: Abbreviations (lower case, without the final dot) after which a sentence never ends.
NEVER_END: Final = frozenset(
    {
        "mr", "mrs", "ms", "mx", "dr", "prof", "st", "mt", "rev", "hon", "gen", "col",
        "capt", "cpt", "lt", "sgt", "maj", "gov", "sen", "pres", "fr", "vs", "e.g", "i.e",
        "cf", "viz", "approx", "ca", "fig", "figs", "eq", "vol", "pp", "dept", "univ", "mme",
        "mlle", "messrs",
    }
)  # fmt: skip
#: Abbreviations that end a sentence only when a capitalised word follows.
MAYBE_END: Final = frozenset(
    {
        "etc", "a.m", "p.m", "inc", "ltd", "co", "corp", "jr", "sr", "al", "esq", "bros", "ft",
        "u.s", "u.k", "u.s.a", "e.u", "u.n", "d.c",
    }
)  # fmt: skip
_DOTTED: Final = re.compile(r"(?:[^\W\d_]{1,3}\.)+[^\W\d_]{1,3}")
_INITIALS: Final = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")
_LIST_NUMBER: Final = re.compile(r"\d{1,3}")
_TAIL: Final = 32  # how much of a word is kept for classifying its end


class _End(Enum):
    """What the end of a word means for the sentence it is in."""

    NO = auto()  # the sentence goes on
    YES = auto()  # the sentence ends
    UNLESS_LOWER = auto()  # ends unless the next word starts with a lower-case letter
    IF_UPPER = auto()  # ends only if the next word starts with a capital letter


def _classify(tail: str, length: int, has_alnum: bool, first: bool) -> _End:
    """Classify a finished word from its last ``_TAIL`` characters (all of it when short)."""
    core = tail.rstrip(CLOSERS)
    if not core or core[-1] not in _TERMINATORS + "…":
        return _End.NO
    if first and not has_alnum:
        return _End.NO
    if core.endswith(("…", "..")):
        return _End.UNLESS_LOWER
    if len(core) < len(tail):
        return _End.UNLESS_LOWER
    if core[-1] != ".":
        return _End.YES
    if length > _TAIL:  # too long to be an abbreviation
        return _End.YES
    stem = core[:-1].lstrip(OPENERS)
    lower = stem.lower()
    if lower in NEVER_END:
        return _End.NO
    if len(stem) == 1 and stem.isupper() and stem != "I":
        return _End.NO  # an initial
    if lower in MAYBE_END:
        return _End.IF_UPPER
    if _INITIALS.fullmatch(stem) and stem.isupper():
        return _End.NO  # initials without spaces: "J.R.R."
    if _DOTTED.fullmatch(stem):
        return _End.IF_UPPER
    if first and _LIST_NUMBER.fullmatch(stem):
        return _End.NO
    return _End.YES


class SentenceChunker:
    """Incremental sentence cutter: :meth:`feed` pieces, get sentences once they are certain.

    :meth:`flush` ends the stream, returns the rest and resets the chunker for a new stream.
    """

    def __init__(self, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        if max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, not {max_chars}")
        self._max = max_chars
        self._reset()

    @property
    def max_chars(self) -> int:
        return self._max

    def _reset(self) -> None:
        self._out: list[str] = []
        # the current sentence, certain text only, whitespace already normalised
        self._parts: list[str] = []
        self._len = 0
        # the word being read and the whitespace after it
        self._in_word = False
        self._in_space = False
        self._newline = False
        self._gap_cut = False  # the whitespace being read already ended the sentence
        self._tail = ""
        self._word_len = 0
        self._word_alnum = False
        self._words = 0  # words finished in the current sentence
        self._last_end = _End.NO
        # a decision that waits for the first letter of the next word
        self._pending: _End | None = None
        self._held: list[str] = []

    def feed(self, piece: str) -> list[str]:
        """Take the next piece of text; return the chunks that are now complete."""
        for match in _TOKEN.finditer(piece):
            token = match.group()
            if token[0].isspace():
                self._space(token)
            else:
                self._chars(token)
        out, self._out = self._out, []
        return out

    def flush(self) -> list[str]:
        """End the stream: return every remaining chunk and start afresh."""
        if self._in_word:
            self._end_word()
        self._boundary()
        out = self._out
        self._reset()
        return out

    # -- reading ---------------------------------------------------------------------------

    def _space(self, token: str) -> None:
        if self._in_word:
            self._end_word()
            self._in_word = False
            self._in_space = True
            self._newline = False
            # a definite sentence end is certain now: hand it out without waiting for more
            self._gap_cut = self._last_end is _End.YES
            if self._gap_cut:
                self._boundary()
        elif not self._in_space:
            return  # leading whitespace
        if not self._newline and _LINE_BREAK.search(token):
            self._newline = True
            if not self._gap_cut:
                self._gap_cut = True
                self._boundary()

    def _chars(self, token: str) -> None:
        if self._in_space:
            self._in_space = False
            self._separator()
        if not self._in_word:
            self._in_word = True
            self._tail = ""
            self._word_len = 0
            self._word_alnum = False
        self._tail = (self._tail + token)[-_TAIL:]
        self._word_len += len(token)
        if not self._word_alnum and _ALNUM.search(token):
            self._word_alnum = True
        if self._pending is None:
            self._push(token)
            return
        start = _OPENER_RUN.match(token)
        skipped = start.end() if start else 0
        if skipped == len(token):
            self._held.append(token)
            return
        self._resolve(token[skipped])
        self._held.append(token)
        self._push_held()

    def _end_word(self) -> None:
        if self._pending is not None:  # the whole word was opening marks
            self._resolve(None)
            self._push_held()
        first = self._words == 0
        self._words += 1
        self._last_end = _classify(self._tail, self._word_len, self._word_alnum, first)

    def _separator(self) -> None:
        """Whitespace ended and a new word starts: is the gap a sentence end?"""
        if self._gap_cut:
            return  # yes, and the sentence was handed out when the whitespace arrived
        if self._last_end is _End.NO:
            self._push(" ")
        else:
            self._pending = self._last_end  # it depends on the next word's first letter

    def _resolve(self, letter: str | None) -> None:
        end, self._pending = self._pending, None
        if end is _End.UNLESS_LOWER:
            cut = letter is None or not letter.islower()
        else:
            cut = letter is not None and letter.isupper()
        if cut:
            self._boundary()
        else:
            self._push(" ")

    def _push_held(self) -> None:
        held = "".join(self._held)
        self._held = []
        if held:
            self._push(held)

    # -- cutting ---------------------------------------------------------------------------

    def _boundary(self) -> None:
        if self._parts:
            chunk = "".join(self._parts)
            self._parts = []
            self._len = 0
            if chunk:
                self._out.append(chunk)
        self._words = 0

    def _push(self, text: str) -> None:
        self._parts.append(text)
        self._len += len(text)
        if self._len <= self._max:
            return
        buffer = "".join(self._parts)
        pos = 0
        while len(buffer) - pos > self._max:
            pos = self._cut(buffer, pos)
        rest = buffer[pos:]
        self._parts = [rest] if rest else []
        self._len = len(rest)

    def _cut(self, buffer: str, pos: int) -> int:
        """Emit one chunk of at most ``max_chars`` from ``buffer[pos:]``; return the new start."""
        window = buffer[pos : pos + self._max + 1]
        clause = max(window.rfind(", "), window.rfind("; "), window.rfind(": "))
        prefer_clause = clause >= 0 and clause + 1 >= self._max // 2
        cut = clause + 1 if prefer_clause else window.rfind(" ")
        if cut > 0:
            self._out.append(window[:cut])
            return pos + cut + 1
        self._out.append(window[: self._max])
        return pos + self._max


def split_sentences(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """Cut a whole text into sentence chunks (see the module docs for the rules)."""
    chunker = SentenceChunker(max_chars)
    return chunker.feed(text) + chunker.flush()
