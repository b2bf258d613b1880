"""Lago: the usage event sink (single and batch) and the customer portal, over Lago's HTTP API."""
