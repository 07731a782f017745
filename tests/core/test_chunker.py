"""The sentence chunker: a table of tricky texts, and properties checked with hypothesis."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avaturn_desktop.core.chunker import DEFAULT_MAX_CHARS, SentenceChunker, split_sentences

TABLE: list[tuple[str, list[str]]] = [
    ("", []),
    ("   \n\t  ", []),
    ("Hello", ["Hello"]),
    ("Hello world. How are you? Fine!", ["Hello world.", "How are you?", "Fine!"]),
    ("  padded   words\tand  tabs.  ", ["padded words and tabs."]),
    # abbreviations and initials
    ("Mr. Smith met Dr. Jones. They talked.", ["Mr. Smith met Dr. Jones.", "They talked."]),
    ("Fruit, e.g. apples, i.e. red ones. Done.", ["Fruit, e.g. apples, i.e. red ones.", "Done."]),
    ("Apples vs. Pears at St. Mary. Next.", ["Apples vs. Pears at St. Mary.", "Next."]),
    (
        "We met at 5 p.m. and left at 9 a.m. Then rain.",
        ["We met at 5 p.m. and left at 9 a.m.", "Then rain."],
    ),
    ("We bought pears, etc. Then we left.", ["We bought pears, etc.", "Then we left."]),
    ("Pears, etc. and more.", ["Pears, etc. and more."]),
    ("I live in the U.S. It is big.", ["I live in the U.S.", "It is big."]),
    ("The U.S. economy grew.", ["The U.S. economy grew."]),
    (
        "J. R. R. Tolkien wrote it. So did J.R.R. Tolkien.",
        ["J. R. R. Tolkien wrote it.", "So did J.R.R. Tolkien."],
    ),
    ("So do I. Then go.", ["So do I.", "Then go."]),
    ("She has a Ph.D. She works.", ["She has a Ph.D.", "She works."]),
    # numbers
    (
        "Pi is 3.14 and v2.0.1 shipped at 12:30. Next.",
        ["Pi is 3.14 and v2.0.1 shipped at 12:30.", "Next."],
    ),
    ("It costs $4.99. Cheap.", ["It costs $4.99.", "Cheap."]),
    ("Born in 1990. Raised in Rome.", ["Born in 1990.", "Raised in Rome."]),
    ("1. First item\n2. Second item", ["1. First item", "2. Second item"]),
    ("Visit example.com.au today. Or not.", ["Visit example.com.au today.", "Or not."]),
    # ellipses: cut unless the text goes on in lower case
    ("Wait... what?", ["Wait... what?"]),
    ("Wait... What?", ["Wait...", "What?"]),
    ("Well… maybe. Well… No.", ["Well… maybe.", "Well…", "No."]),
    ("... and then. Fine.", ["... and then.", "Fine."]),
    ("Hmm.. okay", ["Hmm.. okay"]),
    # quotes and brackets stay with their sentence
    ('He said "Stop." Then left.', ['He said "Stop."', "Then left."]),
    ('"Stop!" she said. "Go!" He went.', ['"Stop!" she said.', '"Go!"', "He went."]),
    ("It ended (finally.) Next one.", ["It ended (finally.)", "Next one."]),
    ("„Hallo.“ Dann.", ["„Hallo.“ Dann."]),  # German closing “ is an opener elsewhere
    ("«Salut.» Puis!", ["«Salut.»", "Puis!"]),
    ("Really?! Yes!!! ‽ ok", ["Really?!", "Yes!!!", "‽ ok"]),
    ('Dots... "Quoted start" here.', ["Dots...", '"Quoted start" here.']),
    # line breaks always cut
    ("Line one\nline two\r\nline three", ["Line one", "line two", "line three"]),
    ("Dear Mr.\nSmith", ["Dear Mr.", "Smith"]),
    ("Para one.\n\n\nPara two.", ["Para one.", "Para two."]),
    ("Unicode\u2028separator", ["Unicode", "separator"]),
    # no cut without whitespace
    ("end.Start", ["end.Start"]),
    ("日本語です。次の文です。", ["日本語です。次の文です。"]),
    ("Emoji 😀. RTL שלום. Done", ["Emoji 😀.", "RTL שלום.", "Done"]),
]


@pytest.mark.parametrize(("text", "expected"), TABLE)
def test_table(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected
    # and fed one character at a time
    chunker = SentenceChunker()
    got = [chunk for ch in text for chunk in chunker.feed(ch)] + chunker.flush()
    assert got == expected


LONG_TABLE: list[tuple[str, int, list[str]]] = [
    ("aaaa bbbb cccc", 9, ["aaaa bbbb", "cccc"]),
    ("aaaa bbbb cccc", 10, ["aaaa bbbb", "cccc"]),
    ("aaaa, bbbb cccc dd", 14, ["aaaa, bbbb", "cccc dd"]),
    # a comma too early (less than half the bound) is not preferred over the last space
    ("a, bbbb cccc dddd", 12, ["a, bbbb cccc", "dddd"]),
    ("one; two three", 9, ["one;", "two three"]),
    ("abcdefghij", 4, ["abcd", "efgh", "ij"]),
    ("xy abcdefghij z", 4, ["xy", "abcd", "efgh", "ij z"]),
    ("ab cd. ef", 1, ["a", "b", "c", "d", ".", "e", "f"]),
]


@pytest.mark.parametrize(("text", "max_chars", "expected"), LONG_TABLE)
def test_length_bound(text: str, max_chars: int, expected: list[str]) -> None:
    assert split_sentences(text, max_chars) == expected


def test_default_bound_and_bad_bound() -> None:
    sentence = " ".join(["word"] * 300) + "."
    chunks = split_sentences(sentence)
    assert all(len(c) <= DEFAULT_MAX_CHARS for c in chunks)
    assert " ".join(chunks) == sentence
    with pytest.raises(ValueError, match="at least 1"):
        SentenceChunker(0)


def test_incremental_hands_out_sentences_early() -> None:
    chunker = SentenceChunker()
    assert chunker.feed("Hello there. How") == ["Hello there."]
    assert chunker.feed(" are you") == []
    assert chunker.feed("?") == []  # "?!" could follow
    assert chunker.feed(" ") == ["How are you?"]  # certain once whitespace follows
    assert chunker.feed("I am fine") == []
    assert chunker.feed("\n") == ["I am fine"]  # a line break ends it at once
    assert chunker.feed("Dr.") == []
    assert chunker.feed(" ") == []  # an abbreviation waits for the next word
    assert chunker.feed("Who") == []
    assert chunker.flush() == ["Dr. Who"]
    # an ellipsis waits for the next word's first letter, past opening quotes
    assert chunker.feed('Wait... "') == []
    assert chunker.feed("what") == []
    assert chunker.feed('" ok. ') == ['Wait... "what" ok.']
    assert chunker.flush() == []
    # flush resets: the chunker serves the next stream
    assert chunker.feed("Next stream. A") == ["Next stream."]
    assert chunker.flush() == ["A"]


def test_incremental_is_linear() -> None:
    """A long stream fed in tiny pieces takes about as long as the whole at once."""
    text = "The quick brown fox, e.g. Mr. Fox, jumps at 5 p.m. over 3.14 dogs... twice! " * 2000
    start = time.perf_counter()
    whole = split_sentences(text)
    whole_s = time.perf_counter() - start
    chunker = SentenceChunker()
    start = time.perf_counter()
    pieces = [text[i : i + 3] for i in range(0, len(text), 3)]
    got = [c for p in pieces for c in chunker.feed(p)] + chunker.flush()
    pieces_s = time.perf_counter() - start
    assert got == whole
    # quadratic rescanning would take minutes here; linear is well under a second
    assert pieces_s < 2.0 + 10 * whole_s
    huge_word = "x" * 200_000
    start = time.perf_counter()
    chunker = SentenceChunker(50)
    got = [c for i in range(0, len(huge_word), 7) for c in chunker.feed(huge_word[i : i + 7])]
    got += chunker.flush()
    assert time.perf_counter() - start < 2.0
    assert got == [huge_word[i : i + 50] for i in range(0, len(huge_word), 50)]


# -- properties ----------------------------------------------------------------------------

_FRAGMENTS = [
    "Mr.", "Dr.", "e.g.", "i.e.", "etc.", "vs.", "St.", "a.m.", "p.m.", "U.S.", "J.", "R.",
    "I.", "1.", "3.14", "v2.0.1", "12:30", "...", "…", "?!", '"', "'", "“", "”", "«", "»",
    "(", ")", "[", "]", "Hello", "world", "the", "A", "b", "word,", "semi;", "x" * 30,
    "😀", "שלום", "日本語。", ".", "!", "?",
]  # fmt: skip
_SPACES = [" ", "  ", "\n", "\t", "\r\n", "\xa0", "\u2028", " \n ", "\x1f", "\x85"]

tricky_text = st.lists(
    st.one_of(
        st.sampled_from(_FRAGMENTS),
        st.sampled_from(_SPACES),
        st.text(alphabet="aZ.!?… \n\"'(),", max_size=6),
    ),
    max_size=40,
).map("".join)
any_text = st.one_of(tricky_text, st.text(max_size=80))
bound = st.integers(min_value=1, max_value=60)


def check_invariant(text: str, chunks: list[str], max_chars: int) -> None:
    """Each chunk is the next slice of the normalised text; between chunks there is one space
    (soft cut) or nothing (hard cut, only after a full chunk without a space)."""
    normal = " ".join(text.split())
    pos = 0
    for chunk in chunks:
        assert chunk, "empty chunk"
        assert chunk == chunk.strip() and not chunk.isspace()
        assert "  " not in chunk and len(chunk.split()) == len(chunk.split(" "))
        assert len(chunk) <= max_chars
        assert normal.startswith(chunk, pos), (normal, pos, chunk)
        pos += len(chunk)
        if pos < len(normal):
            if normal[pos] == " ":
                pos += 1
            else:
                assert len(chunk) == max_chars and " " not in chunk, "hard cut inside a sentence"
    assert pos == len(normal)
    if all(len(word) <= max_chars for word in normal.split()):
        assert " ".join(chunks) == normal


@settings(max_examples=200, deadline=None)
@given(text=any_text)
def test_nothing_lost_default_bound(text: str) -> None:
    check_invariant(text, split_sentences(text), DEFAULT_MAX_CHARS)


@settings(max_examples=200, deadline=None)
@given(text=any_text, max_chars=bound)
def test_nothing_lost_small_bound(text: str, max_chars: int) -> None:
    check_invariant(text, split_sentences(text, max_chars), max_chars)


@settings(max_examples=200, deadline=None)
@given(
    text=any_text,
    max_chars=st.one_of(bound, st.just(DEFAULT_MAX_CHARS)),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12),
)
def test_incremental_equals_whole(text: str, max_chars: int, cuts: list[int]) -> None:
    points = sorted({c % (len(text) + 1) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    chunker = SentenceChunker(max_chars)
    got = [chunk for piece in pieces for chunk in chunker.feed(piece)] + chunker.flush()
    assert got == split_sentences(text, max_chars)


@settings(max_examples=100, deadline=None)
@given(text=tricky_text)
def test_char_by_char_equals_whole(text: str) -> None:
    chunker = SentenceChunker(40)
    got = [chunk for ch in text for chunk in chunker.feed(ch)] + chunker.flush()
    assert got == split_sentences(text, 40)
