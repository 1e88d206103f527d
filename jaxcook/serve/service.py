"""What each Tinker call does, over the local engine: the server without HTTP.

Training calls go to the model's `LocalTrainingClient`, whose single worker thread runs them in
submission order; each call returns a request id at once (`FutureStore`), and the result is
encoded on the worker thread when it is ready. Input is checked before it reaches the engine,
and anything wrong becomes the request's error result (category "user") naming the field.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from jaxcook.core.losses import LOSSES
from jaxcook.engine import checkpoint as ckpt
from jaxcook.engine.train_step import init_train_state
from jaxcook.serve import wire
from jaxcook.serve.base import SharedBase
from jaxcook.serve.coalesce import CoalescingSampler
from jaxcook.serve.errors import NotFound, UserError
from jaxcook.serve.futures import FutureStore, Payload, then
from jaxcook.serve.registry import Model, Registry, Sampler
from jaxcook.serve.store import StateDir, TinkerPath, check_name
from jaxcook.types import AdamParams

log = logging.getLogger("jaxcook.serve")

# Tinker's loss names the engine implements (`dpo` is jaxcook's own; the SDK never sends it).
TINKER_LOSSES = tuple(
    name for name in ("cross_entropy", "importance_sampling", "ppo", "cispo", "dro") if name in LOSSES
)
_ADAM_KEYS = ("learning_rate", "beta1", "beta2", "eps", "weight_decay", "grad_clip_norm")


class TinkerService:
    def __init__(self, base: SharedBase, state_dir: str | Path, *, aliases: tuple[str, ...] = ()):
        self.base = base
        self.store = StateDir(state_dir)
        self.registry = Registry()
        self.futures = FutureStore()
        # The SDK and the cookbook load the tokenizer client-side by name: a local folder works
        # offline, so get_info names this one, and a client may use it as the model name too.
        self.tokenizer_dir = self.store.root / "tokenizer"
        if base.tokenizer is not None:
            base.tokenizer.save_pretrained(str(self.tokenizer_dir))
        self.names = {base.name, str(self.tokenizer_dir), *aliases}
        self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxcook-serve-build")

    # -- helpers ------------------------------------------------------------------------------

    def check_base_model(self, name, where: str) -> None:
        if name is not None and name not in self.names:
            raise UserError(
                f"{where}: base_model {name!r} is not served here; this server serves {sorted(self.names)}"
            )

    def _submit(self, model: Model, seq_id, make_future, encode) -> dict:
        """Run `make_future(client)` for `model` in submission order; a retry of a `seq_id` gets
        the first request's id back."""
        with model.lock:
            if seq_id and seq_id in model.requests:
                return {"request_id": model.requests[seq_id], "model_id": model.model_id}
            try:
                request_id = self.futures.add(make_future(model.client), encode)
            except Exception as e:  # noqa: BLE001 - bad input becomes the request's error result
                request_id = self.futures.failed(e)
            if seq_id:
                model.requests[seq_id] = request_id
        return {"request_id": request_id, "model_id": model.model_id}

    def _failed(self, exc: BaseException) -> dict:
        return {"request_id": self.futures.failed(exc)}

    # -- models -------------------------------------------------------------------------------

    def _new_model(self, model_id, session_id, lora, user_metadata, load=None) -> Model:
        """Register a model and build its training client in the background (then `load`)."""

        def build():
            client = self.base.training_client(lora)
            if load is not None:
                folder, weights_only = load
                client.load_state(folder, weights_only=weights_only).result()
            self.store.create_run(model_id, base_model=self.base.name, lora=lora, user_metadata=user_metadata)
            return client

        model = Model(model_id, session_id, lora, Future(), user_metadata)
        existing = self.registry.add_model(model)
        if existing is not model:
            return existing
        inner = self._builder.submit(build)

        def done(f: Future) -> None:
            if f.exception() is not None:
                model.ready.set_exception(f.exception())
            else:
                model.ready.set_result(f.result())

        inner.add_done_callback(done)
        return model

    def create_model(self, body: dict) -> dict:
        where = "create_model"
        try:
            session_id = wire.field(body, "session_id", str, where=where)
            seq = wire.field(body, "model_seq_id", int, where=where)
            self.check_base_model(wire.field(body, "base_model", str, where=where), where)
            self._check_optimizer(body.get("optimizer_config"), where)
            lc = wire.field(body, "lora_config", dict, where=where, default={})
            lora = self.base.lora_config(
                rank=wire.field(lc, "rank", int, where=where + ".lora_config", default=32),
                seed=wire.field(lc, "seed", int, where=where + ".lora_config", default=None),
                train_attn=bool(lc.get("train_attn", True)),
                train_mlp=bool(lc.get("train_mlp", True)),
                train_unembed=bool(lc.get("train_unembed", True)),
            )
            if not 1 <= lora.rank <= self.base.cfg.max_lora_rank:
                raise UserError(f"{where}: lora_config.rank must be in [1, {self.base.cfg.max_lora_rank}]")
        except (UserError, ValueError) as e:
            return self._failed(e)
        self.registry.session(session_id)
        model_id = f"{session_id}:train:{seq}"
        model = self._new_model(model_id, session_id, lora, body.get("user_metadata"))
        if model.create_request is None:
            model.create_request = self.futures.add(
                model.ready, lambda _: {"model_id": model_id, "type": "create_model"}
            )
        return {"request_id": model.create_request, "model_id": model_id}

    @staticmethod
    def _check_optimizer(config, where: str) -> None:
        if config is not None and (not isinstance(config, dict) or config.get("type", "adamw") != "adamw"):
            raise UserError(f"{where}: optimizer_config {config!r} is not supported (only adamw)")

    def get_info(self, body: dict) -> dict:
        model = self.registry.model(wire.field(body, "model_id", str, where="get_info"))
        return {
            "type": "get_info",
            "model_id": model.model_id,
            "model_data": {
                "arch": self.base.config.model_type,
                "model_name": self.base.name,
                "tokenizer_id": str(self.tokenizer_dir),
            },
            "is_lora": True,
            "lora_rank": model.lora.rank,
            "model_name": self.base.name,
            "optimizer_config": {"type": "adamw"},
        }

    # -- training -----------------------------------------------------------------------------

    def _check_data(self, call: wire.ForwardBackwardCall) -> None:
        if not call.data:
            raise UserError("forward_backward: data is empty")
        if call.loss_fn not in TINKER_LOSSES:
            raise UserError(
                f"forward_backward: loss_fn {call.loss_fn!r} is not supported; valid: {list(TINKER_LOSSES)}"
            )
        C, V = self.base.context_window, self.base.config.vocab_size
        for i, d in enumerate(call.data):
            if d.length > C:
                raise UserError(
                    f"data[{i}].model_input has {d.length} tokens; the model's context window is {C}"
                )
            tokens = np.asarray(d.model_input.to_ints())
            if tokens.size and (tokens.min() < 0 or tokens.max() >= V):
                raise UserError(f"data[{i}].model_input: token ids must be in [0, {V})")
            target = d.loss_fn_inputs.get("target_tokens")
            if target is not None and target.size and (target.min() < 0 or target.max() >= V):
                raise UserError(f"data[{i}].loss_fn_inputs['target_tokens']: token ids must be in [0, {V})")

    def forward_backward(self, body: bytes) -> dict:
        try:
            call = wire.decode_forward_backward(body)
            model = self.registry.model(call.model_id)
            self._check_data(call)
        except UserError as e:
            return self._failed(e)

        def start(client):
            run = client.forward if call.forward_only else client.forward_backward
            return run(call.data, call.loss_fn, call.loss_fn_config)

        encode = lambda out: Payload(
            proto=wire.encode_forward_backward_output(out.loss_fn_outputs, out.metrics)
        )
        return self._submit(model, call.seq_id, start, encode)

    def optim_step(self, body: dict) -> dict:
        where = "optim_step"
        try:
            model = self.registry.model(wire.field(body, "model_id", str, where=where))
            if "adam_params" not in body:
                raise UserError(f"{where}: adam_params is missing (only AdamW is supported)")
            adam = wire.field(body, "adam_params", dict, where=where)
            values = {
                k: float(wire.field(adam, k, (int, float), where=where + ".adam_params"))
                for k in _ADAM_KEYS
                if k in adam
            }
            params = AdamParams(**values)
        except UserError as e:
            return self._failed(e)
        encode = lambda metrics: {"metrics": metrics, "type": "optim_step"}
        return self._submit(model, body.get("seq_id"), lambda c: c.optim_step(params), encode)

    # -- weights ------------------------------------------------------------------------------

    def save_weights(self, body: dict) -> dict:
        where = "save_weights"
        try:
            model = self.registry.model(wire.field(body, "model_id", str, where=where))
            path = TinkerPath(
                model.model_id, "weights", check_name(wire.field(body, "path", str, where=where), where)
            )
        except UserError as e:
            return self._failed(e)
        return self._save(model, path, body, with_optimizer=True, kind="save_weights")

    def _save(self, model: Model, path: TinkerPath, body: dict, *, with_optimizer: bool, kind: str) -> dict:
        folder = self.store.folder(path)
        if folder.exists() and not body.get("overwrite", True):
            return self._failed(UserError(f"{kind}: {path} exists (pass overwrite=True)"))

        def finish(_):
            self.store.record(path, user_metadata=body.get("user_metadata"))
            self.store.touch(model.model_id)
            return {"path": str(path), "type": kind}

        start = lambda c: then(c.save_state(folder, with_optimizer=with_optimizer), finish)
        return self._submit(model, body.get("seq_id"), start, lambda r: r)

    def save_weights_for_sampler(self, body: dict) -> dict:
        where = "save_weights_for_sampler"
        try:
            model = self.registry.model(wire.field(body, "model_id", str, where=where))
            name = wire.field(body, "path", str, where=where, default=None)
            seq = wire.field(body, "sampling_session_seq_id", int, where=where, default=None)
            if name is None and seq is None:
                raise UserError(f"{where}: give a path (a name) or a sampling_session_seq_id")
            if name is not None:
                path = TinkerPath(model.model_id, "sampler_weights", check_name(name, where))
        except UserError as e:
            return self._failed(e)
        if name is not None:
            return self._save(model, path, body, with_optimizer=False, kind=where)
        sampler_id = f"{model.session_id}:sample:{seq}"

        def ephemeral(params):  # no disk write: a sampler of the snapshot, registered under an id
            client = self.base.sampler(model.lora, model.client.graphdef, params)
            self._add_sampler(Sampler(sampler_id, self.base.name, None, client))
            return {"sampling_session_id": sampler_id, "type": where}

        return self._submit(
            model, body.get("seq_id"), lambda c: then(c.snapshot_params(), ephemeral), lambda r: r
        )

    def _checkpoint(self, path_str, where: str):
        """(TinkerPath, folder, LoRA config of its run) of an existing checkpoint."""
        path = TinkerPath.parse(path_str, where)
        folder = self.store.existing(path)
        return path, folder, self.store.lora_of(path.model_id)

    def load_weights(self, body: dict) -> dict:
        where = "load_weights"
        try:
            path, folder, lora = self._checkpoint(wire.field(body, "path", str, where=where), where + ".path")
            weights_only = not body.get("optimizer", False)
            model_id = body.get("model_id")
            if model_id is None:  # create-via-load: a new model named by the session and its counter
                session_id = wire.field(body, "session_id", str, where=where)
                seq = wire.field(body, "model_seq_id", int, where=where)
                self.check_base_model(body.get("base_model"), where)
                self._check_optimizer(body.get("optimizer_config"), where)
            else:
                model = self.registry.model(model_id)
                if model.lora != lora:
                    raise UserError(
                        f"{where}: {path} was trained with LoRA rank {lora.rank} "
                        f"(attn={lora.train_attn}, mlp={lora.train_mlp}, unembed={lora.train_unembed}); "
                        f"model {model_id} has rank {model.lora.rank}"
                    )
        except UserError as e:
            return self._failed(e)
        if model_id is not None:
            result = {"path": str(path), "type": where}
            start = lambda c: c.load_state(folder, weights_only=weights_only)
            return self._submit(model, body.get("seq_id"), start, lambda _: result)
        self.registry.session(session_id)
        new_id = f"{session_id}:train:{seq}"
        user_metadata = body.get("user_metadata") or self.store.run(path.model_id).get("user_metadata")
        model = self._new_model(new_id, session_id, lora, user_metadata, load=(folder, weights_only))
        if model.create_request is None:
            model.create_request = self.futures.add(
                model.ready, lambda _: {"model_id": new_id, "path": str(path), "type": where}
            )
        return {"request_id": model.create_request, "model_id": new_id}

    # -- sampling -----------------------------------------------------------------------------

    def _add_sampler(self, sampler: Sampler) -> None:
        # Requests that queue up on a busy sampler decode together (one group per cookbook
        # asample: a whole RL batch becomes one or two decode calls); jaxcook.serve.coalesce.
        sampler.client = CoalescingSampler(
            sampler.client, max_rows=self.base.cfg.max_num_samples, window_s=0.02
        )
        for old in self.registry.add_sampler(sampler):
            old.client.close()

    def _sampler_from_path(self, path_str: str, where: str):
        path, folder, lora = self._checkpoint(path_str, where)
        graphdef, trainable = self.base.trainable_template(lora)
        state, _ = ckpt.restore(folder, init_train_state(trainable), weights_only=True)
        return self.base.sampler(lora, graphdef, state.params)

    def create_sampling_session(self, body: dict) -> dict:
        where = "create_sampling_session"
        session_id = wire.field(body, "session_id", str, where=where)
        seq = wire.field(body, "sampling_session_seq_id", int, where=where)
        model_path = wire.field(body, "model_path", str, where=where, default=None)
        base_model = wire.field(body, "base_model", str, where=where, default=None)
        self.check_base_model(base_model, where)
        if model_path is None and base_model is None:
            raise UserError(f"{where}: give a base_model or a model_path")
        self.registry.session(session_id)
        sampler_id = f"{session_id}:sample:{seq}"
        client = (
            self._sampler_from_path(model_path, where + ".model_path") if model_path else self.base.sampler()
        )
        self._add_sampler(Sampler(sampler_id, self.base.name, model_path, client))
        return {"sampling_session_id": sampler_id, "type": where}

    def get_sampler(self, sampler_id: str) -> dict:
        s = self.registry.sampler(sampler_id)
        out = {"sampler_id": s.sampler_id, "base_model": s.base_model}
        if s.model_path:
            out["model_path"] = s.model_path
        return out

    def asample(self, body: dict) -> dict:
        where = "asample"
        try:
            sampler = self._sampler_of(body, where)
            n = wire.field(body, "num_samples", int, where=where, default=1)
            if not 1 <= n <= self.base.cfg.max_num_samples:
                raise UserError(
                    f"{where}: num_samples must be in [1, {self.base.cfg.max_num_samples}], got {n}"
                )
            prompt = wire.model_input_from_json(body.get("prompt"), where + ".prompt")
            params = wire.sampling_params_from_json(body.get("sampling_params", {}))
            for key in ("topk_prompt_logprobs", "topk_sample_logprobs", "prompt_alt_tokens_k"):
                if body.get(key):
                    raise UserError(f"{where}: {key} is not supported by this server (got {body[key]})")
            for key in ("target_prompt_logprobs", "prompt_logprobs_last_n"):
                if body.get(key) is not None:
                    raise UserError(f"{where}: {key} is not supported by this server")
            future = sampler.client.sample(prompt, n, params, bool(body.get("prompt_logprobs", False)))
        except (UserError, ValueError) as e:
            return {**self._failed(e), "sample_sequence_ids": []}
        request_id = self.futures.add(future, lambda r: Payload(proto=wire.encode_sample_response(r)))
        seq = body.get("seq_id", 0)
        ids = [f"{sampler.sampler_id}:{seq}:{i}:{request_id[:8]}" for i in range(n)]
        return {"request_id": request_id, "sample_sequence_ids": ids}

    def _sampler_of(self, body: dict, where: str) -> Sampler:
        sid = body.get("sampling_session_id")
        if sid is not None:
            return self.registry.sampler(sid)
        path, base_model = body.get("model_path"), body.get("base_model")
        if path is None and base_model is None:
            raise UserError(f"{where}: sampling_session_id is missing")
        self.check_base_model(base_model, where)
        key = f"direct:{path or base_model}"
        try:
            return self.registry.sampler(key)
        except NotFound:
            client = self._sampler_from_path(path, where + ".model_path") if path else self.base.sampler()
            sampler = Sampler(key, self.base.name, path, client)
            self._add_sampler(sampler)
            return sampler

    # -- sessions -----------------------------------------------------------------------------

    def finish(self, session_id: str, body: dict) -> None:
        session = self.registry.session(session_id)
        reason = body.get("reason") if isinstance(body.get("reason"), dict) else {}
        session.finished = str(reason.get("type", "success"))
        models, samplers = self.registry.release_session(session_id)

        def close():  # after whatever the session still had queued
            for s in samplers:
                s.client.close()
            for m in models:
                if m.ready.done() and m.ready.exception() is None:
                    m.ready.result().close()

        self._builder.submit(close)

    def weights_info(self, body: dict) -> dict:
        where = "weights_info"
        path = TinkerPath.parse(wire.field(body, "tinker_path", str, where=where), where + ".tinker_path")
        return self.store.weights_info(path)

    def close(self) -> None:
        self._builder.shutdown(wait=True)
