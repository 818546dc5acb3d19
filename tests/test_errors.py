"""A user error raised in a DataLoader worker keeps its own message, without the traceback."""

from __future__ import annotations

import pytest
import torch

from loce.errors import DataError, LoceError


class _Broken(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i):
        raise DataError("cannot read image file a.jpg (image id 1): truncated.\\nFix: replace it.")


@pytest.mark.parametrize("workers", [0, 1])
def test_worker_errors_read_like_main_process_errors(workers):
    loader = torch.utils.data.DataLoader(_Broken(), num_workers=workers)
    with pytest.raises(DataError) as e:
        next(iter(loader))
    assert str(e.value) == "cannot read image file a.jpg (image id 1): truncated.\\nFix: replace it."


def test_other_messages_are_kept_as_they_are():
    text = "Caught something, but no traceback follows"
    assert str(LoceError(text)) == text
    assert LoceError("a", "b").args == ("a", "b")
