"""``digitdet serve``: the reader behind an HTTP endpoint, with a page to try it (FastAPI + uvicorn)."""
