"""Reading files: images, masks, annotations, file checks, the cache folder."""
