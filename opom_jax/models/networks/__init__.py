"""The networks of the zoo: architectures written in JAX, and recipes that pair an
imported graph with its input convention (crop, channel order, normalisation)."""
