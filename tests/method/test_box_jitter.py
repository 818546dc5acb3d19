"""Box generator: sign patterns, bounds, clipping, shared noise, determinism, empty input."""

import pytest
import torch

from loce.method import jitter_boxes, jitter_signs

# Two boxes well inside a 200 x 300 (height x width) image: no clipping.
BOXES = torch.tensor([[60.0, 40.0, 120.0, 100.0], [150.0, 90.0, 174.0, 150.0]])
SIZE = (200, 300)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_sign_table_is_the_bits_of_t():
    signs = jitter_signs()
    assert signs.shape == (16, 4)
    # t = 5 = 0b0101 -> x1 -, y1 +, x2 -, y2 +; t = 8 = 0b1000 -> x1 + only.
    torch.testing.assert_close(signs[5], torch.tensor([-1.0, 1.0, -1.0, 1.0]))
    torch.testing.assert_close(signs[8], torch.tensor([1.0, -1.0, -1.0, -1.0]))
    torch.testing.assert_close(signs[0], -torch.ones(4))
    torch.testing.assert_close(signs[15], torch.ones(4))
    assert len({tuple(row.tolist()) for row in signs}) == 16


@pytest.mark.parametrize("shared_noise", [True, False])
def test_every_sign_pattern_in_order_and_bounds(shared_noise):
    out = jitter_boxes(BOXES, SIZE, generator=_gen(), shared_noise=shared_noise)
    assert out.shape == (32, 4) and out.dtype == BOXES.dtype
    for i, box in enumerate(BOXES):
        rows = out[16 * i : 16 * i + 16]
        shift = rows - box
        torch.testing.assert_close(torch.sign(shift), jitter_signs())
        w, h = box[2] - box[0], box[3] - box[1]
        side = torch.stack([w, h, w, h])
        assert (shift.abs() <= side / 6).all()
        assert (shift.abs() > 0).all()


def test_noise_is_shared_by_the_boxes_of_an_image():
    out = jitter_boxes(BOXES, SIZE, generator=_gen(1)).view(2, 16, 4)
    sides = torch.stack([BOXES[:, 2] - BOXES[:, 0], BOXES[:, 3] - BOXES[:, 1]] * 2, dim=1)
    relative = (out - BOXES[:, None]) / sides[:, None]  # [2, 16, 4] = sign * u / 6
    torch.testing.assert_close(relative[0], relative[1])
    independent = jitter_boxes(BOXES, SIZE, generator=_gen(1), shared_noise=False).view(2, 16, 4)
    relative = (independent - BOXES[:, None]) / sides[:, None]
    assert not torch.allclose(relative[0], relative[1])


def test_clipping_to_the_image():
    # A box touching the top-left corner and one touching the bottom-right corner.
    boxes = torch.tensor([[0.0, 0.0, 30.0, 60.0], [260.0, 170.0, 299.0, 199.0]])
    out = jitter_boxes(boxes, SIZE, generator=_gen(2))
    assert (out >= 0).all()
    assert (out[:, [0, 2]] <= 299).all() and (out[:, [1, 3]] <= 199).all()
    # Jitters that push x1, y1 of the first box outward are clipped exactly to 0.
    signs = jitter_signs()
    first = out[:16]
    assert (first[signs[:, 0] < 0, 0] == 0).all() and (first[signs[:, 1] < 0, 1] == 0).all()
    second = out[16:]
    assert (second[signs[:, 2] > 0, 2] == 299).all() and (second[signs[:, 3] > 0, 3] == 199).all()
    # Worst shrink keeps a positive size: 2/3 of the side.
    assert (out[:, 2] > out[:, 0]).all() and (out[:, 3] > out[:, 1]).all()


def test_determinism_with_a_generator():
    a = jitter_boxes(BOXES, SIZE, generator=_gen(7))
    b = jitter_boxes(BOXES, SIZE, generator=_gen(7))
    c = jitter_boxes(BOXES, SIZE, generator=_gen(8))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    # Float64 boxes see the same noise (drawn in float32) and keep their dtype.
    d = jitter_boxes(BOXES.double(), SIZE, generator=_gen(7))
    assert d.dtype == torch.float64
    torch.testing.assert_close(d.float(), a)


def test_empty_input():
    out = jitter_boxes(torch.zeros(0, 4), SIZE, generator=_gen())
    assert out.shape == (0, 4) and out.dtype == torch.float32


@pytest.mark.parametrize(
    ("boxes", "size", "message"),
    [
        (torch.zeros(3, 5), SIZE, r"boxes must have shape \[N, 4\].*got shape \[3, 5\]"),
        (torch.zeros(3, 4, dtype=torch.int64), SIZE, r"floating point.*torch.int64"),
        (torch.zeros(3, 4), (200,), r"image_size must be \(height, width\).*\(200,\)"),
        (torch.zeros(3, 4), (0, 10), r"image_size must be \(height, width\).*\(0, 10\)"),
    ],
)
def test_errors(boxes, size, message):
    with pytest.raises(ValueError, match=message):
        jitter_boxes(boxes, size)
