"""Every picture: boxes drawn on photos, run figures, dataset statistics."""
