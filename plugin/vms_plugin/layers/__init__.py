"""Building blocks shared by every architecture: each model file imports these and differs only where it must."""
