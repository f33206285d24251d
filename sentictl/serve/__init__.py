"""`sentictl serve`: the HTTP door (Starlette on uvicorn, OpenAPI from pydantic models) with a micro-batcher before the engine.

settings   ServeSettings: what the command line says
app        the state the routes share (Service): body limits, admission, classification; the demo's /sentiment
tei        text-embeddings-inference's routes: /predict (POST /, /invocations), /tokenize, /decode, /info
routes     create_app: Starlette routes that serve, the FastAPI app that documents them (OpenAPI)
models     request/response bodies (pydantic): they validate and generate /openapi.json
responses  result shapes and every error as {"error", "error_type"[, "reason"]} (TEI's error types)
batcher    request coalescing on top of the Engine (inference batches, shared cache lookups)
publisher  the --publish Kafka fan-out
metrics    Prometheus metrics and the middleware that counts every response
connections  what a client can hold: header/body timeouts, the connection cap, descriptor headroom
run        serve(): uvicorn until SIGTERM/SIGINT

Requests in progress are bounded (--max-concurrent-requests: 429 beyond it, never for a lone
request), so are the texts of one request (--max-client-batch-size: 413) and connections (the
oldest idle one closed for a newcomer, 503 when all are busy), and the model loads in the
background, so the port opens at once and ``/health`` answers 503 until the model is ready.
"""

from .publisher import check_topic_template
from .routes import create_app
from .run import serve
from .settings import ServeSettings

__all__ = ["ServeSettings", "check_topic_template", "create_app", "serve"]
