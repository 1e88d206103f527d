"""A Tinker-compatible HTTP server over the local engine: the real `tinker` SDK (0.38) and
tinker-cookbook run against it unchanged.

    python -m jaxcook.serve --model smollm2-135m-instruct --port 8000
    # then: tinker.ServiceClient(base_url="http://127.0.0.1:8000", api_key="tml-dummy")

Modules: `tinker.proto` + `proto` (the wire schema), `wire` (bodies <-> jaxcook types),
`base` (the shared base model, multi-LoRA), `registry` (sessions, models, samplers), `futures`
(request ids, long polling), `store` (the state dir), `service` (what each call does), `app`
(HTTP routes), `server` (uvicorn), `__main__` (CLI).
"""
