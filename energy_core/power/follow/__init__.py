"""Grid following: the cap in force follows the grid's intensity (or the price) within the run's slowdown."""
