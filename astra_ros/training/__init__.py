"""Training: recipes, the loop (single process or torchrun/DDP), resumable states."""
