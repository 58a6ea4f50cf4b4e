"""Active learning: Label Studio webhook events -> debounced training jobs -> per-project model
versions, published atomically and served by every worker. Entry points: ``retraining.Retraining``
(the webhook sink and the dispatcher's hook), ``training_job`` (the job type's body),
``serving.ProjectModels`` (per-project segmenters). Jobs themselves run on ``backend.jobs``."""
