"""Locust users for ffstream: cameras posting labeled frames (binary and JSON bodies) and clients
asking for predictions. Loopback only.

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 --headless -u 8 -r 8 -t 30s

Each camera is its own stream and posts at a camera's pace (a stream's frames are learned one
step at a time, so an unpaced client outruns any learner). Environment:
FFS_LOAD_FRAMES_PER_REQUEST (default 10) and FFS_LOAD_CAMERA_FPS (default 25 frames/s per
camera). One viewer asks for predictions throughout.
"""

from __future__ import annotations

import itertools
import os
import random

from locust import HttpUser, between, constant_pacing, task

from service.codec import encode_frames
from service.demo import synthetic_video

FRAMES_PER_REQUEST = int(os.environ.get("FFS_LOAD_FRAMES_PER_REQUEST", "10"))
CAMERA_FPS = float(os.environ.get("FFS_LOAD_CAMERA_FPS", "25"))
VIDEO_X, VIDEO_Y = synthetic_video(2000, seed=7)
_ids = itertools.count()


class Camera(HttpUser):
    """Posts consecutive chunks of a labeled synthetic video to its own stream, at CAMERA_FPS."""

    wait_time = constant_pacing(FRAMES_PER_REQUEST / CAMERA_FPS)

    def on_start(self):
        self.stream = f"load-{next(_ids)}"
        self.position = random.randrange(0, len(VIDEO_X) - FRAMES_PER_REQUEST)

    def _chunk(self, n: int):
        if self.position + n > len(VIDEO_X):
            self.position = 0
        x, y = VIDEO_X[self.position : self.position + n], VIDEO_Y[self.position : self.position + n]
        self.position += n
        return x, y

    @task(3)
    def ingest_binary(self):
        x, y = self._chunk(FRAMES_PER_REQUEST)
        self.client.post(f"/v1/streams/{self.stream}/frames", data=encode_frames(x, y.tolist()),
                         headers={"content-type": "application/x-ffs-frames"}, name="ingest binary")

    @task(1)
    def ingest_json(self):
        x, y = self._chunk(FRAMES_PER_REQUEST)
        frames = [{"data": f.tolist(), "label": int(label)} for f, label in zip(x, y)]
        self.client.post(f"/v1/streams/{self.stream}/frames", json={"frames": frames}, name="ingest json")


class Viewer(HttpUser):
    """Asks for predictions of single frames, without and with a stream's context."""

    fixed_count = 1
    wait_time = between(0.05, 0.1)

    @task(3)
    def predict(self):
        i = random.randrange(len(VIDEO_X))
        self.client.post("/v1/predict", json={"frames": [VIDEO_X[i].tolist()]}, name="predict")

    @task(1)
    def predict_in_context(self):
        i = random.randrange(len(VIDEO_X))
        with self.client.post("/v1/predict", json={"frames": [VIDEO_X[i].tolist()], "stream_id": "load-0"},
                              name="predict in context", catch_response=True) as r:
            if r.status_code == 404:  # the stream has no state yet: not a server failure
                r.success()
