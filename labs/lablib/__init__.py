"""The dual-vti lab runner: topology, namespace lab, VM re-exec, demo."""
