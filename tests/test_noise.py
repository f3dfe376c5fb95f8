"""e: sampling from the published table reproduces it per reflectance bin; seeds; modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from sen2naip_hub.models import NoiseModel
from sen2naip_hub.models.noise import published_noise_axes, table_uniform

SAMPLES_PER_BIN = 20_000


@pytest.fixture(scope="module")
def noise_model(reference_dir):
    return NoiseModel.from_pretrained(reference_dir / "sen2naip-noise")


def _bin_centres(edges: np.ndarray) -> np.ndarray:
    inner = (edges[1:] + edges[:-1]) / 2
    return np.concatenate([[edges[0] - 1e-3], inner, [edges[-1] + 0.1]])  # one value per table row


def test_every_bin_reproduces_the_table(noise_model, reference_noise_table):
    edges, values = (t.numpy() for t in published_noise_axes())
    centres = _bin_centres(edges)
    assert np.array_equal(np.digitize(centres, edges), np.arange(101))  # one probe per row
    x = torch.from_numpy(np.repeat(centres, SAMPLES_PER_BIN).astype(np.float32)).reshape(1, 1, 101, -1)
    x = x.expand(1, 4, -1, -1).contiguous()
    noise = noise_model.sample(x, torch.Generator().manual_seed(0))[0].double().numpy()
    for row in range(101):
        p = reference_noise_table[row] / reference_noise_table[row].sum()
        mean = (p * values).sum()
        std = np.sqrt((p * (values - mean) ** 2).sum())
        draw = noise[:, row].ravel()
        assert abs(draw.mean() - mean) <= 0.1 * std, row
        assert abs(draw.std() - std) <= 0.1 * std, row
        if row % 10 == 0:
            # KS needs a continuous variable: spread each column k uniformly over [k, k + 1), whose
            # CDF is the table's CDF interpolated linearly inside the column.
            column = np.abs(draw[:5000, None] - values[None]).argmin(axis=1)
            spread = column + np.random.default_rng(row).random(column.size)
            before = np.concatenate([[0.0], np.cumsum(p)[:-1]])

            def cdf(t, p=p, before=before):
                k = np.clip(np.floor(t).astype(int), 0, 100)
                return before[k] + (t - k) * p[k]

            ks = stats.kstest(spread, cdf)
            assert ks.pvalue > 0.01, (row, ks)


def test_matches_published_sampler_distribution(noise_model, reference_noise_table):
    """Two-sample KS against the published per-pixel sampler on the same reflectances."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from opensr_degradation.naipd.noise import create_noisy_1
    np.random.seed(0)
    image = torch.rand(1, 60, 60, generator=torch.Generator().manual_seed(5)) * 0.4
    reference = create_noisy_1(image).numpy().ravel()
    ours = noise_model.sample(image.expand(4, -1, -1)[None], torch.Generator().manual_seed(1))[0, 0]
    assert stats.ks_2samp(reference, ours.numpy().ravel()).pvalue > 0.01


def test_per_band_tables(reference_noise_table):
    edges, values = published_noise_axes()
    table = torch.from_numpy(reference_noise_table)
    zero = torch.zeros_like(table)
    zero[:, 50] = 1.0  # a band with no noise at all: all mass on the value closest to 0
    model = NoiseModel.from_table(torch.stack([table, zero, table, zero]), edges, values)
    noise = model.sample(torch.full((1, 4, 50, 50), 0.2), torch.Generator().manual_seed(0))
    assert float(noise[0, 1].abs().max()) == pytest.approx(abs(float(values[50])))
    assert float(noise[0, 0].std()) > 0.001


def test_none_and_gaussian_modes(noise_model):
    x = torch.full((1, 4, 64, 64), 0.2)
    assert torch.equal(noise_model(x, mode="none"), x)
    gaussian = noise_model.sample(x, torch.Generator().manual_seed(0), mode="gaussian")
    assert float(gaussian.std()) == pytest.approx(0.2 * 0.025, rel=0.05)
    with pytest.raises(ValueError, match="'salt'"):
        noise_model.sample(x, mode="salt")


def test_published_table_noise_std_rises_with_reflectance(noise_model):
    std = noise_model.noise_std()
    assert 0.0008 < float(std[:5].mean()) < 0.0016  # about 0.001 at low reflectance
    assert 0.0035 < float(std[-10:-1].mean()) < 0.0045  # about 0.004 at high reflectance


def test_untrained_noise_model_fails_clearly_instead_of_adding_zero_noise():
    from sen2naip_hub.errors import InvalidModelError
    from sen2naip_hub.models import BlurModel, Degradation, HarmonizationModel

    x = torch.full((1, 4, 16, 16), 0.2)
    with pytest.raises(InvalidModelError, match=r"no noise table.*from_pretrained"):
        NoiseModel()(x, torch.Generator().manual_seed(0))
    composite = Degradation(HarmonizationModel(mode="none"), BlurModel())
    with pytest.raises(InvalidModelError, match="no noise table"):
        composite(torch.rand(1, 4, 32, 32), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(composite(torch.rand(1, 4, 32, 32), noise=False).lr).all()
    assert torch.equal(NoiseModel(mode="none")(x), x)
    gaussian = NoiseModel().sample(x, mode="gaussian", generator=torch.Generator().manual_seed(0))
    assert float(gaussian.std()) > 0


def test_a_table_from_arrays_adds_noise(reference_noise_table):
    model = NoiseModel.from_table(torch.from_numpy(reference_noise_table), *published_noise_axes())
    noise = model.sample(torch.full((1, 4, 32, 32), 0.2), torch.Generator().manual_seed(0))
    assert float(noise.std()) > 0.001


@pytest.mark.parametrize("mode", ["table", "gaussian"])
def test_one_generator_per_item_equals_noising_each_item_alone(noise_model, mode):
    x = torch.rand(5, 4, 12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float32) * 0.4
    seeds = [11, 7, 11, 3, 99]  # a repeated seed gives a repeated draw
    batched = noise_model.sample(x, [torch.Generator().manual_seed(s) for s in seeds], mode=mode)
    alone = [
        noise_model.sample(x[i : i + 1], torch.Generator().manual_seed(s), mode=mode)
        for i, s in enumerate(seeds)
    ]
    assert torch.equal(batched, torch.cat(alone))
    assert not torch.equal(batched[0], batched[1])


def test_the_wrong_number_of_generators_is_refused(noise_model):
    with pytest.raises(ValueError, match=r"one generator per batch item \(3\).*got 2"):
        noise_model.sample(torch.zeros(3, 4, 4, 4), [torch.Generator(), torch.Generator()])


def test_draws_made_ahead_give_the_same_noise(noise_model):
    """``uniform`` drawn ahead by ``table_uniform`` (a build's loader does) = drawing them in ``sample``."""
    x = torch.rand(4, 4, 10, 10, generator=torch.Generator().manual_seed(2)) * 0.5
    seeds = [5, 6, 7, 5]

    def generators() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(s) for s in seeds]

    uniform = table_uniform(x.shape, generators())
    assert uniform.dtype == torch.float64 and bool(((uniform >= 0) & (uniform < 1)).all())
    assert torch.equal(noise_model.sample(x, uniform=uniform), noise_model.sample(x, generators()))
    assert torch.equal(noise_model(x, uniform=uniform), x + noise_model.sample(x, generators()))
    assert not torch.equal(noise_model.sample(x, uniform=1 - uniform), noise_model.sample(x, generators()))


def test_draws_made_ahead_must_fit(noise_model):
    x = torch.zeros(2, 4, 6, 6)
    with pytest.raises(ValueError, match=r"uniform draws of shape \(2, 4, 6, 5\) for noise of shape"):
        noise_model.sample(x, uniform=torch.zeros(2, 4, 6, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="table mode's; this noise's mode is 'gaussian'"):
        noise_model.sample(x, mode="gaussian", uniform=torch.zeros(2, 4, 6, 6, dtype=torch.float64))
