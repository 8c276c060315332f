"""anomalib's image models as scrapbench methods, named ``anomalib.<model>``.

``models.py`` is the table (one row per model: its anomalib class, learning type, hyperparameters,
presets, and why it cannot run offline where it cannot); ``adapter.py`` is the one adapter that trains
and predicts any row with anomalib's own model, pre-processor and ``Engine``. The table imports neither
torch nor anomalib, so listing and planning stay fast; anomalib loads when such a method is fitted.
"""
