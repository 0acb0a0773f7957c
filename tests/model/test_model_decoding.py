"""Decoding paths agree with each other: batched vs single-target dense decoding, KV-cached vs re-decoded
sequences, and the MaskGIT / ROAR / classifier-free-guidance loop vs explicit single passes."""

import pytest
import torch

from fourm_ros.model import FourM, FourMConfig
from fourm_ros.model.generation import sample_logits

DENSE = ("tok_depth@224", "tok_normal@224", "tok_semseg@224", "tok_dinov2_global")
CONFIG = FourMConfig(
    dim=32,
    encoder_depth=2,
    decoder_depth=2,
    num_heads=2,
    domains_in=("rgb@224", "tok_depth@224", "caption", "human_poses"),
    domains_out=(*DENSE, "caption", "human_poses"),
)


@pytest.fixture(scope="module")
def model():
    return FourM(CONFIG, CONFIG.encoder_modalities, CONFIG.decoder_modalities, seed=11).eval()


@pytest.fixture(scope="module")
def image():
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def context(model, image):
    with torch.no_grad():
        return model.encode(image)


@torch.no_grad()
def test_batched_dense_decode_equals_decoding_each_target_alone(model, context):
    batched = model.decode_dense(context, DENSE)
    assert list(batched) == list(DENSE)
    for name in DENSE:
        alone = model.decode_dense(context, [name])[name]
        positions = torch.arange(alone.shape[1]).expand(2, -1)
        unfolded = model.decode_positions(context, name, positions)
        torch.testing.assert_close(batched[name], alone, atol=1e-5, rtol=0)
        torch.testing.assert_close(batched[name], unfolded, atol=1e-5, rtol=0)
    assert batched["tok_semseg@224"].shape == (2, 196, 4096)
    assert batched["tok_dinov2_global"].shape == (2, 16, 8192)


@torch.no_grad()
def test_frames_of_a_batch_are_independent(model, image, context):
    single = model.decode_dense_tokens(model.encode(image[1:]), ["tok_depth@224"])["tok_depth@224"]
    assert torch.equal(model.decode_dense_tokens(context, ["tok_depth@224"])["tok_depth@224"][1:], single)


@pytest.mark.parametrize("target", ["caption", "human_poses"])
@pytest.mark.parametrize("sampling", [{}, {"temperature": 1.0, "top_k": 200, "top_p": 0.9}])
def test_cached_sequence_decoding_equals_redecoding_the_prefix(model, context, target, sampling):
    runs = [
        model.generate_sequence(
            context, target, 12, generator=torch.Generator().manual_seed(3), use_cache=cached, **sampling
        )
        for cached in (True, False)
    ]
    assert runs[0].shape == (2, 12)
    assert torch.equal(runs[0], runs[1])


@torch.no_grad()
def test_decode_step_logits_equal_full_prefix_logits_and_leave_the_cache_argument_untouched(model, context):
    ids = torch.tensor([[5, 101, 7, 2000, 42], [5, 9, 9, 9, 29999]])
    cross_kv = model.precompute_cross_kv(context)
    cache = model.empty_self_cache(2, 8)
    for index in range(ids.shape[1]):
        before = cache.clone()
        logits, new_cache = model.decode_step(
            "caption", ids[:, index : index + 1], torch.tensor([index]), cache, cross_kv
        )
        assert torch.equal(cache, before) and new_cache.shape == cache.shape
        expected = model._sequence_logits("caption", ids[:, : index + 1], cross_kv)
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
        cache = new_cache


@torch.no_grad()
def test_the_in_place_step_equals_the_exported_static_step(model, image):
    """Eager steps write the cache in place and attend to the filled prefix; the exported step is pure.
    Rows of both sequence targets share the pass, each with its own context and cache rows."""
    context = model.sequence_context(image, ["caption", "human_poses"])  # 4 rows, target-major
    cross_kv = model.precompute_cross_kv(context)
    pure, in_place = model.empty_self_cache(4, 6), model.empty_self_cache(4, 6)
    tokens = torch.tensor([[5], [5], [5], [5]])
    for index in range(6):
        position = torch.tensor([index])
        x = torch.cat(
            [
                model.embed_sequence_token("caption", tokens[:2], position),
                model.embed_sequence_token("human_poses", tokens[2:], position),
            ]
        )
        want, pure = model.decode_step_hidden(x, position, pure, cross_kv)
        got, returned = model.decode_step_hidden(x, position, in_place, cross_kv, in_place=True)
        assert returned is in_place
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        torch.testing.assert_close(in_place, pure, atol=1e-5, rtol=0)
        logits = [model.sequence_logits("caption", got[:2]), model.sequence_logits("human_poses", got[2:])]
        tokens = torch.cat(logits).argmax(-1, keepdim=True)


def test_sequence_contexts_equal_encoding_each_target_with_its_sentinel(model, image):
    with torch.no_grad():
        joint = model.sequence_context(image, ["caption", "human_poses"])
        picked = model.sequence_context(image, ["caption", "human_poses"], torch.tensor([1]))
        for index, target in enumerate(["caption", "human_poses"]):
            alone = model.encode(image, {target: torch.full((2, 1), 5)})
            torch.testing.assert_close(joint[index * 2 : index * 2 + 2], alone, atol=1e-5, rtol=0)
        torch.testing.assert_close(picked, joint[2:], atol=1e-5, rtol=0)
    assert joint.shape == (4, 197, CONFIG.dim)


def test_each_row_stops_at_its_own_stop_token_and_is_padded_after(model, context):
    greedy = model.generate_sequence(context, "caption", 10, stop_ids=())
    stop = int(greedy[0, 2])
    stopped = model.generate_sequence(context, "caption", 10, stop_ids=(stop,))
    first = [int((row == stop).nonzero()[0]) if (row == stop).any() else None for row in greedy]
    for row, end in enumerate(first):
        if end is None:
            assert torch.equal(stopped[row], greedy[row, : stopped.shape[1]])
        else:
            assert torch.equal(stopped[row, : end + 1], greedy[row, : end + 1])
            assert (stopped[row, end + 1 :] == 0).all()
    assert stopped.shape[1] == (10 if None in first else max(first) + 1)


@pytest.mark.parametrize("scheme", ["roar", "maskgit"])
def test_one_step_at_temperature_zero_equals_dense_argmax(model, image, context, scheme):
    tokens = model.generate_image(image, "tok_semseg@224", steps=1, scheme=scheme, temperature=0.0)
    dense = model.decode_dense_tokens(context, ["tok_semseg@224"])["tok_semseg@224"]
    assert torch.equal(tokens, dense)


def test_guidance_scale_mixes_conditional_and_image_free_logits(model, image, context):
    positions = torch.arange(196).expand(2, -1)
    with torch.no_grad():
        conditional = model.decode_positions(context, "tok_depth@224", positions)
        unconditional = model.decode_positions(context[:, :0], "tok_depth@224", positions)
    assert not torch.allclose(conditional, unconditional)
    guided = model.generate_image(
        image, "tok_depth@224", cfg_scale=3.0, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(guided, (unconditional + 3.0 * (conditional - unconditional)).argmax(-1))
    plain = model.generate_image(image, "tok_depth@224", cfg_scale=1.0)
    assert torch.equal(plain, conditional.argmax(-1))


def test_two_roar_steps_feed_the_first_steps_tokens_back_through_the_encoder(model, image):
    tokens = model.generate_image(image, "tok_depth@224", steps=2, generator=torch.Generator().manual_seed(4))
    # Replay: the loop draws one random order per step from the generator; temperature 0 draws nothing else.
    generator = torch.Generator().manual_seed(4)
    first = torch.rand(2, 196, generator=generator).argsort(1)[:, :98]
    with torch.no_grad():
        first_ids = model.decode_positions(model.encode(image), "tok_depth@224", first).argmax(-1)
        decoded = torch.zeros(2, 196, dtype=torch.long).scatter(1, first, first_ids)
        known = first.sort(1).values
        rest = torch.stack([torch.tensor(sorted(set(range(196)) - set(row.tolist()))) for row in known])
        second = rest.gather(1, torch.rand(2, 98, generator=generator).argsort(1))
        context = model.encode(image, {"tok_depth@224": (decoded.gather(1, known), known)})
        second_ids = model.decode_positions(context, "tok_depth@224", second).argmax(-1)
    assert torch.equal(tokens, decoded.scatter(1, second, second_ids))


def test_maskgit_keeps_the_most_probable_samples_of_each_step(model, image):
    target, settings = "tok_depth@224", {"temperature": 1.0, "top_k": 0, "top_p": 0.9}
    tokens = model.generate_image(
        image, target, steps=2, scheme="maskgit", generator=torch.Generator().manual_seed(2), **settings
    )
    # Replay with explicit passes: cosine schedule over 2 steps decodes 98 + 98 tokens.
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        logits = model.decode_positions(model.encode(image), target, torch.arange(196).expand(2, -1))
        samples, probs = sample_logits(logits, generator=generator, **settings)
        first = probs.topk(98, dim=1).indices
        decoded = torch.zeros(2, 196, dtype=torch.long).scatter(1, first, samples.gather(1, first))
        known = first.sort(1).values
        rest = torch.stack([torch.tensor(sorted(set(range(196)) - set(row.tolist()))) for row in known])
        context = model.encode(image, {target: (decoded.gather(1, known), known)})
        samples, probs = sample_logits(
            model.decode_positions(context, target, rest), generator=generator, **settings
        )
        keep = probs.topk(98, dim=1).indices
    assert torch.equal(tokens, decoded.scatter(1, rest.gather(1, keep), samples.gather(1, keep)))


def test_multi_step_decoding_needs_the_target_as_an_input(image):
    model = FourM(CONFIG, ("rgb@224",), ("tok_normal@224",), seed=0)
    with pytest.raises(ValueError, match="build or load the model with 'tok_normal@224' in `inputs`"):
        model.generate_image(image, "tok_normal@224", steps=2)
    assert model.generate_image(image, "tok_normal@224", steps=1, cfg_scale=2.0).shape == (2, 196)


def test_wrong_inputs_and_targets_are_clear_errors(model, image, context):
    with pytest.raises(
        ValueError, match=r"expects a normalised image tensor \[B, 3, 224, 224\], got \[2, 224, 224, 3\]"
    ):
        model.encode(image.permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match="needs at least one input"):
        model.encode()
    with pytest.raises(ValueError, match="'caption' is a sequence modality, expected image_tokens"):
        model.decode_dense(context, ["caption"])
    with pytest.raises(ValueError, match="'tok_rgb@224' is not an output of this model"):
        model.decode_dense(context, ["tok_rgb@224"])
    with pytest.raises(ValueError, match="'tok_semseg@224' is not an input of this model"):
        model.encode(image, {"tok_semseg@224": torch.zeros(2, 196, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"max_tokens must be in \[1, 512\]"):
        model.generate_sequence(context, "caption", 600)
    with pytest.raises(ValueError, match="unknown decoding scheme"):
        model.generate_image(image, "tok_depth@224", scheme="diffusion")
