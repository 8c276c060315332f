"""``scrapbench prepare``: raw annotated images to the on-disk dataset format."""
