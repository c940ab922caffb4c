"""Face-recognition networks: the zoo registry (zoo.py), the calling convention
(base.py), fast convolution ops, file-format importers (importers/) apart from the
networks they build (networks/)."""
