"""Pictures the console draws on the server: the confusion matrix as an SVG heatmap.

An inline SVG written here, not a matplotlib PNG: a few dozen rectangles need no plotting
library (matplotlib would add tens of megabytes to the image and a font cache to every
worker), the browser scales it sharply, and its text is escaped like the rest of the page.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

CELL = 44
LABEL_WIDTH = 120
HEADER_HEIGHT = 96
# Room on the right for the last column's label, written at 45 degrees.
RIGHT_MARGIN = 80
MAX_LABEL_CHARS = 16
# From white to a dark blue: a cell's share of its true class (its row).
LIGHT = (247, 251, 255)
DARK = (8, 69, 148)


def _shade(share: float) -> str:
    red, green, blue = (
        round(low + (high - low) * share) for low, high in zip(LIGHT, DARK, strict=True)
    )
    return f"rgb({red},{green},{blue})"


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL_CHARS else label[: MAX_LABEL_CHARS - 1] + "…"


def confusion_matrix_svg(labels: Sequence[object], matrix: Sequence[Sequence[int]]) -> Markup:
    """An SVG heatmap: rows are true labels, columns predictions, shaded by row share.

    Labels come from an uploaded CSV, so every one is escaped; a long label is shortened
    on the picture and kept whole in its tooltip.
    """
    names = [str(label) for label in labels]
    size = len(names)
    width = LABEL_WIDTH + CELL * size + RIGHT_MARGIN
    height = HEADER_HEIGHT + CELL * size
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="heatmap" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        "<title>Confusion matrix: rows are true labels, columns are predictions</title>",
    ]
    for column, name in enumerate(names):
        x = LABEL_WIDTH + CELL * column + CELL // 2
        parts.append(
            f'<text x="{x}" y="{HEADER_HEIGHT - 6}" transform="rotate(-45 {x} {HEADER_HEIGHT - 6})"'
            f' class="axis"><title>predicted {escape(name)}</title>{escape(_short(name))}</text>'
        )
    for row, (name, counts) in enumerate(zip(names, matrix, strict=True)):
        y = HEADER_HEIGHT + CELL * row
        parts.append(
            f'<text x="{LABEL_WIDTH - 6}" y="{y + CELL // 2 + 4}" text-anchor="end" class="axis">'
            f"<title>true {escape(name)}</title>{escape(_short(name))}</text>"
        )
        total = sum(counts) or 1
        for column, count in enumerate(counts):
            share = count / total
            x = LABEL_WIDTH + CELL * column
            ink = "#fff" if share > 0.5 else "#111"
            parts.append(
                f'<rect x="{x}" y="{y}" width="{CELL}" height="{CELL}" fill="{_shade(share)}" '
                f'stroke="#ccc"><title>true {escape(name)}, predicted '
                f"{escape(names[column])}: {int(count)}</title></rect>"
                f'<text x="{x + CELL // 2}" y="{y + CELL // 2 + 4}" text-anchor="middle" '
                f'fill="{ink}">{int(count)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every piece of text above is escaped
