"""``--executor ray``: each run a Ray task, on any GPU or machine of a cluster (README, "Running on several GPUs or
machines"). ``driver`` is this process's side, ``worker`` what runs in the tasks, ``transfer`` what crosses between
them (the dataset's source, run folders as archives). Ray is imported only when a function needs it."""
