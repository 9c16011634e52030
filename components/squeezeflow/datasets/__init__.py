"""Dataset converters that write the project's ``squeezeflow.npz/v1`` format."""
