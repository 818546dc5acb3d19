"""Streaming per-class top-k of a results file."""

from __future__ import annotations

import json

import pytest

from loce.errors import ResultsError
from loce.evaluation.results_file import cap_results_file_per_class


def test_cap_per_class_hand_computed_across_blocks(tmp_path):
    # Category 1: scores 0.1, 0.9, 0.5, 0.9 (a tie: the earlier 0.9 ranks first); category 2:
    # 0.3 and 0.2. k = 2 keeps detections 1, 3 (the two 0.9s) of category 1 and both of 2.
    scores = [(1, 0.1), (1, 0.9), (2, 0.3), (1, 0.5), (1, 0.9), (2, 0.2)]
    dets = [{"image_id": i, "category_id": c, "score": s, "bbox": [i, 0, 1, 1], "extra": "}{"}
            for i, (c, s) in enumerate(scores)]  # fmt: skip
    src = tmp_path / "res.json"
    src.write_text(json.dumps(dets, indent=2))
    for block in (64, 1 << 20):  # one detection per block or so, and one block
        dst = tmp_path / f"capped_{block}.json"
        assert cap_results_file_per_class(src, dst, 2, block_bytes=block) == (4, 6)
        assert json.loads(dst.read_text()) == [dets[i] for i in (1, 2, 4, 5)]
    # In place, and k larger than every class: everything stays, in file order.
    assert cap_results_file_per_class(src, src, 10) == (6, 6)
    assert json.loads(src.read_text()) == dets


def test_cap_per_class_refuses_a_file_without_scores(tmp_path):
    src = tmp_path / "bad.json"
    src.write_text(json.dumps([{"image_id": 1, "category_id": 1}]))
    with pytest.raises(ResultsError, match="cannot rank the detections per class"):
        cap_results_file_per_class(src, tmp_path / "out.json", 5)
    assert not (tmp_path / "out.json").exists()


def test_merge_shards_copies_every_detection_in_order(tmp_path):
    from loce.evaluation.results_file import merge_results_files

    shards = []
    for r, n in enumerate((3, 0, 2)):  # rank 1 found nothing
        dets = [{"image_id": 10 * r + i, "category_id": 1, "score": 0.5, "bbox": [0, 0, 1, 1]}
                for i in range(n)]  # fmt: skip
        path = tmp_path / f"predictions.rank{r}.json"
        path.write_text("[" + ",\n".join(json.dumps(d) for d in dets) + "\n]\n")
        shards.append(path)
    out = tmp_path / "predictions.json"
    assert merge_results_files(shards, out, block_bytes=32) == 5
    assert [d["image_id"] for d in json.loads(out.read_text())] == [0, 1, 2, 20, 21]
    (tmp_path / "broken.json").write_text('{"not": "a list"}')
    with pytest.raises(ResultsError, match="not a JSON list"):
        merge_results_files([*shards, tmp_path / "broken.json"], tmp_path / "m.json")


@pytest.mark.parametrize("sep", [",", ", ", ",\n", "\n,\n  "])
def test_blocks_are_json_lists_of_whole_detections(tmp_path, sep):
    import hashlib

    import msgspec

    from loce.evaluation.results_file import _blocks

    dets = [{"image_id": i, "category_id": 1, "score": 0.5, "bbox": [i, 0, 1, 1]}
            for i in range(40)]  # fmt: skip
    path = tmp_path / "res.json"
    path.write_text("\n  [" + sep.join(json.dumps(d) for d in dets) + "]  \n")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    for block_bytes in (1, 100, 1 << 20):  # a detection per block, a few, one block
        got = []
        for block in _blocks(path, block_bytes):
            got += msgspec.json.decode(block)
        assert got == dets, block_bytes
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # read only


def test_blocks_grow_the_buffer_for_a_detection_larger_than_it(tmp_path):
    import msgspec

    from loce.evaluation.results_file import _READ, _blocks

    dets = [{"image_id": i, "note": "x" * (3 * _READ if i == 2 else 10)} for i in range(5)]
    path = tmp_path / "res.json"
    path.write_text(json.dumps(dets))
    got = []
    for block in _blocks(path, 1):
        got += msgspec.json.decode(block)
    assert got == dets


@pytest.mark.parametrize("text", ["", "   ", "[", '{"a": 1}', "[1, 2"])
def test_blocks_decline_what_is_not_a_json_list(tmp_path, text):
    from loce.evaluation.results_file import _blocks, _Doubt

    path = tmp_path / "res.json"
    path.write_text(text)
    with pytest.raises(_Doubt):
        list(_blocks(path, 1 << 20))
