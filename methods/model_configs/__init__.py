"""open_clip model configs of the small CLIPs used for tests (tiny) and CPU runs (small)."""
