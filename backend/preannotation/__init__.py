"""Pre-annotation jobs: brush predictions stored in Label Studio ahead of the annotator, for the
rectangles and keypoints imported with (or drawn on) a project's tasks. See ``job.py``."""
