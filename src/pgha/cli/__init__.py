"""The pgha command line."""
