"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

STREAM_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
# Request bodies: numbers must be JSON numbers (no true for 1, no "7"), finite, and integers bounded,
# so every value the API accepts fits the types it is stored as.
STRICT = ConfigDict(strict=True, allow_inf_nan=False)
I32_MAX, I64_MAX = 2**31 - 1, 2**63 - 1


class FrameIn(BaseModel):
    model_config = STRICT
    data: list[float] = Field(description="the frame, flattened: exactly input_dim finite numbers")
    label: int | None = Field(None, ge=-I32_MAX - 1, le=I32_MAX, description="class in [0, num_classes), or null (or -1) when unknown")
    seq: int | None = Field(None, ge=0, le=I64_MAX, description="the client's sequence number, increasing within the stream: "
                            "a frame whose seq is not above the last one learned is a resend, skipped once "
                            "(counted as a duplicate); send it to retry safely after an ambiguous failure")


class FramesIn(BaseModel):
    model_config = STRICT
    frames: list[FrameIn] = Field(min_length=1)


class FramesAccepted(BaseModel):
    accepted: int
    entry: str = Field(description="the Redis Stream entry id that holds the request's frames, in order")


class PredictIn(BaseModel):
    model_config = STRICT
    frames: list[list[float]] = Field(min_length=1)
    stream_id: str | None = Field(None, pattern=STREAM_ID_PATTERN,
                                  description="use this stream's recurrent context (it is not changed)")
    method: Literal["softmax", "goodness"] = Field(
        "softmax", description="softmax: the linear readout on one pass (fast; the classifier the prequential "
        "accuracy measures); goodness: the paper's classifier, each label clamped on top in turn and the "
        "goodness averaged over iterations 3-5 (about 10 x 5 passes per frame)")


class Prediction(BaseModel):
    label: int = Field(description="the most probable label (softmax) or the one of highest goodness (goodness)")
    probabilities: list[float] = Field(description="the softmax readout's probabilities, for either method")
    goodness: list[float] | None = Field(None, description="goodness per label (method goodness only)")


class PredictOut(BaseModel):
    model_version: int
    method: Literal["softmax", "goodness"] = Field(description="the classifier that chose the labels")
    predictions: list[Prediction]


class StreamOut(BaseModel):
    stream_id: str
    frames_received: int
    frames_applied: int
    duplicates: int = Field(description="frames skipped because their seq was already applied")
    lag: int
    rolling_accuracy: float | None
    last_seq: int | None = Field(None, description="the highest seq accepted on this stream (null: none yet); "
                                 "a client without its own record continues from it")


class SleepStatus(BaseModel):
    alive: bool = Field(description="the sleep worker's heartbeat is fresh")
    paused: bool
    cycles: int
    negatives_generated: int
    last_cycle_time: float | None


class ModelOut(BaseModel):
    version: int | None
    frames_seen: int
    frames_received: int = Field(0, description="frames accepted (202) over all streams")
    frames_applied: int = Field(0, description="frames the wake worker has learned from")
    frames_duplicate: int = Field(0, description="frames skipped: their client seq was already applied")
    lag: int = Field(0, description="frames accepted, not yet applied")
    positive_steps: int = Field(0, description="accumulated positive gradients applied, each one optimizer step")
    negatives_applied: int
    negatives_missed: int = Field(0, description="positive steps taken without the previous step's negatives "
                                                 "(sleep paused, down or too slow)")
    negatives_rejected_stale: int
    negatives_rejected_invalid: int = 0
    negatives_rejected_exploding: int = 0
    fast_corrections: int = Field(0, description="labeled frames learned at once (learn=fast)")
    rollbacks: int = Field(0, description="times non-finite weights were replaced by the last snapshot")
    checkpoint_error: str | None = Field(None, description="why checkpoints fail (null while they work)")
    frames_unacked: int = Field(0, description="while checkpoints fail: applied frames waiting to be acknowledged")
    config: dict | None
    device: str | None
    sleep: SleepStatus


class ErrorOut(BaseModel):
    detail: str | list[dict] = Field(description="what was wrong: a sentence, or pydantic's list of field errors")


_MEANING = {400: "the body could not be decoded", 401: "an API key is required", 403: "the API key is not valid",
            404: "not found", 413: "too large (body bytes or frames per request)",
            415: "unsupported content type", 422: "decoded, but invalid (shape, values, labels, fields)",
            429: "a limit was reached (streams, or a stream's frames per second)",
            503: "not available now (Redis down, no snapshot yet, or the learner too far behind): retry"}


def errors(*codes: int) -> dict:
    """OpenAPI ``responses`` for these error statuses, all with an ErrorOut body."""
    return {code: {"model": ErrorOut, "description": _MEANING[code]} for code in codes}


class HealthOut(BaseModel):
    status: str
    problems: list[str] = Field(default_factory=list)


class Ack(BaseModel):
    ok: bool = True
    detail: str
