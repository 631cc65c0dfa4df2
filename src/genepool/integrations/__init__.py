"""Integrations with training frameworks, each behind its own extra.

- :mod:`genepool.integrations.torch` (``pip install 'genepool[torch]'``): save and restore
  everything a PyTorch member is, and make explored hyperparameters take effect.
"""
