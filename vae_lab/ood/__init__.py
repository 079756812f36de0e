"""Out-of-distribution scores of a trained model, and how well they separate in- from out-of-distribution data."""
