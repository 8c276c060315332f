"""What scrapbench writes: atomic files and folders, run folders, the --out rule, model folders."""
