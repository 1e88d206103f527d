"""Who is being served: sessions, training models and sampling sessions, by id.

Ids follow Tinker: a session is a uuid; its models are `{session}:train:{n}` (the SDK derives
that id itself on create-via-load) and its samplers `{session}:sample:{n}`. A model is
registered as soon as it is requested; `Model.ready` resolves once its training client exists,
and requests for it queue behind that.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field

from jaxcook.lora import LoraConfig
from jaxcook.serve.errors import NotFound


@dataclass
class Session:
    session_id: str
    tags: list = field(default_factory=list)
    user_metadata: dict = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    last_heartbeat: float = field(default_factory=time.time)
    finished: str | None = None  # the finish reason
    sampler_joins: int = 0


@dataclass
class Model:
    model_id: str
    session_id: str
    lora: LoraConfig
    ready: Future  # -> LocalTrainingClient
    user_metadata: dict | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # submission order = seq order
    requests: dict = field(default_factory=dict)  # seq_id -> request_id (retries get the same one)
    create_request: str | None = None

    @property
    def client(self):
        """The training client (waits for the model to be built; raises if building failed)."""
        return self.ready.result()


@dataclass
class Sampler:
    sampler_id: str
    base_model: str
    model_path: str | None
    client: object  # CoalescingSampler over a LocalSamplingClient


class Registry:
    def __init__(self, *, max_samplers: int = 64):
        self._lock = threading.Lock()
        self.sessions: dict[str, Session] = {}
        self.models: dict[str, Model] = {}
        self.samplers: OrderedDict[str, Sampler] = OrderedDict()
        self.max_samplers = max_samplers

    def new_session(self, **kwargs) -> Session:
        session = Session(uuid.uuid4().hex, **kwargs)
        with self._lock:
            self.sessions[session.session_id] = session
        return session

    def session(self, session_id: str) -> Session:
        """The session; one this process has not seen (e.g. before a restart) is adopted."""
        with self._lock:
            if session_id not in self.sessions:
                self.sessions[session_id] = Session(session_id)
            return self.sessions[session_id]

    def add_model(self, model: Model) -> Model:
        """Register `model`, or return the one already registered under its id (a retry)."""
        with self._lock:
            return self.models.setdefault(model.model_id, model)

    def model(self, model_id) -> Model:
        with self._lock:
            model = self.models.get(model_id)
        if model is None:
            raise NotFound(f"model_id {model_id!r} is not a model of this server (create it first)")
        return model

    def add_sampler(self, sampler: Sampler) -> list[Sampler]:
        """Register `sampler`; returns the least recently created samplers evicted to stay within
        `max_samplers` (the caller closes them)."""
        with self._lock:
            self.samplers[sampler.sampler_id] = sampler
            evicted = []
            while len(self.samplers) > self.max_samplers:
                evicted.append(self.samplers.popitem(last=False)[1])
            return evicted

    def sampler(self, sampler_id) -> Sampler:
        with self._lock:
            sampler = self.samplers.get(sampler_id)
        if sampler is None:
            raise NotFound(f"sampling_session_id {sampler_id!r} is unknown (create a sampling session first)")
        return sampler

    def release_session(self, session_id: str) -> tuple[list[Model], list[Sampler]]:
        """Forget a finished session's models and samplers; returns them (the caller closes them)."""
        prefix = session_id + ":"
        with self._lock:
            models = [self.models.pop(k) for k in list(self.models) if k.startswith(prefix)]
            samplers = [self.samplers.pop(k) for k in list(self.samplers) if k.startswith(prefix)]
        return models, samplers
