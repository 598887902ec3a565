"""The tenant's calibration pool: stored, read and removed per tenant, asked by next-comparison."""
