"""What scrapbench writes: atomic files and folders, writer records, run folders, the --out rule, model folders."""
