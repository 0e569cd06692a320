"""Carbon and price: the grid intensity of a place, factors over time, and the pricing of energy slices."""
