"""The confusion-matrix heatmap: one shaded cell per count, every label escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from rest_api.console.pictures import confusion_matrix_svg

SVG = "{http://www.w3.org/2000/svg}"


def test_one_cell_per_count_shaded_by_row_share() -> None:
    svg = ET.fromstring(str(confusion_matrix_svg(["a", "b"], [[3, 1], [0, 4]])))  # noqa: S314
    cells = svg.findall(f"{SVG}rect")
    assert len(cells) == 4
    counts = [text.text for text in svg.findall(f"{SVG}text") if text.get("class") != "axis"]
    assert counts == ["3", "1", "0", "4"]
    fills = [cell.get("fill") for cell in cells]
    assert fills[3] == "rgb(8,69,148)"  # 4 of 4: the darkest
    assert fills[2] == "rgb(247,251,255)"  # 0 of 4: white


def test_labels_from_the_csv_stay_text() -> None:
    label = '<script>alert("x")</script>'
    svg_text = str(confusion_matrix_svg([label, "ok"], [[1, 0], [0, 1]]))
    assert "<script>" not in svg_text
    # Still well-formed: the label did not break out. (Our own SVG: no untrusted XML.)
    svg = ET.fromstring(svg_text)  # noqa: S314
    axis = [text for text in svg.iter(f"{SVG}text") if text.get("class") == "axis"]
    assert any((text.findtext(f"{SVG}title") or "").endswith(label) for text in axis)
