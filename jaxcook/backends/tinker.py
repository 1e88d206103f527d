"""The Tinker backend: jaxcook's ports on any Tinker-API service, through the public `tinker` SDK.

    TINKER_API_KEY=tml-... python scripts/train.py --recipe sft backend=tinker \\
        backend.base_url=http://127.0.0.1:8000       # `jaxcook serve`; omit it for the Tinker service

The key comes from the environment (`TINKER_API_KEY`, or the SDK's other sources); any `tml-`
key works against `jaxcook serve`. How the port maps onto the SDK:

- Training calls go to an SDK `TrainingClient` in call order (one submission thread; the SDK
  numbers the requests and the service runs them in that order), so `forward_backward` then
  `optim_step` still pipeline. Losses the Tinker API defines (`NATIVE_LOSSES`) are sent as they
  are; any other jaxcook loss (`dpo`) and `forward_backward_custom` take the two-pass way of
  `tinker_custom` (a forward, the gradient with respect to the log-probs here, a weighted
  `cross_entropy` forward_backward).
- `save_state(name)` saves a Tinker checkpoint named after the last part of `name` (workflows
  pass `<log_dir>/checkpoints/<step>`) and resolves to its `tinker://` path, which
  `checkpoints.jsonl` records, so a rerun resumes from it. Tinker checkpoints always hold the
  optimizer (`with_optimizer=False` is honoured when loading). `user_metadata` travels
  JSON-encoded in one string entry (`META_KEY`: Tinker's metadata values are strings).
- `load_state(path)` makes a new SDK training client from the checkpoint
  (`create_training_client_from_state[_with_optimizer]`; the SDK's in-place `load_state` is
  deprecated) and swaps it in: the calls after it train the loaded run.
- The tokenizer is jaxcook's (`jaxcook.models.load_tokenizer` of the base model's name, or of
  `backend.tokenizer`), not the SDK's `get_tokenizer`, which asks the Hugging Face hub: the
  registry names, local folders and GGUF files jaxcook loads need no network.
- LoRA only (Tinker has no full fine-tuning); the LoRA alpha is the service's (Tinker: 32; set
  `jaxcook serve --lora-alpha`); `forward_topk` is not available.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import numpy as np

from jaxcook.backends import BackendError
from jaxcook.backends import tinker_wire as wire
from jaxcook.backends.tinker_custom import LogprobGradient, builtin_loss
from jaxcook.backends.tinker_sampling import TinkerSamplingClient, then
from jaxcook.core import losses as losses_lib
from jaxcook.ports import ModelInfo, SavedPath
from jaxcook.types import AdamParams, Datum, ForwardBackwardOutput

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://tinker.thinkingmachines.dev/services/tinker-prod"  # the SDK's default
NATIVE_LOSSES = frozenset({"cross_entropy", "importance_sampling", "ppo", "cispo", "dro"})
META_KEY = "jaxcook_meta"
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.:=+-]")  # what a Tinker checkpoint name may hold


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def check_reachable(base_url: str, timeout: float) -> None:
    """A TCP connection to the service, so an unreachable URL fails in seconds with one line (the
    SDK retries a failed connection for minutes)."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BackendError(f"backend.base_url {base_url!r} is not an http(s):// URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as e:
        raise BackendError(f"backend.base_url {base_url}: cannot connect ({one_line(e)})") from None


def checkpoint_name(name) -> str:
    """A Tinker checkpoint name for the port's `name` (a path's last part; odd characters -> _)."""
    base = _NAME_CHARS.sub("_", PurePosixPath(str(name)).name) or "state"
    return base if re.match(r"[A-Za-z0-9_]", base) else "_" + base


def _concurrent(future) -> Future:
    """An SDK `APIFuture` (or a plain future) as a `concurrent.futures.Future`."""
    return future if isinstance(future, Future) else future.future()


def _resolved(value) -> Future:
    done: Future = Future()
    done.set_result(value)
    return done


class TinkerService:
    """`jaxcook.ports.ServiceClient` on a Tinker-API service at `base_url` (None:
    `$TINKER_BASE_URL`, else the Tinker service). `tokenizer`: a name or folder to load the
    tokenizer from (None: the base model's name). `max_length` / `batch_size` size the buckets of
    custom-loss gradients; the other shape hints of the local backend do not apply here."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        tokenizer: str | None = None,
        max_length: int = 4096,
        batch_size: int = 64,
        connect_timeout: float = 10.0,
        **_local_hints,
    ):
        import tinker

        self.base_url = (base_url or os.environ.get("TINKER_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.tokenizer_name, self.max_length, self.batch_size = tokenizer, max_length, batch_size
        check_reachable(self.base_url, connect_timeout)
        try:
            self.sdk = tinker.ServiceClient(base_url=self.base_url)
            # a missing or malformed key, or a URL that serves no Tinker API, fails here
            self.rest = tinker.RestClient(base_url=self.base_url)
            capabilities = self.rest.get_server_capabilities().result()
        except tinker.TinkerError as e:
            raise BackendError(f"backend.base_url {self.base_url}: {one_line(e)}") from None
        self.context_windows = {
            m.model_name: m.max_context_length for m in capabilities.supported_models if m.max_context_length
        }
        self._tokenizers: dict[str, object] = {}
        self._lock = threading.Lock()

    def result(self, call, what: str):
        """`call().result()`, a Tinker error as a one-line `BackendError` naming `what`."""
        import tinker

        try:
            return call().result()
        except tinker.TinkerError as e:
            raise BackendError(f"{self.base_url}: {what}: {one_line(e)}") from None

    def create_lora_training_client(
        self,
        base_model: str,
        rank: int = 32,
        *,
        seed: int = 0,
        train_mlp: bool = True,
        train_attn: bool = True,
        train_unembed: bool = True,
        alpha: float | None = None,
    ) -> TinkerTrainingClient:
        if alpha is not None:
            log.warning("backend=tinker: lora.alpha=%s is not sent; the service's alpha applies", alpha)
        call = lambda: self.sdk.create_lora_training_client(
            base_model=base_model,
            rank=rank,
            seed=seed,
            train_mlp=train_mlp,
            train_attn=train_attn,
            train_unembed=train_unembed,
        )
        return TinkerTrainingClient(self, self.result(call, f"create a LoRA client of {base_model!r}"))

    def create_full_training_client(self, base_model: str):
        raise BackendError(
            "backend=tinker trains LoRA adapters only (Tinker has no full fine-tuning): set model.lora"
        )

    def create_training_client_from_state(self, path: str) -> TinkerTrainingClient:
        """The checkpoint's run, its weights, a fresh optimizer."""
        return TinkerTrainingClient(
            self, self.result(lambda: self.sdk.create_training_client_from_state(path), path)
        )

    def create_training_client_from_state_with_optimizer(self, path: str) -> TinkerTrainingClient:
        call = lambda: self.sdk.create_training_client_from_state_with_optimizer(path)
        return TinkerTrainingClient(self, self.result(call, path))

    def create_sampling_client(self, model_path: str | None = None, base_model: str | None = None):
        """A sampling client of saved weights (`model_path`, a `tinker://` path) or of a base model."""
        if (model_path is None) == (base_model is None):
            raise ValueError("create_sampling_client: give exactly one of model_path and base_model")
        call = lambda: self.sdk.create_sampling_client(model_path=model_path, base_model=base_model)
        sdk_client = self.result(call, f"sampling client of {model_path or base_model}")
        name = sdk_client.get_base_model() or base_model
        return TinkerSamplingClient(sdk_client, lambda: self.get_tokenizer(name))

    def get_tokenizer(self, base_model: str):
        from jaxcook.models import load_tokenizer

        name = self.tokenizer_name or base_model
        with self._lock:
            if name not in self._tokenizers:
                self._tokenizers[name] = load_tokenizer(name)
            return self._tokenizers[name]

    def context_window(self, base_model: str) -> int:
        """The service's context length for `base_model` (its capabilities), else `max_length`."""
        return int(self.context_windows.get(base_model) or self.max_length)

    def saved_metadata(self, path: str) -> dict:
        """The `user_metadata` a checkpoint was saved with through this backend ({} if none)."""
        from tinker import types

        try:
            run_id = types.ParsedCheckpointTinkerPath.from_tinker_path(path).training_run_id
            for c in self.rest.list_checkpoints(run_id).result().checkpoints:
                if c.tinker_path == path and c.user_metadata and META_KEY in c.user_metadata:
                    return json.loads(c.user_metadata[META_KEY])
        except Exception as e:  # noqa: BLE001 - the metadata is optional; the load itself is not
            log.warning("no user_metadata for %s (%s)", path, one_line(e))
        return {}

    def close(self) -> None:
        """Finish the SDK session (its training and sampling clients stop working)."""
        try:
            self.sdk.close("success").result(timeout=30)
        except Exception as e:  # noqa: BLE001 - the service may be gone already
            log.warning("closing the Tinker session failed: %s", one_line(e))


class TinkerTrainingClient:
    """`jaxcook.ports.TrainingClient` over an SDK `TrainingClient` (see the module docstring)."""

    def __init__(self, service: TinkerService, sdk_client):
        self.service = service
        self.sdk = sdk_client
        self.base_model = sdk_client.get_info().model_data.model_name
        self._queue = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxcook-tinker")
        self._lock = threading.Lock()
        self._gradient = LogprobGradient(max_length=service.max_length, batch_size=service.batch_size)

    @property
    def model_id(self) -> str:
        return self.sdk.model_id

    def _ordered(self, start, convert=lambda r: r) -> Future:
        """Run `start()` (it submits SDK calls and returns a future) on the submission thread, in
        call order; the port's future resolves to `convert(result)`, a Tinker error as a
        one-line `BackendError`."""
        import tinker

        out: Future = Future()

        def fail(e: BaseException) -> None:
            if isinstance(e, tinker.TinkerError):
                e = BackendError(f"{self.service.base_url}: {one_line(e)}")
            out.set_exception(e)

        def done(f: Future) -> None:
            try:
                out.set_result(convert(f.result()))
            except BaseException as e:  # noqa: BLE001 - handed to the caller through the future
                fail(e)

        def submit() -> None:
            try:
                _concurrent(start()).add_done_callback(done)
            except BaseException as e:  # noqa: BLE001
                fail(e)

        with self._lock:
            self._queue.submit(submit)
        return out

    # -- training ---------------------------------------------------------------------------

    def _run(self, data: list[Datum], loss_fn: str, loss_fn_config: dict | None, backward: bool) -> Future:
        if not data:
            raise ValueError("empty list of datums")
        config = losses_lib.check_loss_config(loss_fn, loss_fn_config)
        losses_lib.check_loss_inputs(loss_fn, data[0].loss_fn_inputs.keys())
        if loss_fn not in NATIVE_LOSSES:
            return self._custom(data, builtin_loss(loss_fn, loss_fn_config), backward)
        sdk_data = [wire.datum(d) for d in data]
        sdk_config = {k: v for k, v in config.items() if k in (loss_fn_config or {})} or None

        def start():
            run = self.sdk.forward_backward if backward else self.sdk.forward
            return run(sdk_data, loss_fn, sdk_config)

        return self._ordered(start, wire.forward_backward_output)

    def forward_backward(
        self, data: list[Datum], loss_fn: str = "cross_entropy", loss_fn_config: dict | None = None
    ) -> Future:
        return self._run(data, loss_fn, loss_fn_config, backward=True)

    def forward(
        self, data: list[Datum], loss_fn: str = "cross_entropy", loss_fn_config: dict | None = None
    ) -> Future:
        return self._run(data, loss_fn, loss_fn_config, backward=False)

    def forward_backward_custom(self, data: list[Datum], fn) -> Future:
        """`fn(logp_BT, batch) -> (loss, metrics)`, any JAX function of the targets' log-probs.

        Two passes (`jaxcook.backends.tinker_custom`): a forward for the log-probs, then a
        `cross_entropy` forward_backward with weights = -dL/dlogp (computed here with `jax.grad`),
        whose gradient is the custom loss's. Metrics: the custom loss as `loss:sum`, its own
        metrics, and the surrogate's `surrogate_loss:sum`.
        """
        if not data:
            raise ValueError("empty list of datums")
        return self._custom(data, fn, backward=True)

    def _custom(self, data: list[Datum], fn, backward: bool) -> Future:
        for i, d in enumerate(data):
            if "target_tokens" not in d.loss_fn_inputs:
                raise ValueError(f"data[{i}]: a custom loss needs loss_fn_inputs['target_tokens']")
        probes = [_ce_datum(d, np.zeros(d.length, np.float32)) for d in data]

        def start():
            fwd = self.sdk.forward(probes, "cross_entropy").result()
            logprobs = [np.asarray(o["logprobs"].to_numpy(), np.float32) for o in fwd.loss_fn_outputs]
            loss, metrics, grads = self._gradient(fn, data, logprobs)
            outputs = [{"logprobs": lp} for lp in logprobs]
            metrics = {**metrics, "loss:sum": loss}
            if not backward:
                return _resolved(ForwardBackwardOutput(outputs, metrics))
            back = self.sdk.forward_backward(
                [_ce_datum(d, -g) for d, g in zip(data, grads, strict=True)], "cross_entropy"
            )
            surrogate = lambda out: {"surrogate_loss:sum": float(out.metrics.get("loss:sum", np.nan))}
            return then(
                _concurrent(back), lambda out: ForwardBackwardOutput(outputs, {**metrics, **surrogate(out)})
            )

        return self._ordered(start)

    def forward_topk(self, data: list[Datum], k: int) -> Future:
        raise NotImplementedError(
            "forward_topk (top-K distillation) is not available on backend=tinker; use backend=local"
        )

    def optim_step(self, adam: AdamParams) -> Future:
        params = wire.adam_params(adam)
        return self._ordered(
            lambda: self.sdk.optim_step(params), lambda r: {k: float(v) for k, v in (r.metrics or {}).items()}
        )

    # -- state ------------------------------------------------------------------------------

    def save_state(
        self, name: str, *, with_optimizer: bool = True, user_metadata: dict | None = None
    ) -> Future:
        """A Tinker checkpoint (weights + optimizer) named after `name`'s last part; resolves to
        its `SavedPath` (`tinker://<run>/weights/<name>`)."""
        ckpt, meta = checkpoint_name(name), _encode_meta(user_metadata)
        start = lambda: self.sdk.save_state(ckpt, overwrite=True, user_metadata=meta)
        return self._ordered(start, lambda r: SavedPath(r.path))

    def load_state(self, path: str, *, weights_only: bool = False) -> Future:
        """From now on, train a new run made from the checkpoint at `path` (with its optimizer
        state unless `weights_only`); resolves to the checkpoint's `user_metadata`."""
        service = self.service

        def start():
            make = (
                service.sdk.create_training_client_from_state
                if weights_only
                else service.sdk.create_training_client_from_state_with_optimizer
            )
            self.sdk = make(str(path)).result()  # later calls wait for it: they go to the new run
            return _resolved(service.saved_metadata(str(path)))

        return self._ordered(start)

    def load_state_with_optimizer(self, path: str) -> Future:
        return self.load_state(path)

    def save_weights_for_sampler(self, name: str, *, user_metadata: dict | None = None) -> Future:
        ckpt, meta = checkpoint_name(name), _encode_meta(user_metadata)
        start = lambda: self.sdk.save_weights_for_sampler(ckpt, user_metadata=meta)
        return self._ordered(start, lambda r: SavedPath(r.path))

    def save_weights_and_get_sampling_client(self, name: str | None = None) -> TinkerSamplingClient:
        """A sampling client of the weights after every call submitted so far (`name`: also
        saved under it, and the client reads that checkpoint)."""
        if name is not None:
            path = self.save_weights_for_sampler(name).result().path
            return self.service.create_sampling_client(model_path=path)
        sdk_client = self._ordered(lambda: self.sdk.save_weights_and_get_sampling_client()).result()
        return TinkerSamplingClient(sdk_client, self.get_tokenizer)

    def get_info(self) -> ModelInfo:
        info = self.sdk.get_info()
        return ModelInfo(
            model_name=self.base_model,
            is_lora=bool(info.is_lora) if info.is_lora is not None else True,
            lora_rank=info.lora_rank,
            context_window=self.service.context_window(self.base_model),
        )

    def get_tokenizer(self):
        return self.service.get_tokenizer(self.base_model)

    def close(self) -> None:
        """Wait for every submitted call; the run stays on the service (its checkpoints too)."""
        self._queue.shutdown(wait=True)


def _ce_datum(d: Datum, weights: np.ndarray):
    """`d`'s input and targets with cross-entropy `weights`, as an SDK datum."""
    return wire.datum(
        Datum(d.model_input, {"target_tokens": d.loss_fn_inputs["target_tokens"], "weights": weights})
    )


def _encode_meta(user_metadata: dict | None) -> dict[str, str] | None:
    return {META_KEY: json.dumps(user_metadata, default=str)} if user_metadata else None
