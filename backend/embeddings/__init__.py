"""SAM embeddings: the cache SAM asks (``cache``: in process, in front of the shared store), the
shared store (``disk_store``, ``redis_store``, ``codec``) and the work that fills it
before anyone clicks (``ahead`` triggers, ``scheduler`` / ``rq_queue`` run, ``embed_one`` does one
image, ``preemption`` keeps it out of requests' way)."""
