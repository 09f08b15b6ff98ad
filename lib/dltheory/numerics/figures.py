"""The book's one figure style: sizes for the page width, legible fonts, a colour-blind-safe palette.

Every chapter draws its figures through :func:`figure` (or calls :func:`use_book_style` once and then uses plain
matplotlib), so that all figures of the book share one look (``shared/DESIGN.md`` §9, "the book's figure style").

- Width: the text column of the book's HTML theme is about 7 inches at 100 dpi; a figure is at most
  :data:`PAGE_WIDTH` wide, so it is shown at its natural size on a desktop and scales down on a phone. Fonts are
  11 pt (ticks 10 pt): at a 390 px wide screen a 7-inch figure shrinks by about 0.55, and 10 pt stays readable.
- Palette: Okabe & Ito, "Color Universal Design" (2008) -- eight colours that stay distinct under the common
  colour-vision deficiencies (:data:`PALETTE`, also the default colour cycle).
- Axes: no top and right spines, a light grid. Label every axis with its quantity and unit, e.g.
  ``"steps × η²"``, ``"test accuracy (%)"``.

Chapters cite this module in their figure cells; nothing here changes global state on import.
"""

from __future__ import annotations

from contextlib import contextmanager

#: Okabe-Ito colour-blind-safe palette (black moved last: it is kept for reference lines).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
#: Largest figure width in inches (the HTML text column).
PAGE_WIDTH = 7.0
#: Height of one row of panels in inches.
ROW_HEIGHT = 2.8

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "figure.figsize": (PAGE_WIDTH, ROW_HEIGHT),
    "figure.constrained_layout.use": True,
    "font.size": 11,
    "axes.titlesize": 11,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 9.5,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.8,
    "lines.markersize": 5,
}


def style_dict() -> dict:
    """The rcParams of the book's style, with the palette as the colour cycle (a new dict each call)."""
    from cycler import cycler

    return {**STYLE, "axes.prop_cycle": cycler(color=list(PALETTE))}


def use_book_style() -> None:
    """Apply the book's style to matplotlib's global rcParams (call once, at the top of a chapter)."""
    import matplotlib as mpl

    mpl.rcParams.update(style_dict())


@contextmanager
def book_style():
    """Context manager: the book's style inside the ``with`` block only."""
    import matplotlib as mpl

    with mpl.rc_context(style_dict()):
        yield


def figure(ncols: int = 1, nrows: int = 1, *, width: float | None = None, row_height: float = ROW_HEIGHT,
           **subplot_kw):
    """A new figure in the book's style with ``nrows × ncols`` panels: returns ``(fig, axes)`` like
    ``plt.subplots`` (``axes`` is a single Axes for one panel, else an array).

    ``width`` defaults to the page width (:data:`PAGE_WIDTH`) for two or more columns and to 0.8 of it for one;
    ``row_height`` is the height of one row in inches. Raises ``ValueError`` for a non-positive count or size.
    """
    from dltheory.numerics.validate import check_int, check_positive

    check_int("ncols", ncols)
    check_int("nrows", nrows)
    check_positive("row_height", row_height)
    if width is None:
        width = PAGE_WIDTH if ncols > 1 else 0.8 * PAGE_WIDTH
    check_positive("width", width)
    if width > PAGE_WIDTH:
        raise ValueError(f"width must be at most the page width, {PAGE_WIDTH} inches (got {width}); use more rows")
    import matplotlib.pyplot as plt

    use_book_style()
    return plt.subplots(nrows, ncols, figsize=(width, row_height * nrows), squeeze=True, **subplot_kw)


def color(i: int) -> str:
    """The ``i``-th colour of the palette (cycling)."""
    return PALETTE[i % len(PALETTE)]
