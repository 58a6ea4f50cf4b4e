"""SAM embeddings ahead of the annotator: the shared store (``disk_store``, ``redis_store``,
``codec``; the cache in front is ``backend.segmenters.embedding_cache``) and the work that fills it
before anyone clicks (``ahead`` triggers, ``scheduler`` / ``rq_queue`` run, ``embed_one`` does one
image, ``preemption`` keeps it out of requests' way)."""
