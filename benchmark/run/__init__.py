"""Running a grid: planning, one run's life cycle, provenance, leases, executors, folder prediction."""
