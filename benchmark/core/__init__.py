"""The method contract and what names and configures methods: registry, presets, precision, weights."""
