"""A small form-drawing layer over fpdf2, in the look of the FEMA ICS forms:
ruled boxes with a numbered block title in the corner, grey block bars, and
tables whose header row repeats on every page.

Fonts: names on these forms come from anywhere ("Équipe Nord", "Bergwacht
Süd", Łódź, Ελλάδα), so a Unicode TrueType font is embedded when one exists:
DejaVu Sans Condensed from the system, else the DejaVu Sans that matplotlib
ships (a dependency, so it is always there).  Only when neither is found do we
fall back to the PDF core font Helvetica, which can show Latin-1 only; text is
then transliterated (accents dropped, anything else as ``?``) instead of
failing the whole export.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import textwrap
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, cast

from fpdf import FPDF, FontFace
from fpdf.enums import XPos, YPos

# fpdf2 subsets the embedded font with fontTools, which logs a few hundred
# INFO lines per PDF: with the CLI's INFO logging, `plan solve --export`
# buried its own output under them.  Its warnings still show.
logging.getLogger("fontTools").setLevel(logging.WARNING)

Paper = Literal["A4", "Letter"]

MARGIN_MM = 10.0
"""Page margin: inside the unprintable edge of office printers (about 5 mm)."""

FOOTER_MM = 14.0
"""Space kept free at the bottom for the form footer."""

LABEL_PT = 6.5
"""Block titles: small, like the printed form, to leave room for the entry."""

VALUE_PT = 8.5
"""Entries: the smallest size that stays legible on a clipboard in the rain."""

MAX_CELL_LINES = 25
"""fpdf2 cannot split a table row across pages, and a row taller than a page
is an error; a cell's text is cut (or, for logs, split over rows) at about
this many lines.  Estimated from character counts, so a line of wide glyphs
may wrap to twice as many; 50 lines of 8 pt still fit under the headings."""

_FAMILY = "formfont"
_SYSTEM_DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
_HEADING_FILL = (225, 225, 225)


@functools.cache
def unicode_font() -> tuple[str, str] | None:
    """(regular, bold) TTF paths of a Unicode font, or None when none exists."""
    candidates = [
        (_SYSTEM_DEJAVU / "DejaVuSansCondensed.ttf",
         _SYSTEM_DEJAVU / "DejaVuSansCondensed-Bold.ttf"),
        (_SYSTEM_DEJAVU / "DejaVuSans.ttf", _SYSTEM_DEJAVU / "DejaVuSans-Bold.ttf"),
    ]
    spec = importlib.util.find_spec("matplotlib")
    for root in (spec.submodule_search_locations or []) if spec else []:
        ttf = Path(root) / "mpl-data" / "fonts" / "ttf"
        candidates.append((ttf / "DejaVuSans.ttf", ttf / "DejaVuSans-Bold.ttf"))
    for regular, bold in candidates:
        if regular.is_file() and bold.is_file():
            return (str(regular), str(bold))
    return None


def latin1(text: str) -> str:
    """Transliterate for the Latin-1 core fonts: keep what fits, drop accents
    from what does not (``Ł`` has no decomposition and becomes ``?``)."""
    out: list[str] = []
    for ch in text:
        if ord(ch) < 256:
            out.append(ch)
            continue
        base = "".join(c for c in unicodedata.normalize("NFKD", ch)
                       if not unicodedata.combining(c))
        out.append(base if base and all(ord(c) < 256 for c in base) else "?")
    return "".join(out)


def cell_chars(width_mm: float, size_pt: float = VALUE_PT - 0.5) -> int:
    """How many characters a table cell may hold (see MAX_CELL_LINES); an
    average glyph of DejaVu Sans Condensed is about 0.5 em wide."""
    per_line = max(4, int(width_mm / (size_pt * 0.3528 * 0.5)))
    return per_line * MAX_CELL_LINES


def split_text(text: str, limit: int) -> list[str]:
    """Text in pieces of at most ``limit`` characters, broken at spaces."""
    if len(text) <= limit:
        return [text]
    return textwrap.wrap(text, limit, replace_whitespace=False) or [""]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


class FormPDF(FPDF):
    """One PDF of ICS forms; a form is a section of pages with its own title."""

    def __init__(self, paper: Paper = "A4") -> None:
        super().__init__(orientation="P", unit="mm", format=paper)
        self.set_margins(MARGIN_MM, MARGIN_MM, MARGIN_MM)
        self.set_auto_page_break(True, margin=FOOTER_MM)
        self.set_creator("fieldc2")
        fonts = unicode_font()
        self.has_unicode = fonts is not None
        if fonts is not None:
            self.add_font(_FAMILY, "", fonts[0])
            self.add_font(_FAMILY, "B", fonts[1])
        self.form_family = _FAMILY if self.has_unicode else "helvetica"
        self.form_footer = ""
        self.continued = ""
        self.section_start = 1
        self.starting = False

    def start_form(self, footer: str, continued: str) -> None:
        """Begin a new form on a new page; ``continued`` heads its later pages.

        The previous form's last footer is drawn inside ``add_page``, so the
        new form's texts are set only after it."""
        self.starting = True
        self.add_page()
        self.starting = False
        self.form_footer, self.continued = footer, continued
        self.section_start = self.page_no()

    def clean(self, text: str) -> str:
        """Text the current font can show."""
        return text if self.has_unicode else latin1(text)

    def use(self, size: float, bold: bool = False) -> None:
        """Select the form font."""
        self.set_font(self.form_family, "B" if bold else "", size)

    def header(self) -> None:
        if self.starting or not self.continued:
            return
        self.use(LABEL_PT + 1, bold=True)
        self.cell(0, 5, self.clean(self.continued), border="B",
                  new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(2)

    def footer(self) -> None:
        self.set_y(-FOOTER_MM + 3)
        self.use(LABEL_PT + 0.5, bold=True)
        self.cell(self.epw / 2, 5, self.clean(self.form_footer), border="T")
        page = self.page_no() - self.section_start + 1
        self.cell(self.epw / 2, 5, f"Page {page}", border="T", align="R")

    def box(self, x: float, y: float, w: float, h: float, label: str, value: str = "",
            *, size: float = VALUE_PT, bold: bool = False) -> None:
        """A ruled box: the block title top left, the entry under it, clipped
        to the box so that a long entry cannot run over the next block."""
        self.rect(x, y, w, h)
        self.set_xy(x + 0.8, y + 0.6)
        self.use(LABEL_PT, bold=True)
        self.cell(w - 1.6, 2.8, self.clean(label))
        if not value:
            return
        self.use(size, bold=bold)
        line_h = size * 0.42
        lines = cast(list[str], self.multi_cell(w - 1.6, line_h, self.clean(value),
                                                dry_run=True, output="LINES"))
        room = max(1, int((h - 4.2) // line_h))
        self.set_xy(x + 0.8, y + 3.8)
        self.multi_cell(w - 1.6, line_h, "\n".join(lines[:room]),
                        new_x=XPos.LEFT, new_y=YPos.NEXT)

    def block(self, label: str) -> None:
        """A full-width grey bar with a block number and title."""
        self.use(LABEL_PT + 1, bold=True)
        self.set_fill_color(*_HEADING_FILL)
        self.set_x(self.l_margin)
        self.cell(0, 4.5, self.clean(label), border=1, fill=True,
                  new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def grid(self, headings: Sequence[str], widths: Sequence[float],
             rows: Sequence[Sequence[str]], *, size: float = VALUE_PT - 0.5) -> None:
        """A ruled table, full page width, with the heading row repeated on
        every page it runs over."""
        self.use(size)
        self.set_fill_color(255, 255, 255)
        style = FontFace(emphasis="BOLD", fill_color=_HEADING_FILL, size_pt=LABEL_PT + 0.5)
        with self.table(col_widths=tuple(widths), width=self.epw, headings_style=style,
                        line_height=size * 0.45, text_align="LEFT",
                        repeat_headings=1, padding=0.8,
                        cell_fill_mode="NONE") as table:
            head = table.row()
            for h in headings:
                head.cell(self.clean(h))
            for values in rows:
                row = table.row()
                for v, w in zip(values, widths, strict=True):
                    row.cell(self.clean(_cut(v, cell_chars(w, size))))

    def room_left(self) -> float:
        """Millimetres left above the footer on this page."""
        return self.h - FOOTER_MM - self.get_y()

    def ensure_room(self, mm: float) -> None:
        """Start a new page unless ``mm`` fit on this one (keeps a block whole)."""
        if self.room_left() < mm:
            self.add_page()

    def to_bytes(self) -> bytes:
        """The finished PDF."""
        return bytes(self.output())

    def close_fonts(self) -> None:
        """Close the font files fpdf2 keeps open (it closes only fonts that
        reach ``output``; an error half-way would leak the handles)."""
        for font in self.fonts.values():
            close = getattr(font, "close", None)
            if close is not None:
                close()


@contextlib.contextmanager
def form_pdf(paper: Paper = "A4") -> Iterator[FormPDF]:
    """A FormPDF whose font files are closed however the export ends."""
    pdf = FormPDF(paper)
    try:
        yield pdf
    finally:
        pdf.close_fonts()
