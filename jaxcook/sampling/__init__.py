"""Sampling: the jitted prefill + decode loop, the local `SamplingClient`, and completers.

sc = training_client.save_weights_and_get_sampling_client()   # through the port
sc = LocalSamplingClient.from_training_client(training_client)  # the same, locally
resp = sc.sample(prompt, num_samples=8, sampling_params=SamplingParams(max_tokens=256)).result()
policy = LocalTokenCompleter(sc, max_tokens=256)          # for RL rollouts (batches calls)
"""

from jaxcook.sampling.client import LocalSamplingClient
from jaxcook.sampling.completers import LocalMessageCompleter, LocalTokenCompleter
from jaxcook.sampling.decode import DecodeInputs, DecodeOutputs, DecodeSpec, decode
from jaxcook.sampling.plan import SamplerBuckets
from jaxcook.sampling.stops import StopSpec, resolve_stop

__all__ = [
    "DecodeInputs",
    "DecodeOutputs",
    "DecodeSpec",
    "LocalMessageCompleter",
    "LocalSamplingClient",
    "LocalTokenCompleter",
    "SamplerBuckets",
    "StopSpec",
    "decode",
    "resolve_stop",
]
