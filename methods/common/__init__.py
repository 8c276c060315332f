"""Building blocks shared by several methods: CLIP, prompts, attention, map operations, checkpoints."""
