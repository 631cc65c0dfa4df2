"""Integrations with training frameworks, each behind its own extra.

- :mod:`genepool.integrations.torch` (``pip install 'genepool[torch]'``): save and restore
  everything a PyTorch member is, and make explored hyperparameters take effect.
- :mod:`genepool.integrations.lightning` and :mod:`genepool.integrations.huggingface`
  (extras ``lightning``, ``huggingface``): a population of the framework's trainers in one
  process, exploits applied in place.
- :mod:`genepool.integrations.keras` (``pip install 'genepool[keras]'``): Keras 3 models on
  the PyTorch backend, one per member in one process, exploits in place.
- :mod:`genepool.integrations.jax` (``pip install 'genepool[jax]'``): JAX and optax, a
  whole population in one ``jax.vmap`` or one member at a time.
- :mod:`genepool.integrations.sklearn` (``pip install 'genepool[sklearn]'``): estimators
  trained through ``partial_fit``, their values set where they are read.
"""
