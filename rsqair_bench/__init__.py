"""rsqair-bench: relational generalization in object-centric generative video models."""

__version__ = "0.1.0"
