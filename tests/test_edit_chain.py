"""The edit chain on the tiny generator: by-hand equality, order, identity, errors, JSON replay, batched rendering."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from editing_directions import Edit, EditChain, demo_library
from editing_directions.chain import as_wplus
from editing_directions.errors import EditStrengthError, EditSyntaxError, LatentShapeError, UnknownEditError
from editing_directions.ganspace import GANSPACE_EDITS


@pytest.fixture()
def library(tiny_generator):
    """Seeded random demo edits matching the tiny generator (w_dim 32, 8 W+ layers)."""
    return demo_library(tiny_generator.w_dim, tiny_generator.num_ws, seed=0)


@pytest.fixture()
def pivot(tiny_generator) -> torch.Tensor:
    """A W+ pivot (1, 8, 32) from the tiny generator's mapping network."""
    z = torch.randn(1, tiny_generator.z_dim, generator=torch.Generator().manual_seed(7))
    return tiny_generator.mapping(z, None)


def test_edit_text_form_parses_and_round_trips():
    assert Edit.parse("smile=2") == Edit("interfacegan", "smile", 2.0)
    assert Edit.parse(" ganspace : smile = -6 ") == Edit("ganspace", "smile", -6.0)
    assert Edit.parse("styleclip:afro=0.1") == Edit("styleclip", "afro", 0.1)
    for edit in (Edit("styleclip", "afro", 0.1), Edit("ganspace", "trimmed_beard", 7), Edit("interfacegan", "age", -1)):
        assert Edit.parse(edit.to_text()) == edit
    assert [Edit.parse(t).slug for t in ("smile=2", "age=-1", "ganspace:smile=-6", "styleclip:afro=0.1")] == \
        ["smile+2", "age-1", "ganspace-smile-6", "styleclip-afro+0.1"]


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("smile", EditSyntaxError, "expected \\[kind:\\]name=strength"),
        ("smile=", EditSyntaxError, "expected"),
        ("=2", EditSyntaxError, "name is empty"),
        ("styleclip:=0.1", EditSyntaxError, "name is empty"),
        ("smile=two", EditSyntaxError, "'two' is not a number"),
        ("warp:smile=1", UnknownEditError, "unknown edit kind 'warp'"),
        ("smile=nan", EditStrengthError, "finite"),
    ],
)
def test_bad_edit_text_is_refused(text, error, message):
    with pytest.raises(error, match=message):
        Edit.parse(text)


def test_chain_equals_applying_the_edits_by_hand(library, pivot):
    chain = EditChain(library, [Edit("interfacegan", "smile", 2.0), Edit("styleclip", "demo_1", 0.1),
                                Edit("ganspace", "smile", -6.0), Edit("interfacegan", "age", -1.0)])
    steps = chain.steps(pivot)

    w1 = pivot + 2.0 * library.direction("smile")
    w2 = w1 + 0.1 * library.mapper("demo_1")(w1)
    pca, spec = library.pca(), GANSPACE_EDITS[1]
    c, s = pca.comp[spec.component, 0].double().numpy(), pca.std[spec.component].item()
    w3 = w2.double().numpy().copy()
    coordinate = np.dot(w3[0, 0] - pca.mean[0].double().numpy(), c) / s
    w3[0, spec.first_layer:spec.end_layer] += (-6.0 - coordinate) * c * s
    w4 = torch.from_numpy(w3).float() - 1.0 * library.direction("age")

    assert len(steps) == 5 and torch.equal(steps[0], pivot)
    for got, expected in zip(steps[1:], (w1, w2, torch.from_numpy(w3).float(), w4)):
        assert torch.allclose(got, expected, atol=1e-5)
    assert torch.equal(chain.apply(pivot), steps[-1])


def test_order_matters_for_a_mapper_and_a_direction(library, pivot, tiny_generator):
    mapper_first = EditChain(library, [Edit("styleclip", "demo_1", 0.2), Edit("interfacegan", "smile", 3.0)])
    direction_first = EditChain(library, [Edit("interfacegan", "smile", 3.0), Edit("styleclip", "demo_1", 0.2)])
    a, b = mapper_first.apply(pivot), direction_first.apply(pivot)
    assert (a - b).abs().max() > 1e-2  # the mapper sees the code that the edits before it produced
    images_a = mapper_first.render_tensor(tiny_generator, pivot)
    images_b = direction_first.render_tensor(tiny_generator, pivot)
    assert (images_a[-1] - images_b[-1]).abs().max() > 1e-3


def test_order_matters_for_ganspace_after_a_direction(library, pivot):
    ganspace_first = EditChain(library, [Edit("ganspace", "smile", 3.0), Edit("interfacegan", "age", 2.0)])
    direction_first = EditChain(library, [Edit("interfacegan", "age", 2.0), Edit("ganspace", "smile", 3.0)])
    assert (ganspace_first.apply(pivot) - direction_first.apply(pivot)).abs().max() > 1e-3


def test_strength_zero_leaves_the_image_unchanged(library, pivot, tiny_generator):
    chain = EditChain(library, [Edit("interfacegan", "pose", 0.0), Edit("styleclip", "demo_2", 0.0)])
    # a GANSpace strength is a target coordinate: the identity is the code's current coordinate
    coordinate = library.ganspace_coordinate("eye_openness", pivot).item()
    assert -10 <= coordinate <= 10
    chain.append(Edit("ganspace", "eye_openness", coordinate))
    images = chain.render_tensor(tiny_generator, pivot)
    assert images.shape == (4, 3, 32, 32)
    for step in range(1, 4):
        assert torch.equal(images[step], images[0])
    # and a nonzero strength does change it
    chain.replace(0, Edit("interfacegan", "pose", 1.0))
    assert not torch.equal(chain.render_tensor(tiny_generator, pivot)[1], images[0])


def test_unknown_and_out_of_range_edits_are_refused(library):
    chain = EditChain(library, [Edit("interfacegan", "age", 1.0)])
    with pytest.raises(UnknownEditError, match="unknown interfacegan edit 'mohawk'; available: age, smile, pose"):
        chain.append(Edit("interfacegan", "mohawk", 1.0))
    with pytest.raises(UnknownEditError, match="unknown styleclip edit 'afro'; available: demo_1, demo_2"):
        chain.append(Edit("styleclip", "afro", 0.1))
    with pytest.raises(EditStrengthError, match=r"strength 3.5 is outside the allowed range \[-3, 3\]"):
        chain.append(Edit("interfacegan", "smile", 3.5))
    with pytest.raises(EditStrengthError, match=r"\[0, 0.3\]"):
        chain.append(Edit("styleclip", "demo_1", -0.1))
    with pytest.raises(EditStrengthError, match=r"\[-10, 10\]"):
        chain.replace(0, Edit("ganspace", "smile", -12.0))
    assert chain.edits == (Edit("interfacegan", "age", 1.0),)


def test_drop_reorder_and_clear(library):
    a, b, c = Edit("interfacegan", "age", 1.0), Edit("styleclip", "demo_1", 0.1), Edit("ganspace", "smile", -6.0)
    chain = EditChain(library, [a, b, c])
    chain.move(0, 2)
    assert chain.edits == (b, c, a)
    chain.move(-1, 0)
    assert chain.edits == (a, b, c)
    assert chain.remove(1) == b and chain.edits == (a, c)
    with pytest.raises(IndexError, match="edit index 2 is out of range for a chain of 2 edits"):
        chain.remove(2)
    chain.clear()
    assert len(chain) == 0


def test_json_replays_the_same_steps(library, pivot):
    chain = EditChain(library, [Edit("interfacegan", "smile", 2.0), Edit("styleclip", "demo_2", 0.15),
                                Edit("ganspace", "trimmed_beard", 7.0)])
    replayed = EditChain.from_json(chain.to_json(), library)
    assert replayed.edits == chain.edits
    for got, expected in zip(replayed.steps(pivot), chain.steps(pivot)):
        assert torch.equal(got, expected)


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("{not json", EditSyntaxError, "not valid JSON"),
        ('{"edits": []}', EditSyntaxError, "format 'pti-edit-chain'"),
        ('{"format": "pti-edit-chain", "version": 9, "edits": []}', EditSyntaxError, "version 9"),
        ('{"format": "pti-edit-chain", "version": 1, "edits": [{"kind": "interfacegan", "name": "age"}]}',
         EditSyntaxError, "edit 0 should be an object"),
        ('{"format": "pti-edit-chain", "version": 1, "edits": [{"kind": "x", "name": "age", "strength": 1}]}',
         UnknownEditError, "edit 0: unknown edit kind 'x'"),
        ('{"format": "pti-edit-chain", "version": 1, "edits": [{"kind": "interfacegan", "name": "age", '
         '"strength": 9}]}', EditStrengthError, "outside the allowed range"),
    ],
)
def test_bad_chain_json_is_refused(library, text, error, message):
    with pytest.raises(error, match=message):
        EditChain.from_json(text, library)


def test_render_returns_one_image_per_step_from_one_generator_call(library, pivot, tiny_generator):
    chain = EditChain(library, [Edit("interfacegan", "smile", 2.0), Edit("styleclip", "demo_1", 0.1),
                                Edit("interfacegan", "age", -1.0), Edit("ganspace", "smile", -6.0)])
    batch_sizes = []
    hook = tiny_generator.synthesis.register_forward_hook(lambda module, args, out: batch_sizes.append(len(out)))
    try:
        images = chain.render_tensor(tiny_generator, pivot)
        assert batch_sizes == [5]
        chunked = chain.render_tensor(tiny_generator, pivot, batch_size=2)
        assert batch_sizes[1:] == [2, 2, 1]
    finally:
        hook.remove()
    separate = torch.cat([tiny_generator.synthesis(w, noise_mode="const") for w in chain.steps(pivot)])
    assert torch.allclose(images, separate, atol=1e-5)
    assert torch.allclose(chunked, images, atol=1e-5)

    pictures = chain.render(tiny_generator, pivot)
    assert len(pictures) == 5 and all(p.size == (32, 32) and p.mode == "RGB" for p in pictures)


def test_a_w_pivot_is_broadcast_to_every_layer(library, tiny_generator):
    w = torch.randn(1, tiny_generator.w_dim)
    chain = EditChain(library, [Edit("interfacegan", "age", 1.0)])
    broadcast = chain.render_tensor(tiny_generator, w)
    explicit = chain.render_tensor(tiny_generator, w[:, None].repeat(1, tiny_generator.num_ws, 1))
    assert torch.equal(broadcast, explicit)
    with pytest.raises(LatentShapeError, match=r"W\+ code \(N, 8, D\)"):
        as_wplus(torch.randn(1, 5, 32), 8)
    with pytest.raises(LatentShapeError, match="one pivot at a time"):
        chain.render_tensor(tiny_generator, torch.randn(2, 32))


def test_demo_library_is_labelled_random_and_checks_codes(library):
    assert "random" in library.description.lower()
    assert all("random demo" in option.label.lower() for option in library.options())
    assert {o.key for o in library.options()} == {
        "interfacegan:age", "interfacegan:smile", "interfacegan:pose", "ganspace:eye_openness", "ganspace:smile",
        "ganspace:trimmed_beard", "styleclip:demo_1", "styleclip:demo_2"}
    for name in ("age", "smile", "pose"):
        assert math.isclose(library.direction(name).norm().item(), 1.0, rel_tol=1e-5)
    with pytest.raises(LatentShapeError, match="for 8 W\\+ layers; the code has 18"):
        library.apply(Edit("interfacegan", "age", 1.0), torch.randn(1, 18, 32))
    with pytest.raises(LatentShapeError, match=r"\(N, L, 32\), got \(1, 8, 512\)"):
        library.apply(Edit("interfacegan", "age", 1.0), torch.randn(1, 8, 512))
    # the same seed gives the same edits
    again = demo_library(32, 8, seed=0)
    assert torch.equal(again.direction("smile"), library.direction("smile"))
    assert not torch.equal(demo_library(32, 8, seed=1).direction("smile"), library.direction("smile"))
