"""Published SEN2NAIP values, each with its source. Functions take these as defaults, never as literals."""

from __future__ import annotations

#: Per-band Gaussian PSF σ in HR pixels for R, G, B, NIR: the SEN2NAIP blur search (MAE error curves),
#: as shipped in opensr-degradation 1.0.1, ``naipd/blur.py`` (``GaussianBlur(13, sigma=...)``).
PUBLISHED_SIGMAS: tuple[float, float, float, float] = (3.0, 2.9, 2.9, 3.4)
#: PSF kernel size in HR pixels (same source).
PUBLISHED_KERNEL_SIZE: int = 13
#: Downsampling after the blur: bilinear, without antialiasing (same source, ``F.interpolate``).
PUBLISHED_DOWNSAMPLE: str = "bilinear"

#: Noise table axes, opensr-degradation 1.0.1 ``naipd/noise.py``: reflectance bin edges for
#: ``np.digitize`` (100 edges → 101 rows) and the noise value of each of the 101 columns.
NOISE_REFLECTANCE_EDGES: tuple[float, float, float] = (0.0, 0.5, 0.005)  # np.arange(start, stop, step)
NOISE_VALUES: tuple[float, float, float] = (-0.0101, 0.0101, 0.0002)  # np.arange(start, stop, step)

#: The harmonization U-Net: segmentation_models_pytorch.Unet("efficientnet-b1", in_channels=4, classes=4),
#: opensr-degradation 1.0.1 ``naipd/models/model_unet.pt`` (TorchScript). Its input must be a multiple of 32.
UNET_ENCODER: str = "efficientnet-b1"
UNET_STRIDE: int = 32
#: Precisions the U-Net runs in: fp32 as published; bf16 and fp16 (autocast) are faster on GPUs (bf16
#: also on CPUs with AVX512-BF16 or AMX) and move its output slightly; fp16 keeps 3 more mantissa bits
#: than bf16 (benchmarks/RESULTS.md).
UNET_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")

#: Where the published weights come from (PyPI, MIT).
REFERENCE_PACKAGE: str = "opensr-degradation"
REFERENCE_VERSION: str = "1.0.1"
REFERENCE_LICENSE: str = "mit"
PAPER_URL: str = "https://www.nature.com/articles/s41597-024-04214-y"
PAPER_CITATION: str = (
    "@article{aybar2024sen2naip,\n"
    "  title   = {SEN2NAIP: A large-scale dataset for Sentinel-2 Image Super-Resolution},\n"
    "  author  = {Aybar, Cesar and Montero, David and Contreras, Julio and Donike, Simon and\n"
    "             Kalaitzis, Freddie and G{\\'o}mez-Chova, Luis},\n"
    "  journal = {Scientific Data},\n"
    "  volume  = {11},\n"
    "  pages   = {1389},\n"
    "  year    = {2024}\n"
    "}"
)

#: The composite model on the Hub, used when no local ``models/sen2naip-degradation`` exists.
DEFAULT_MODEL_REPO_ID: str = "sen2naip-hub/sen2naip-degradation"
