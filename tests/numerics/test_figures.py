"""The book's figure style (dltheory.numerics.figures)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from dltheory.numerics import figures  # noqa: E402


def test_figure_sizes_and_palette():
    fig, axes = figures.figure(ncols=2)
    w, h = fig.get_size_inches()
    assert w == pytest.approx(figures.PAGE_WIDTH) and h == pytest.approx(figures.ROW_HEIGHT)
    assert len(axes) == 2
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    assert [c.upper() for c in colors] == [c.upper() for c in figures.PALETTE]
    plt.close(fig)
    fig, ax = figures.figure()
    assert fig.get_size_inches()[0] == pytest.approx(0.8 * figures.PAGE_WIDTH)
    plt.close(fig)


def test_palette_is_distinct_and_color_cycles():
    assert len(set(figures.PALETTE)) == len(figures.PALETTE)
    assert figures.color(len(figures.PALETTE)) == figures.PALETTE[0]


def test_book_style_is_local():
    before = plt.rcParams["font.size"]
    with figures.book_style():
        assert plt.rcParams["font.size"] == figures.STYLE["font.size"]
    assert plt.rcParams["font.size"] == before


@pytest.mark.parametrize("kw, word", [({"ncols": 0}, "ncols"), ({"width": 9.0}, "page width"),
                                      ({"row_height": -1.0}, "row_height")])
def test_bad_input_names_the_fix(kw, word):
    with pytest.raises(ValueError, match=word):
        figures.figure(**kw)
