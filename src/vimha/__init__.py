"""vimha: high availability for the control plane of an NFV cloud."""

__version__ = "0.1.0"
