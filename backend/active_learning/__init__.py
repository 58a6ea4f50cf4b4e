"""Active learning: Label Studio webhook events -> debounced training jobs -> per-project model
versions, published atomically and served by every worker. Entry points: ``service.ActiveLearning``
(the app's event sink and dispatcher), ``serving.ProjectModels`` (per-project segmenters),
``routes.jobs_blueprint`` (GET /jobs), ``worker`` (``python -m backend worker``)."""
