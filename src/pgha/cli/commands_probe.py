"""`pgha probe`: placeholder until the probe lands."""
