"""One module per actor; each has one entry point, ``run``, reading one inbox."""
