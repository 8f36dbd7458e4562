"""`make fuzz`: hypothesis-driven fuzz targets with oracles (bench/fuzz.py runs them)."""
