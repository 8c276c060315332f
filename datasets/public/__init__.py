"""Readers of public benchmarks' own layouts (MVTec AD, VisA)."""
