"""The project's front door: the method registry and the Python API (``pssnet_dcff.api``)."""
