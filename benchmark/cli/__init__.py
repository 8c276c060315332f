"""The ``scrapbench`` command line."""
