"""Lightning callbacks (rank zero only where they write): image grids, latent plots, Hub sync."""
