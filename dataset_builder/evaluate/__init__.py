"""Measuring realism: ``sen2naip evaluate`` (a set of LR images against real Sentinel-2) and
``sen2naip evaluate-sr`` (super-resolved images against their LR inputs through the learned degradation).

Metrics live in small modules (:mod:`.distributions`, :mod:`.frequency`, :mod:`.noise`, :mod:`.paired`),
:mod:`.distance` combines the distribution metrics into one number, :mod:`.sources` reads either side
(a folder of GeoTIFFs or a ``datasets`` split) and :mod:`.report` prints, saves and plots the result.
"""
