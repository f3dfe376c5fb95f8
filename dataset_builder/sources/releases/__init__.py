"""Importers of the published SEN2NAIP releases (v1 zips, v2 TACO) into the builder's dataset layout."""
