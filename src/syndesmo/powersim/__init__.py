"""Power by simulation: plan, replicates, executors (in-process, processes, Dask)."""
