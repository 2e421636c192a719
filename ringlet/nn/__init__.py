"""Private inference of torch models: torch.fx compiler, per-ReLU configuration, secure execution."""
