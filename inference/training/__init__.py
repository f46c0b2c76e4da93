"""Training and evaluation of the Tanioka et al. 2024 models on a site's own data
(`hemex train`, `hemex evaluate`). No network code."""
