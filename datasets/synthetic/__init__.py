"""The seeded synthetic steel-scrap generator (the default dataset)."""
