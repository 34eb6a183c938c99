"""Tables, plots and the docs section of the statistics grid (placeholder)."""


def write_all(out, docs, plots):
    pass
