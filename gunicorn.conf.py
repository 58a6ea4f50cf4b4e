"""gunicorn settings for ``gunicorn backend.wsgi:app`` (read automatically from the working
directory). Environment: PORT (9090), WORKERS (1), THREADS (32), GUNICORN_TIMEOUT (seconds, 300),
PRELOAD (see below)."""

import os
from pathlib import Path

bind = f"0.0.0.0:{os.environ.get('PORT', '9090')}"
workers = int(os.environ.get("WORKERS", "1"))
# A request for a new image waits for its SAM encoding (seconds; one at a time per process) and holds
# its thread meanwhile, idle. gthread hands connections to threads in arrival order, so /health
# (Label Studio gives it 1 s, before every batch predict) answers at once only while a thread is
# free: threads must outnumber the annotators opening new images at once. Idle threads are cheap.
threads = int(os.environ.get("THREADS", "32"))
worker_class = "gthread"
# Label Studio waits up to 100 s for /predict (ML_TIMEOUT_PREDICT); a batch may take that long.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "300"))
graceful_timeout = 30
accesslog = None  # the app logs one line per request, with timing

# Preloading builds the app (and loads the models) once in the master, and workers share the
# memory. A CUDA context does not survive fork, so on a GPU each worker loads its own models:
# preload defaults to on only when the device is the CPU. PRELOAD=true/false overrides.
_device = os.environ.get("DEVICE", "auto").lower()
_gpu = _device.startswith("cuda") or (_device == "auto" and Path("/dev/nvidiactl").exists())
_preload = os.environ.get("PRELOAD", "").strip().lower()
preload_app = _preload in ("1", "true", "yes", "on") if _preload else not _gpu

if preload_app:
    # A worker forked after torch ran a multi-threaded (OpenMP) op in the master hangs on its first
    # parallel op, and building SAM's modules runs such ops. So the master loads the models on one
    # torch thread, and each worker gets its threads back right after the fork.
    import torch

    _torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def post_fork(server, worker):
        torch.set_num_threads(_torch_threads)


def post_worker_init(worker):
    """Start the job dispatcher in each worker (after the fork: threads do not survive one); the
    workers elect one dispatcher per MODEL_DIR among themselves (backend.jobs.dispatcher)."""
    dispatcher = worker.wsgi.extensions.get("dispatcher")
    if dispatcher is not None:
        dispatcher.start()
