"""Time shifting: plan when a job computes so that it runs while the grid is clean, and carry the plan out."""
