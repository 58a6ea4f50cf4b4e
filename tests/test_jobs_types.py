"""The job-type registry names its bodies and hooks as strings: each must name a function that exists;
and the RQ payload check tells our JSON from the pickles of earlier versions."""

from __future__ import annotations

import json
import pickle
import zlib

import pytest

from backend.jobs.executors import is_pickled
from backend.jobs.types import JOB_TYPES, load


@pytest.mark.parametrize("name", sorted(JOB_TYPES))
def test_every_function_a_job_type_names_exists(name):
    job_type = JOB_TYPES[name]
    hooks = [job_type.body, job_type.rq_body, job_type.summary, job_type.rq_poll, job_type.request,
             *job_type.follow_ups]
    for dotted in filter(None, hooks):
        assert callable(load(dotted)), dotted


def test_pickled_rq_payloads_are_told_from_json_ones():
    call = ("backend.active_learning.queue.run_rq_job", None, ["p3-x"], {})
    assert is_pickled(zlib.compress(pickle.dumps(call)))
    assert is_pickled(pickle.dumps(call))  # RQ reads uncompressed payloads too
    assert not is_pickled(zlib.compress(json.dumps(call).encode()))
