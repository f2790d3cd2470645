"""fastml's REST layer: FastAPI app, auth and routes on top of the ML library."""
