"""The builder's facts: published SEN2NAIP values and the project's own choices, each once, with its source.

Everything a stage needs as a default or threshold is a named constant here; functions take these as
defaults and never repeat them as literals. Sensor facts (band names, pixel sizes, DN scaling) live in
:mod:`sen2naip_hub.sensors`, model facts in :mod:`sen2naip_hub.constants`.
"""

from __future__ import annotations

from sen2naip_hub.sensors import NAIP, SCALE_FACTOR

# ---------------------------------------------------------------------------------------- geometry
#: ROI side in HR pixels: SEN2NAIP's 484 × 484 NAIP px at 2.5 m ↔ 121 × 121 Sentinel-2 px at 10 m
#: (Aybar et al. 2024; the v1 release's ``hr.tif`` / ``lr.tif``).
SEN2NAIP_ROI_HR_PX: int = 484
#: The same ROI in LR pixels.
SEN2NAIP_ROI_LR_PX: int = SEN2NAIP_ROI_HR_PX // SCALE_FACTOR
#: HR pixel size the ROI grid assumes (NAIP resampled to 2.5 m, so that LR pixels are 10 m).
SEN2NAIP_HR_RESOLUTION_M: float = NAIP.resolution_m

#: Pixel sizes (metres) a source may have, per sensor, checked at the sources stage. NAIP is flown at
#: 0.6-2 m (1 m before 2016; 0.6 m since) and SEN2NAIP resampled it to 2.5 m; the project's sample is
#: NAIP resampled to 5 m, so up to 6 m is accepted. Sentinel-2's visible/NIR bands are 10 m; simulated
#: candidates of the 5 m sample are 20 m, so up to 25 m is accepted. Anything else (NAIP at 30 m, a
#: degree grid) is rejected by name.
PIXEL_SIZE_RANGE_M: dict[str, tuple[float, float]] = {"NAIP": (0.3, 6.0), "Sentinel-2": (5.0, 25.0)}

# ---------------------------------------------------------------------------------------- pairing
#: Largest NAIP ↔ Sentinel-2 acquisition gap, days. SEN2NAIP v1 paired same-day images ("one day"
#: threshold, per the SEN2NAIPv2 dataset card, which widened it to two days).
SEN2NAIP_MAX_DAYS: int = 1

# ---------------------------------------------------------------------------------------- screening
#: Largest nodata share of a synthetic tile: SEN2NAIP's synthetic ROIs are complete NAIP tiles.
SYNTHETIC_MAX_NODATA_FRACTION: float = 0.0
#: Largest nodata share of a cross-sensor ROI (HR or LR, whichever is larger). A project choice: real
#: Sentinel-2 scene edges clip ROI corners; 10 % tolerates a clipped corner while QA still has most of
#: the ROI to judge. (Synthetic tiles need no such tolerance: the HR alone decides.)
CROSS_SENSOR_MAX_NODATA_FRACTION: float = 0.10
#: A tile whose every band has a standard deviation below one NAIP count (1/255 reflectance) is blank.
MIN_BAND_STD: float = 1.0 / NAIP.dn_scale
#: Largest cloudy share of an LR ROI for sources without a scene classification (brightness screen).
MAX_CLOUD_FRACTION: float = 0.05
#: Per-pixel brightness cloud test on Sentinel-2 L2A reflectance: red B04 above 0.25 (the upper
#: threshold of Sen2Cor's first cloud test, Sen2Cor ATBD step 1) and blue B02 above 0.20.
CLOUD_RED_REFLECTANCE: float = 0.25
CLOUD_BLUE_REFLECTANCE: float = 0.20

# ---------------------------------------------------------------------------------------- QA
#: QA1: largest residual misalignment kept, LR pixels (SEN2NAIP cross-sensor QA, Aybar et al. 2024).
QA1_MAX_RESIDUAL_LR_PX: float = 1.0
#: QA2: largest mean spectral angle kept between degraded HR and LR, degrees (same source).
QA2_MAX_SPECTRAL_ANGLE_DEG: float = 2.0

# ---------------------------------------------------------------------------------------- selection
#: open_clip architecture used by default (CLIP ViT-B/32; SEN2NAIP embedded tiles with CLIP).
DEFAULT_CLIP_MODEL: str = "ViT-B-32"
#: Images per forward pass of the image encoder.
DEFAULT_EMBED_BATCH_SIZE: int = 32
#: k-means restarts (scikit-learn's ``n_init`` for k-means++); the best inertia wins.
KMEANS_N_INIT: int = 10
#: Lloyd iterations per restart, at most (scikit-learn's ``KMeans`` default ``max_iter``).
KMEANS_MAX_ITER: int = 300
#: Convergence: total squared centre shift ≤ this × the mean per-feature variance (scikit-learn's ``tol``).
KMEANS_TOL: float = 1e-4
#: CLIP precision: ``auto`` runs bf16 autocast on CUDA and fp32 elsewhere.
CLIP_PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
#: Smallest cosine similarity between an embedding of the torch preprocessing and of open_clip's PIL one
#: on real NAIP tiles (measured ≥ 0.99998 on 20 real tiles, 484 and 128 px, with random ViT-S-32
#: weights: tests/test_clip_preprocess.py).
CLIP_TORCH_VS_PIL_MIN_COSINE: float = 0.999

# ---------------------------------------------------------------------------------------- licenses
#: License of the datasets this project writes: that of the original SEN2NAIP release
#: (``isp-uv-es/SEN2NAIP`` on the Hub: "License: cc-by-4.0").
DATASET_LICENSE: str = "cc-by-4.0"
#: Credit lines per data source, printed in a dataset card only for the sources a build used.
SOURCE_CREDITS: dict[str, str] = {
    "naip": "NAIP imagery: USDA Farm Production and Conservation Business Center, public domain.",
    "sentinel-2": (
        "Sentinel-2 imagery: Copernicus Sentinel data, free and open under the Copernicus data "
        'policy; attribution "Contains modified Copernicus Sentinel data".'
    ),
}

# ---------------------------------------------------------------------------------------- releases
#: The published SEN2NAIP releases `sen2naip import-release` reads: Hub repo, license (as each dataset
#: card on the Hub states it: v1 "License: cc-by-4.0"; SEN2NAIPv2 "license: cc0-1.0"), the config
#: its rows go to, and how its LR was made.
RELEASES: dict[str, dict[str, str]] = {
    "v1-cross-sensor": {
        "repo": "isp-uv-es/SEN2NAIP",
        "license": "cc-by-4.0",
        "config": "cross_sensor",
        "lr": "real Sentinel-2 L2A (the release's lr.tif, DN as published)",
    },
    "v1-synthetic": {
        "repo": "isp-uv-es/SEN2NAIP",
        "license": "cc-by-4.0",
        "config": "synthetic",
        "lr": "made at import from the release's NAIP by the degradation model named in `degradation_model`",
    },
    "v2": {
        "repo": "tacofoundation/SEN2NAIPv2",
        "license": "cc0-1.0",
        "config": "cross_sensor",
        "lr": "the release's lr member, DN as published (real or simulated as the release says)",
    },
}

# ---------------------------------------------------------------------------------------- evaluation
#: Terms of ``sen2naip evaluate``'s ``distance`` and their weights (the project's choice: every term is
#: dimensionless and 0 for identical sets, so equal weights; README "Measuring realism" defines each).
EVALUATE_DISTANCE_WEIGHTS: dict[str, float] = {
    "wasserstein": 1.0,
    "ks": 1.0,
    "std": 1.0,
    "spectral_angle": 1.0,
    "power_spectrum": 1.0,
    "nyquist": 1.0,
    "noise": 1.0,
}
#: Pixels per set (valid pixels, all bands) the distribution metrics use; more are subsampled with the
#: seed. Wasserstein and KS on 500,000 samples per band take well under a second.
EVALUATE_MAX_PIXELS: int = 500_000
#: Radial frequency bins of the power spectrum on [0, 0.5] cycles per pixel.
EVALUATE_SPECTRUM_BINS: int = 16
#: The "near Nyquist" annulus, cycles per pixel: the top quarter of the frequency axis (a project
#: choice), where blur and noise leave their mark (Sentinel-2's MTF at Nyquist is specified at 0.15–0.3,
#: Sentinel-2 Mission Requirements Document). Its share of the energy is the MTF proxy.
EVALUATE_NYQUIST_BAND: tuple[float, float] = (0.375, 0.5)
#: Smallest spread a normaliser may have (reflectance; one Sentinel-2 digital number), so that a
#: constant band does not divide by zero.
EVALUATE_MIN_SPREAD: float = 1e-4
#: Peak value for PSNR and ``data_range`` for SSIM: reflectance, whose full scale is 1.
EVALUATE_DATA_RANGE: float = 1.0
#: Histogram bins of the plot (reflectance 0–0.6 holds nearly all land pixels of Sentinel-2 L2A).
EVALUATE_PLOT_BINS: int = 120
EVALUATE_PLOT_RANGE: tuple[float, float] = (0.0, 0.6)
#: The blind denoiser ``evaluate`` trains on the REFERENCE set when no ``--denoiser`` is given: the
#: small network and budget of tests/test_fit_noise.py (a few seconds on 2 CPU cores). A denoiser
#: written by ``sen2naip fit noise`` (``denoiser.safetensors``) measures better.
EVALUATE_DENOISER: dict[str, float | int] = {
    "steps": 300,
    "batch_size": 8,
    "patch": 40,
    "lr": 3e-3,
    "seed": 0,
    "estimator_channels": 16,
    "denoiser_channels": 16,
    "depth": 4,
}

# ---------------------------------------------------------------------------------------- remote sources
#: What ``sources.preset`` fills in (keys left unset only). Planetary Computer: collections ``naip``
#: (asset ``image``, 4-band COG) and ``sentinel-2-l2a`` (asset keys = band names, ``SCL``), per its
#: catalog at planetarycomputer.microsoft.com/api/stac/v1. Earth Search v1
#: (earth-search.aws.element84.com/v1): ``sentinel-2-l2a`` with asset keys ``red``, ``green``, ``blue``,
#: ``nir``, ``scl``, and ``naip`` (``image``).
STAC_PRESETS: dict[str, dict[str, dict]] = {
    "planetary_computer": {
        "naip": {"collection": "naip", "asset": "image"},
        "s2": {
            "collection": "sentinel-2-l2a",
            "bands": {"B04": "B04", "B03": "B03", "B02": "B02", "B08": "B08"},
            "scl": "SCL",
        },
    },
    "earth_search": {
        "naip": {"collection": "naip", "asset": "image"},
        "s2": {
            "collection": "sentinel-2-l2a",
            "bands": {"B04": "red", "B03": "green", "B02": "blue", "B08": "nir"},
            "scl": "scl",
        },
    },
}
#: Sentinel-2 L2A processing baseline from which DN = reflectance × 10000 + 1000 (ESA, baseline 04.00,
#: 25 January 2022: BOA_ADD_OFFSET = -1000 in the product metadata).
L2A_OFFSET_BASELINE: str = "04.00"
#: The reflectance offset of those baselines (BOA_ADD_OFFSET / QUANTIFICATION_VALUE = -1000 / 10000).
L2A_BOA_OFFSET: float = -0.1
#: Earth Search's item property saying whether the BOA offset was already applied to the pixels; its
#: maintainers call it the truth when it disagrees with ``raster:bands`` (issue 14).
EARTHSEARCH_OFFSET_FLAG: str = "earthsearch:boa_offset_applied"
#: Scene-classification (SCL) classes that reject an LR pixel (Sen2Cor L2A product specification):
#: 0 no data, 1 saturated or defective, 3 cloud shadow, 8 cloud medium probability, 9 cloud high
#: probability, 10 thin cirrus, 11 snow or ice.
SCL_REJECTED_CLASSES: dict[int, str] = {
    0: "nodata",
    1: "saturated",
    3: "cloud shadow",
    8: "cloud (medium)",
    9: "cloud (high)",
    10: "cirrus",
    11: "snow",
}
#: Largest share of an LR ROI in the rejected SCL classes (``cross_sensor.max_cloud_fraction``): none.
SCL_MAX_FRACTION: float = 0.0
#: HTTP reads of COGs: seconds before a request is abandoned, retries after a failed read (5xx,
#: timeout, cut connection, short body), the first back-off (doubled each retry), and assets read at
#: once. Project choices: GDAL's defaults are no retry and no timeout.
HTTP_TIMEOUT_S: float = 30.0
HTTP_MAX_RETRIES: int = 3
HTTP_BACKOFF_S: float = 0.5
HTTP_MAX_CONCURRENCY: int = 4
#: Items per page of a STAC API search (pystac-client ``limit``).
STAC_PAGE_SIZE: int = 100
