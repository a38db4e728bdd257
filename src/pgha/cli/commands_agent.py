"""`pgha agent`, `pgha validate`: placeholder until the agent lands."""
