"""The app channel of `natrium run`: an HTTP app on the bus, without a sidecar's extra hop."""
