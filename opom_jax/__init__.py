"""opom-jax: One Person One Mask (OPOM) face-privacy masks in JAX."""
