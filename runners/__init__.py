"""Runner presets: each module only builds pipeline arguments for one runner."""
