"""The REST API: FastAPI app, pydantic schemas at the edge, one router per resource."""
