"""SupCon surrogate: loss, bias-preserving augmentation, caching, determinism, the k-NN probe."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from engine import cache, data, density, embed
from engine.errors import InvalidArgument

TINY = embed.EmbedPreset(width=8, hidden_dim=32, dim=16, steps=4, batch_size=32, max_train=200, embed_batch=512)


def _naive_supcon(z: torch.Tensor, y: torch.Tensor, t: float) -> float:
    total, anchors = 0.0, 0
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        denom = sum(math.exp(float(z[i] @ z[a]) / t) for a in others)
        pos = [p for p in others if y[p] == y[i]]
        if pos:
            total += -sum(float(z[i] @ z[p]) / t - math.log(denom) for p in pos) / len(pos)
            anchors += 1
    return total / anchors


def test_supcon_loss_matches_the_definition() -> None:
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(12, 5, generator=g, dtype=torch.float64), dim=1)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 0, 1, 2, 4])  # class 4 has no positive: skipped as an anchor
    assert float(embed.supcon_loss(z, y, 0.1)) == pytest.approx(_naive_supcon(z, y, 0.1), rel=1e-9)
    clustered = F.normalize(F.one_hot(y, 5).double() + 0.01 * z[:, :5], dim=1)
    assert float(embed.supcon_loss(clustered, y, 0.1)) < float(embed.supcon_loss(z, y, 0.1))


def test_augmentation_keeps_the_colour() -> None:
    # a flat coloured image stays exactly that colour under translation and flip (no colour jitter)
    gen = torch.Generator().manual_seed(0)
    colours = torch.tensor(data.PALETTE, dtype=torch.float32) / 127.5 - 1
    flat = colours[:, :, None, None].expand(-1, -1, 32, 32).contiguous()
    out = embed.augment(flat, shift=4, flip=True, gen=gen)
    assert torch.equal(out, flat)
    x = torch.rand(6, 3, 32, 32, generator=gen)
    a = embed.augment(x, 4, True, torch.Generator().manual_seed(5))
    b = embed.augment(x, 4, True, torch.Generator().manual_seed(5))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)  # it does move things


@pytest.mark.slow  # trains the tiny surrogate four times: ~6 s idle, ~25 s on 2 busy cores
def test_embeddings_are_normalised_cached_and_deterministic(fresh_home, monkeypatch: pytest.MonkeyPatch) -> None:
    train = data.load_split("colored-digits", 0.05, "train", 0)
    calls = []
    real_train = embed.train_supcon
    monkeypatch.setattr(embed, "train_supcon", lambda *a, **k: calls.append(1) or real_train(*a, **k))

    z = embed.get_embeddings(train, TINY, seed=0, device="cpu")
    assert z.dtype == torch.float32 and z.shape == (len(train), TINY.dim)
    assert torch.allclose(z.norm(dim=1), torch.ones(len(z)), atol=1e-5)
    assert len(calls) == 1
    files = sorted(cache.cache_dir("embeddings").glob("*.safetensors"))
    assert [f.name.split("-")[0] for f in files] == ["emb", "supcon"]

    assert torch.equal(embed.get_embeddings(train, TINY, seed=0, device="cpu"), z)  # from disk
    assert len(calls) == 1

    emb_file = next(f for f in files if f.name.startswith("emb-"))
    emb_file.write_bytes(emb_file.read_bytes()[:100])  # truncated: rebuilt from the cached model
    assert torch.equal(embed.get_embeddings(train, TINY, seed=0, device="cpu"), z)
    assert len(calls) == 1

    for f in cache.cache_dir("embeddings").glob("*.safetensors"):  # everything gone: retrained identically
        f.unlink()
    assert torch.equal(embed.get_embeddings(train, TINY, seed=0, device="cpu"), z)
    assert len(calls) == 2

    other = embed.get_embeddings(train, TINY, seed=1, device="cpu")  # other settings -> other key
    assert len(calls) == 3 and not torch.equal(other, z)
    embed.get_embeddings(train, embed.with_overrides(TINY, steps=5), seed=0, device="cpu")
    assert len(calls) == 4
    assert len(list(cache.cache_dir("embeddings").glob("emb-*.safetensors"))) == 3


def test_bad_preset_and_seed() -> None:
    train = data.load_split("colored-digits", 0.05, "train", 0)
    with pytest.raises(InvalidArgument, match="preset"):
        embed.get_embeddings(train, "huge")
    with pytest.raises(InvalidArgument, match="seed"):
        embed.get_embeddings(train, TINY, seed=-1)


def test_knn_probe() -> None:
    g = torch.Generator().manual_seed(0)
    attrs = torch.arange(200) % 4
    centres = F.normalize(torch.randn(4, 16, generator=g), dim=1)
    z = centres[attrs] + 0.05 * torch.randn(200, 16, generator=g)
    assert embed.knn_probe(z, attrs, k=5) == 1.0
    scrambled = attrs[torch.randperm(200, generator=g)]
    assert embed.knn_probe(z, scrambled, k=5) < 0.5  # chance is 0.25
    q = attrs == 2
    assert embed.knn_probe(z, attrs, q, k=5) == 1.0
    with pytest.raises(InvalidArgument):
        embed.knn_probe(z[:3], attrs[:3], k=5)


@pytest.mark.slow
def test_quick_preset_encodes_the_bias(fresh_home) -> None:
    """The evidence: on balanced test images the embedding predicts the colour; aligned samples are denser."""
    train, test = data.load_pair("colored-digits", 0.05, 0)
    preset = embed.with_overrides("quick", steps=60)  # the quick recipe, shorter: the effect shows early
    z = embed.get_embeddings(train, preset, seed=0, device="cpu")
    model = embed.get_encoder(train, preset, seed=0, device="cpu")  # cached, not retrained
    zt = embed.embed_images(model, test.images, "cpu")
    assert embed.knn_probe(zt, test.attributes) > 0.8  # 10 balanced colours: chance is 0.1
    lf = density.kde_log_density(z, train.targets, density.suggest_kernel_variance(z, train.targets))
    assert float(lf[train.aligned].mean()) > float(lf[~train.aligned].mean()) + 1.0
