"""The category table of a converted checkpoint (loce.convert.categories)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loce.convert.categories import resolve_categories
from loce.errors import CheckpointError

V05 = Path(__file__).parents[1] / "fixtures" / "lvis_v0.5_val_100.json"


def _v05():
    return sorted(json.loads(V05.read_text())["categories"], key=lambda c: c["id"])


def test_the_bundled_v05_table_equals_the_real_annotations():
    cats = _v05()
    table = resolve_categories(1230, None)
    assert table.ids == [c["id"] for c in cats] and table.names == [c["name"] for c in cats]


def test_v05_names_in_another_order_get_their_ids():
    cats = _v05()[::-1]
    table = resolve_categories(1230, [c["name"] for c in cats])
    assert table.ids == [c["id"] for c in cats]
    assert "matched by name (1230 of 1230" in table.how


def test_without_names_to_match_ids_run_in_label_order():
    names = [f"thing_{i}" for i in range(1230)]  # not LVIS v0.5 names
    table = resolve_categories(1230, names)
    assert table.ids == list(range(1, 1231)) and table.names == names
    assert "pass --gt" in table.how
    v1 = resolve_categories(1203, None)
    assert v1.ids == list(range(1, 1204)) and v1.names[0] == "class 1"


def test_an_annotation_file_decides(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [], "annotations": [], "categories": [
        {"id": 7, "name": "b"}, {"id": 3, "name": "a"}]}))
    assert resolve_categories(2, ["a", "b"], ann).ids == [3, 7]
    assert resolve_categories(2, None, ann).names == ["a", "b"]
    with pytest.raises(CheckpointError, match="class 1 \\('c'\\)"):
        resolve_categories(2, ["a", "c"], ann)
    with pytest.raises(CheckpointError, match="names 3 classes but the weights have 2"):
        resolve_categories(2, ["a", "b", "c"], ann)
