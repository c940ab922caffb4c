"""Faces in: detection + alignment (align), folder walking with a skip report
(faces), the deterministic split (splits) and the tfds builder / loader
(tfds_builder). Import the submodule you need; tfds is slow to import.
"""
