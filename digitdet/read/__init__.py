"""Photos in -> detections -> numbers: the one place where a number is read."""
