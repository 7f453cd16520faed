"""vti-failover: sub-second failover for BGP over route-based IPsec on Linux."""

__version__ = "0.1.0"
