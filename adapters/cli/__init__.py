"""The `natrium` command line."""
