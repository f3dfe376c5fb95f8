"""Learn the SEN2NAIP degradation from data (``sen2naip fit blur|harmonization|noise|all``).

- :mod:`~dataset_builder.fit.pairs`: HR/LR pairs from ROI folders, an ``.npz`` or a ``datasets`` split;
- :mod:`~dataset_builder.fit.blur_search`: δ, a batched MAE grid search (σ × kernel × downsampling);
- :mod:`~dataset_builder.fit.harmonization`: λ, training the smp U-Net through δ at LR resolution;
- :mod:`~dataset_builder.fit.noise`: e, a blind denoiser and the P(noise | reflectance) table;
- :mod:`~dataset_builder.fit.report`: the composite repo and a markdown + PNG report.

Submodules are imported on demand: the blur search and the noise fitting need only torch and numpy
(plus ``sen2naip_hub``'s torch-only modules), so they run where smp and rasterio are not installed.
"""
