"""Board-side runner, job scheduling, and result parsing."""
