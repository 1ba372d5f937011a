"""ffm-private: privacy-preserving federated foundation models for recommendation."""

__version__ = "0.1.0"
